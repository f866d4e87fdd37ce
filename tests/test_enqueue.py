"""Warm starts (a spec's `enqueue:`, `sweep enqueue`) and a run that ends early (`stop:`, an exhausted
grid), end to end through `sweep run` on SQLite."""

from __future__ import annotations

import sqlite3

from optuna.trial import TrialState
from sweep_helpers import (
    assert_one_error_line,
    invoke,
    run_cli,
    spec_dict,
    storage_url,
    trials,
    write_spec,
)

WARM = {"model.model_type": "gru", "model.hidden_size": 16, "train.learning_rate": 0.05}


def test_spec_warm_starts_run_first_and_once(tmp_path):
    (tmp_path / "r.yaml").write_text("model: {model_type: rnn, hidden_size: 9}\ntrain: {num_threads: 1}\n")
    path = write_spec(tmp_path, n_trials=3, enqueue=[WARM, "r.yaml"])
    result = run_cli(tmp_path, path)
    assert result.exit_code == 0, result.output
    assert "2 warm start(s) queued from enqueue:" in result.output
    first = sorted(trials(storage_url(tmp_path), "tiny"), key=lambda t: t.number)
    assert first[0].params == WARM
    assert {k: first[1].params[k] for k in ("model.model_type", "model.hidden_size")} == {
        "model.model_type": "rnn",
        "model.hidden_size": 9,
    }
    resumed = run_cli(tmp_path, path, "--trials", 5)  # a resumed study does not queue them again
    assert resumed.exit_code == 0, resumed.output
    assert "warm start" not in resumed.output
    again = trials(storage_url(tmp_path), "tiny")
    assert len(again) == 5 and sum(t.params == WARM for t in again) == 1


def test_sweep_enqueue_queues_once_and_the_next_run_takes_it(tmp_path):
    path = write_spec(tmp_path, n_trials=1)
    assert run_cli(tmp_path, path).exit_code == 0
    url = storage_url(tmp_path)
    args = ["model.model_type=gru", "model.hidden_size=12", "--storage", url]
    queued = invoke("enqueue", "tiny", *args)
    assert queued.exit_code == 0, queued.output
    assert "queued in 'tiny': model.model_type=gru model.hidden_size=12" in queued.output
    waiting = [t for t in trials(url, "tiny") if t.state == TrialState.WAITING]
    assert len(waiting) == 1
    twice = invoke("enqueue", "tiny", *args)
    assert twice.exit_code == 0 and "nothing queued" in twice.output
    assert run_cli(tmp_path, path, "--trials", 2).exit_code == 0
    ran = next(t for t in trials(url, "tiny") if t.number == waiting[0].number)
    assert ran.state == TrialState.COMPLETE
    assert (ran.params["model.model_type"], ran.params["model.hidden_size"]) == ("gru", 12)


def test_sweep_enqueue_refuses_values_outside_the_space(tmp_path):
    path = write_spec(tmp_path, n_trials=1)
    assert run_cli(tmp_path, path).exit_code == 0
    url = storage_url(tmp_path)
    before = (tmp_path / "s.db").read_bytes()
    cases = {
        "model.hidden_size=64": "model.hidden_size: 64 is outside the searched range: an integer in 8..16",
        "model.model_type=lstm": "model.model_type: 'lstm' is not one of the searched choices ['rnn', 'gru']",
        "train.n_epochs=5": "train.n_epochs: not searched by this study (fixed at 2)",
        "model.hidden=12": "model.hidden",
        "hidden_size": "write overrides as key=value",
    }
    for value, message in cases.items():
        line = assert_one_error_line(invoke("enqueue", "tiny", value, "--storage", url))
        assert message in line, line
    assert_one_error_line(invoke("enqueue", "nope", "model.hidden_size=9", "--storage", url))
    assert (tmp_path / "s.db").read_bytes() == before  # nothing queued, nothing changed


def test_a_study_that_stops_improving_ends_early_and_says_so(tmp_path):
    path = write_spec(tmp_path, n_trials=40, stop={"patience": 3, "min_delta": 0.5})  # no gain can exceed 0.5
    result = run_cli(tmp_path, path)
    assert result.exit_code == 0, result.output
    assert "ended early: stopped improving: no gain in val_exact_match above 0.5 over the last 3" in result.output
    assert "the last gain came from trial 0" in result.output
    assert len(trials(storage_url(tmp_path), "tiny")) == 4  # the first trial, then 3 without a gain
    again = run_cli(tmp_path, path)
    assert again.exit_code == 0 and "nothing to run (raise stop.patience" in again.output
    assert len(trials(storage_url(tmp_path), "tiny")) == 4


def test_an_exhausted_grid_ends_the_run_and_says_so(tmp_path):
    space = {"model.model_type": {"choices": ["rnn", "gru"]}, "model.hidden_size": {"choices": [8, 16]}}
    path = write_spec(tmp_path, n_trials=10, sampler={"type": "bruteforce", "seed": 1}, space=space)
    result = run_cli(tmp_path, path)
    assert result.exit_code == 0, result.output
    assert "ended early: the bruteforce sampler has tried all 4 combinations of the space" in result.output
    done = trials(storage_url(tmp_path), "tiny")
    assert len(done) == 4 and len({tuple(t.params.values()) for t in done}) == 4
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)


def test_check_shows_warm_starts_and_the_stop_rule(tmp_path):
    path = write_spec(tmp_path, spec=spec_dict(enqueue=[WARM], stop={"patience": 7}, tensorboard="tb"))
    result = invoke("check", path)
    assert result.exit_code == 0, result.output
    assert "stop: no new trial after 7 finished trials in a row without a gain above 0" in result.output
    assert "warm start: model.model_type=gru model.hidden_size=16 train.learning_rate=0.05" in result.output
    assert "TensorBoard: a run per trial under tb/tiny/" in result.output
