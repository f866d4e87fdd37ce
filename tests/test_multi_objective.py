"""A study with several objectives, end to end: run, best (the Pareto set), seed reruns on two
workers, the report in headless Chromium, and optuna-dashboard's API."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from browser import chromium, get_json, served_dashboard
from optuna.trial import TrialState
from sweep_helpers import invoke, run_cli, spec_dict, storage_url, write_spec
from test_report import assert_clean, render

from sweep.store.records import StudyMeta, TrialRecord, read_reruns

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

N_EPOCHS = 6
SPEC = spec_dict(
    name="multi",
    n_trials=6,
    objectives=[{"metric": "val_exact_match"}, {"metric": "n_parameters"}, "seconds_to_target"],
    constraints={"n_parameters": {"max": 3000}},
    target=0.05,
    fixed={**spec_dict()["fixed"], "train.n_epochs": N_EPOCHS},
    sampler={"type": "random", "seed": 3},
    pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
    space={
        "model.model_type": {"choices": ["rnn", "gru"]},
        "model.hidden_size": {"low": 8, "high": 24},
        "train.learning_rate": {"low": 0.02, "high": 0.1, "log": True},
    },
)


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi")
    path = write_spec(folder, spec=SPEC)
    url = storage_url(folder)
    result = run_cli(folder, path, "--threads", 1)
    assert result.exit_code == 0, result.output
    # A hopeless trial last (learning rate far too small): the median rule on its curve stops it.
    loaded = optuna.load_study(study_name="multi", storage=url)
    loaded.enqueue_trial({"model.model_type": "gru", "model.hidden_size": 8, "train.learning_rate": 0.02})
    return folder, path, url


def _study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="multi", storage=url)


def test_a_multi_objective_study_has_optunas_directions_names_and_constraints(multi):
    _, _, url = multi
    study = _study(url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_exact_match", "n_parameters", "seconds_to_target"]
    meta = StudyMeta.read(study)
    assert meta.objectives[1] == {"metric": "n_parameters", "direction": "minimize"} and meta.target == 0.05
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        record = TrialRecord.read(trial)
        assert trial.values[0] == record.val_exact_match and trial.values[1] == record.n_parameters
        assert trial.values[2] == (record.seconds_to_target if record.seconds_to_target is not None else math.inf)
        assert trial.constraints == {"n_parameters <= 3000": pytest.approx(record.n_parameters - 3000)}
        assert len(record.val_curve) == N_EPOCHS and not trial.intermediate_values


def test_the_median_rule_on_the_curve_stops_hopeless_trials_early(multi):
    folder, path, url = multi
    result = run_cli(folder, path, "--threads", 1, "--trials", 7)
    assert result.exit_code == 0, result.output
    pruned = [t for t in _study(url).trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state, TrialRecord.read(t).val_curve) for t in _study(url).trials]
    saved = sum(N_EPOCHS - TrialRecord.read(t).epochs_run for t in pruned)
    assert saved > 0 and all(len(TrialRecord.read(t).val_curve) < N_EPOCHS for t in pruned)


def test_best_prints_the_pareto_set(multi):
    _, _, url = multi
    study = _study(url)
    result = invoke("best", "multi", "--storage", url, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [row["trial"] for row in summary["pareto"]] == sorted(t.number for t in study.best_trials)
    assert all(row["n_parameters"] <= 3000 for row in summary["pareto"])  # infeasible trials are not in the set
    assert set(summary["pareto"][0]["values"]) == {"val_exact_match", "n_parameters", "seconds_to_target"}
    text = invoke("best", "multi", "--storage", url)
    assert text.exit_code == 0 and "Pareto set of 'multi'" in text.stdout


@pytest.mark.processes
def test_seed_reruns_run_on_two_workers_are_stored_and_not_repeated(multi):
    _, _, url = multi
    result = invoke("rerun", "multi", "--top", 1, "--seeds", "0,1", "--workers", 2, "--storage", url)
    assert result.exit_code == 0, (result.output, result.exception)
    reruns = read_reruns(_study(url))
    trials = {r.trial for r in reruns}
    assert len(reruns) == 2 * len(trials) and {r.seed for r in reruns} == {0, 1}
    again = invoke("rerun", "multi", "--top", 1, "--seeds", "0,1", "--storage", url)
    assert again.exit_code == 0 and "0 to train" in again.stdout
    assert read_reruns(_study(url)) == reruns


def test_best_reads_the_stored_reruns(multi):
    _, _, url = multi
    reruns = {r.trial for r in read_reruns(_study(url))}
    summary = json.loads(invoke("best", "multi", "--storage", url, "--json").stdout)
    for row in summary["pareto"]:
        if row["trial"] in reruns:
            assert row["over_seeds"]["seeds"] == [0, 1] and 0 <= row["over_seeds"]["val_exact_match_mean"] <= 1
        else:
            assert row["over_seeds"] is None
    assert "over 2 seeds" in invoke("best", "multi", "--storage", url).stdout or not reruns & {
        row["trial"] for row in summary["pareto"]
    }


@pytest.mark.processes
def test_the_report_renders_the_cost_and_seed_figures(multi):
    folder, _, url = multi
    out = folder / "multi.html"
    result = invoke("report", "multi", "--storage", url, "--out", out)
    assert result.exit_code == 0, (result.output, result.exception)
    with chromium() as browser:
        rendered = render(browser, out)
    assert_clean(rendered)
    titles = [p["title"] for p in rendered.plots]
    assert "Validation error rate against parameters" in titles
    assert "Validation error rate over seeds" in titles
    assert "Seed spread" in rendered.headings and "Cost" in rendered.headings
    assert "No seed reruns" not in rendered.intros["Seed spread"]


@pytest.mark.processes
def test_the_dashboard_serves_the_multi_objective_study(multi):
    folder, _, url = multi
    with served_dashboard(folder, url) as base:
        summaries = get_json(f"{base}/api/studies")["study_summaries"]
        multi_summary = next(s for s in summaries if s["study_name"] == "multi")
        assert multi_summary["directions"] == ["maximize", "minimize", "minimize"]
        detail = get_json(f"{base}/api/studies/{multi_summary['study_id']}")
        assert detail["objective_names"] == ["val_exact_match", "n_parameters", "seconds_to_target"]
        assert {t["number"] for t in detail["best_trials"]} == {t.number for t in _study(url).best_trials}


@pytest.mark.parametrize("sampler", [{"type": "gp", "seed": 1, "n_startup_trials": 2}, {"type": "nsgaiii", "seed": 1}])
def test_gp_and_nsgaiii_search_several_objectives_under_constraints(tmp_path, sampler):
    spec = {**SPEC, "name": "multi-sampler", "n_trials": 3, "sampler": sampler, "pruner": {"type": "none"}}
    spec["fixed"] = {**SPEC["fixed"], "train.n_epochs": 2}
    result = run_cli(tmp_path, write_spec(tmp_path, spec=spec), "--threads", 1)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="multi-sampler", storage=storage_url(tmp_path))
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(done) == 3 and all(len(t.values) == 3 for t in done)
    for trial in done:  # the constraint reached the sampler through set_constraint
        (violation,) = trial.constraints.values()
        assert (violation <= 0) == (trial.user_attrs["n_parameters"] <= 3000)
