"""Population-based training: the moves (digitsum.pbt), the copy inside one computation
(digitsum.train.Exploit) and a pbt study end to end (sweep.run.pbt)."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest
import torch
from sweep_helpers import assert_spec_mistake, invoke, read_only, run_cli, spec_dict, storage_url, write_spec

from digitsum import config as cfg
from digitsum.members import seed_members
from digitsum.pbt import Range, exploit, explore
from digitsum.train import Exploit, _Run

# ---------------------------------------------------------------------------------------------
# The moves


def test_the_bottom_quantile_copies_a_member_of_the_top_one():
    scores = [0.9, 0.1, 0.5, 0.7, 0.2, 0.8, 0.3, 0.6]
    copies = exploit(scores, 0.25, random.Random(0))
    assert sorted(copies) == [1, 4]  # the two worst of eight
    assert set(copies.values()) <= {0, 5}  # each copies one of the two best
    assert exploit([0.5, 0.1], 0.25, random.Random(0)) == {1: 0}  # at least one moves, at most half
    diverged = math.nan  # a member whose training loss went NaN: last, below a score of 0
    assert list(exploit([0.0, diverged, 0.9, 0.5], 0.25, random.Random(0))) == [1]


def test_explore_stays_inside_the_space_and_is_seeded():
    ranges = {"train.learning_rate": Range(1e-3, 1e-2, log=True), "train.grad_clip": Range(0.5, 2.0)}
    start = {"train.learning_rate": 9e-3, "train.grad_clip": 1.9}
    first = [explore(start, ranges, (0.8, 1.25), 0.25, random.Random(seed)) for seed in range(200)]
    again = [explore(start, ranges, (0.8, 1.25), 0.25, random.Random(seed)) for seed in range(200)]
    assert first == again
    for moved in first:
        assert 1e-3 <= moved["train.learning_rate"] <= 1e-2 and 0.5 <= moved["train.grad_clip"] <= 2.0
    rates = {m["train.learning_rate"] for m in first}
    assert 1e-2 in rates and 9e-3 * 0.8 in rates  # perturbed up (clipped to the range) and down
    assert any(r not in (1e-2, 9e-3 * 0.8) for r in rates)  # and drawn anew


# ---------------------------------------------------------------------------------------------
# The copy inside one stacked computation


def test_an_exploit_copies_weights_and_optimizer_state_and_retunes_the_target(tiny_config):
    members = seed_members(
        dataclasses.replace(tiny_config(), train=dataclasses.replace(tiny_config().train, n_seeds=3))
    )
    run = _Run.start(members, None, None)
    run.epoch(1)
    faster = cfg.apply(members[2].config, {"train.learning_rate": 0.05, "train.weight_decay": 0.01})
    run.exploit(Exploit(copies={2: 0}, configs={2: faster}))
    for weight in run.stacked.parameters():
        assert torch.equal(weight[2], weight[0]) and not torch.equal(weight[1], weight[0])
    for moment in (*run.optimizer.exp_avgs, *run.optimizer.exp_avg_sqs):
        assert torch.equal(moment[2], moment[0])
    assert run.optimizer.peaks[2] == 0.05 and run.optimizer.weight_decays[2] == 0.01
    assert run.members[2].config == faster and run.members[2].seed == members[2].seed  # its own rows and seed
    run.epoch(2)  # and it trains on


def test_a_diverged_member_stays_apart_and_an_exploit_brings_it_back(tiny_config):
    members = seed_members(
        dataclasses.replace(tiny_config(), train=dataclasses.replace(tiny_config().train, n_seeds=3))
    )
    run = _Run.start(members, None, None)
    run.epoch(1)
    with torch.no_grad():
        for weight in run.stacked.parameters():
            weight[1].fill_(math.nan)  # member 1 diverged
    results, _ = run.epoch(2)
    assert [math.isfinite(r.train_loss) for r in results] == [True, False, True]  # NaN stays in its slice
    for weight in run.stacked.parameters():
        assert torch.isfinite(weight[0]).all() and torch.isfinite(weight[2]).all()
    run.exploit(Exploit(copies={1: 2}, configs={}))
    results, _ = run.epoch(3)
    assert all(math.isfinite(r.train_loss) for r in results)


# ---------------------------------------------------------------------------------------------
# A pbt study


PBT_SPEC = spec_dict(
    name="population",
    n_trials=4,
    data={"lengths": [1, 2], "val_fraction": 0.2},
    fixed={
        "train.n_epochs": 6,
        "train.device": "cpu",
        "train.batch_size": 16,
        "model.model_type": "gru",
        "model.hidden_size": 16,
        "model.embedding_dim": 8,
        "train.lr_schedule": "constant",
    },  # fmt: skip
    sampler={"type": "random", "seed": 3},
    space={"train.learning_rate": {"low": 1e-3, "high": 5e-2, "log": True}, "train.grad_clip": {"low": 0.5, "high": 2}},
    pbt={"population": 4, "interval": 2, "seed": 1},
)


def test_a_pbt_study_trains_its_population_and_stores_each_members_schedule_and_lineage(tmp_path):
    result = run_cli(tmp_path, write_spec(tmp_path, spec=PBT_SPEC))
    assert result.exit_code == 0, result.output
    import optuna

    trials = optuna.load_study(study_name="population", storage=storage_url(tmp_path)).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert {len(t.intermediate_values) for t in trials} == {6}  # every member reported every epoch
    lineages = [entry for t in trials for entry in t.user_attrs.get("lineage", [])]
    assert sorted(e["epoch"] for e in lineages) == [2, 4]  # one exploit (the worst of 4) at each interval
    numbers = {t.number for t in trials}
    for trial in trials:
        schedule = trial.user_attrs["schedule"]
        assert schedule[0] == {"epoch": 0, "params": trial.params}  # the start: what the sampler suggested
        assert [s["epoch"] for s in schedule[1:]] == [e["epoch"] for e in trial.user_attrs.get("lineage", [])]
        assert all(e["from_trial"] in numbers - {trial.number} for e in trial.user_attrs.get("lineage", []))
        for entry in schedule:
            assert 1e-3 <= entry["params"]["train.learning_rate"] <= 5e-2
            assert 0.5 <= entry["params"]["train.grad_clip"] <= 2
    shown = json.loads(invoke("best", "population", "--storage", storage_url(tmp_path), "--json").stdout)
    best = next(t for t in trials if t.number == shown["trial"])
    assert shown["schedule"] == best.user_attrs["schedule"]
    assert shown["lineage"] == (best.user_attrs.get("lineage") or None)


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"space": {"model.num_layers": {"low": 1, "high": 2}}}, "space.model.num_layers", "changes the weights'"),
        ({"space": {"model.dropout": {"low": 0.0, "high": 0.2}}}, "space.model.dropout", "fixed when training starts"),
        ({"n_trials": 5}, "n_trials", "one trial per member; set n_trials: 4"),
        ({"pruner": {"type": "median"}}, "pruner", "set pruner: none"),
        ({"pbt": {"population": 4}}, "pbt.interval", "required"),
        ({"pbt": {"population": 4, "interval": 6}}, "pbt.interval", "fewer than train.n_epochs"),
        ({"space": {"train.learning_rate": {"choices": [0.01, 0.02]}}}, "space.train.learning_rate", "low and high"),
    ],
)
def test_what_pbt_cannot_do_is_one_line(tmp_path, changes, key, message):
    assert_spec_mistake(tmp_path, PBT_SPEC | changes, key, message)


def test_pbt_with_several_workers_is_refused(tmp_path):
    result = run_cli(tmp_path, write_spec(tmp_path, spec=PBT_SPEC), "--workers", 2)
    assert result.exit_code == 2 and "trains as one computation in one worker" in result.stderr


def test_a_pbt_study_reports_lists_and_exports(tmp_path):
    """The study is trials like any other's: `sweep ls`, `export` and the report read it; the report
    shows the population over time and the best member's schedule."""
    assert run_cli(tmp_path, write_spec(tmp_path, spec=PBT_SPEC)).exit_code == 0
    url = storage_url(tmp_path)
    listed = invoke("ls", "--storage", url)
    assert listed.exit_code == 0 and "population" in listed.stdout
    exported = invoke("export", "population", "--storage", url, "--out", tmp_path / "t.csv")
    assert exported.exit_code == 0 and "user_attrs_schedule" in (tmp_path / "t.csv").read_text().splitlines()[0]
    page = tmp_path / "r.html"
    reported = invoke("report", "population", "--storage", url, "--out", page)
    assert reported.exit_code == 0, reported.output
    text = page.read_text()
    assert "Population (pbt)" in text and "copied a better member" in text and "hyperparameters" in text


def _saved_epoch(db) -> int | None:
    """The epoch of the population state the study records, read straight from the SQLite file."""
    rows = read_only(db, "SELECT value_json FROM study_user_attributes WHERE key = 'pbt_state'")
    saved = json.loads(rows[0][0]) if rows else None
    return saved["epoch"] if saved else None


@pytest.mark.processes
def test_a_killed_population_resumes_from_its_last_interval(tmp_path):
    import time

    import optuna
    from sweep_helpers import kill_group, start_sweep, sweep_process

    slow = PBT_SPEC | {"data": {"lengths": "1-4", "val_fraction": 0.2}}
    slow["fixed"] = {**PBT_SPEC["fixed"], "train.n_epochs": 12, "train.batch_size": 8}
    slow["pbt"] = {"population": 4, "interval": 3, "seed": 1}
    write_spec(tmp_path, spec=slow)
    args = ("run", "spec.yaml", "--storage", storage_url(tmp_path), "--artifacts", tmp_path / "ckpt")
    first = start_sweep(tmp_path, *args)
    try:
        deadline = time.monotonic() + 120
        while (_saved_epoch(tmp_path / "s.db") or 0) < 3:  # the first interval's state is stored
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
    finally:
        kill_group(first)  # SIGKILL: the trials stay RUNNING until their heartbeats go stale
        first.wait(timeout=60)
    saved = _saved_epoch(tmp_path / "s.db")
    assert saved is not None and saved < 12
    resumed = sweep_process(tmp_path, *args, timeout=180)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming the pbt population of 'population' from epoch {saved}" in resumed.stdout
    trials = optuna.load_study(study_name="population", storage=storage_url(tmp_path)).trials
    killed = [t for t in trials if t.state.name == "FAIL"]
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(killed) == 4 and len(done) == 4
    for trial in done:
        assert trial.user_attrs["resumed_from"] == saved  # went on from the state, not from epoch 1
        assert sorted(trial.intermediate_values) == list(range(1, 13))  # its whole curve, before and after
        assert trial.user_attrs["epochs_run"] == 12
        assert trial.user_attrs["schedule"][0]["epoch"] == 0
    assert _saved_epoch(tmp_path / "s.db") is None  # a finished population keeps no state
    assert len(list((tmp_path / "ckpt").iterdir())) == 1  # the best member's checkpoint alone


def test_a_rerun_of_a_member_replays_its_schedule_and_says_whether_it_reproduces(tmp_path):
    import optuna

    assert run_cli(tmp_path, write_spec(tmp_path, spec=PBT_SPEC)).exit_code == 0
    url = storage_url(tmp_path)
    trials = optuna.load_study(study_name="population", storage=url).trials
    copied = next(t for t in trials if t.user_attrs.get("lineage"))
    never = next(t for t in trials if not t.user_attrs.get("lineage"))
    said = invoke("rerun", "population", copied.number, "--storage", url)
    assert said.exit_code == 0, said.output
    changes = len(copied.user_attrs["schedule"]) - 1
    epochs = ", ".join(str(e["epoch"]) for e in copied.user_attrs["lineage"])
    assert (
        f"pbt replay: its schedule ({changes} change(s)) from scratch, without the weights it copied at epochs {epochs}"
        in said.stdout
    )
    # a member that never copied trained in the population as it trains alone (the fused step, bit for bit)
    alone = invoke("rerun", "population", never.number, "--storage", url, "--json")
    assert json.loads(alone.stdout)["replay"] == {"changes": 0, "copied_at": [], "reproduces": True}
