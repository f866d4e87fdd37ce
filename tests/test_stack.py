"""sweep.run.stack: trials trained as one computation (`--stack K`), each what its own run gives."""

from __future__ import annotations

import json

import pytest
from optuna.trial import TrialState
from sweep_helpers import checkpoint_dir, invoke, load, run_cli, spec_dict, storage_url, trials, write_spec

from digitsum.config import Config, ModelConfig, TrainConfig
from sweep.run.stack import batch_plan

GRID = {  # four trials that differ only in what members may differ in: one stack
    "train.learning_rate": {"choices": [0.003, 0.03]},
    "train.weight_decay": {"choices": [0.0, 0.01]},
}


def stacked_spec(**changes) -> dict:
    fixed = {**spec_dict()["fixed"], "model.model_type": "gru", "model.hidden_size": 16, "train.n_epochs": 3}
    base = spec_dict(
        name="stacked", n_trials=4, fixed=fixed, space=GRID, sampler={"type": "grid", "seed": 1}
    )  # fmt: skip
    return {**base, **changes}


def by_params(url: str) -> dict[tuple, object]:
    return {tuple(sorted(t.params.items())): t for t in trials(url, "stacked")}


def test_the_batch_plan_is_what_members_share():
    config = Config(ModelConfig(model_type="gru", hidden_size=16), TrainConfig())
    other_rate = Config(config.model, TrainConfig(learning_rate=0.1, weight_decay=0.5, seed=3))
    assert batch_plan(config) == batch_plan(other_rate)
    assert batch_plan(config) != batch_plan(Config(ModelConfig(model_type="gru", hidden_size=8), TrainConfig()))
    assert batch_plan(config) != batch_plan(Config(config.model, TrainConfig(batch_size=32)))


def test_stacked_trials_are_each_what_its_own_run_gives(tmp_path):
    """The same four trials, one at a time and four at once: the same values, curves and records (the
    fused GRU step: bit for bit)."""
    spec = write_spec(tmp_path, spec=stacked_spec())
    alone, together = storage_url(tmp_path, "alone.db"), storage_url(tmp_path, "together.db")
    assert run_cli(tmp_path, spec, storage=alone).exit_code == 0
    result = run_cli(tmp_path, spec, "--stack", "4", storage=together)
    assert result.exit_code == 0, result.output
    assert "4 trials at once each" in result.output
    one, four = by_params(alone), by_params(together)
    assert sorted(one) == sorted(four) and len(four) == 4
    for params, trial in four.items():
        mine = one[params]
        assert trial.state == mine.state == TrialState.COMPLETE
        assert trial.value == mine.value
        assert trial.intermediate_values == mine.intermediate_values
        for key in ("val_exact_match", "val_by_length", "best_epoch", "n_parameters", "epochs_run"):
            assert trial.user_attrs[key] == mine.user_attrs[key], key
    best = json.loads(invoke("best", "stacked", "--storage", together, "--json").stdout)
    assert best["checkpoint_exists"] and best["value"] == max(t.value for t in four.values())


def test_trials_of_other_shapes_train_in_stacks_of_their_own(tmp_path):
    space = {**GRID, "model.hidden_size": {"choices": [8, 16]}}
    fixed = {k: v for k, v in stacked_spec()["fixed"].items() if k != "model.hidden_size"}
    spec = write_spec(tmp_path, spec=stacked_spec(space=space, fixed=fixed, n_trials=8))
    alone, together = storage_url(tmp_path, "alone.db"), storage_url(tmp_path, "together.db")
    assert run_cli(tmp_path, spec, storage=alone).exit_code == 0
    assert run_cli(tmp_path, spec, "--stack", "8", storage=together).exit_code == 0
    one, eight = by_params(alone), by_params(together)
    assert len(eight) == 8
    for params, trial in eight.items():
        assert trial.value == one[params].value and trial.intermediate_values == one[params].intermediate_values


def test_a_pruned_trial_leaves_the_stack_and_the_others_go_on(tmp_path):
    """A threshold pruner stops every trial below 100% at its first report: each is told as pruned with
    one epoch, never trained further."""
    pruner = {"type": "threshold", "lower": 1.0}
    result = run_cli(tmp_path, write_spec(tmp_path, spec=stacked_spec(pruner=pruner)), "--stack", "4")
    assert result.exit_code == 0, result.output
    done = trials(storage_url(tmp_path), "stacked")
    assert {t.state for t in done} == {TrialState.PRUNED}
    assert all(sorted(t.intermediate_values) == [1] and t.user_attrs["epochs_run"] == 1 for t in done)


def test_a_diverged_trial_is_pruned_alone_and_its_members_leave(tmp_path):
    """The stack's on_epoch: a trial whose loss is NaN ends as pruned (diverged), and only its members
    leave; the other trial hears its epoch and goes on."""
    import math
    import threading

    import optuna

    from digitsum.train import EpochResult
    from sweep.run.stack import _dispatch
    from sweep.run.trial import TrialRun, trial_context
    from sweep.spec import parse_spec

    spec = parse_spec(stacked_spec(fixed={**stacked_spec()["fixed"], "train.n_seeds": 2}))
    study = optuna.create_study(storage=storage_url(tmp_path), study_name="stacked", direction="maximize")
    context = trial_context(spec, checkpoint_dir(tmp_path), threading.Event())
    runs = [TrialRun(study.ask(), context) for _ in range(2)]
    ended = []
    on_epoch = _dispatch(runs, [0, 0, 1, 1], set(), ended.append)
    result = lambda member, loss: EpochResult(1, loss, 1.0, 0.5, 0.1, 0.003, 0.1, None, member)  # noqa: E731
    leaving = on_epoch([result(0, 0.7), result(1, 0.6), result(2, math.nan), result(3, 0.5)])
    assert set(leaving) == {2, 3}
    assert [(e.trial.number, e.state) for e in ended] == [(runs[1].trial.number, optuna.trial.TrialState.PRUNED)]
    record = study.get_trials()[runs[1].trial.number].user_attrs
    assert record["pruned_reason"].startswith("diverged: training loss is nan at epoch 1")
    assert study.get_trials()[runs[0].trial.number].intermediate_values == {1: 0.5}  # the mean of its seeds


def test_a_stack_of_seeds_trains_trials_times_seeds_members(tmp_path):
    fixed = {**stacked_spec()["fixed"], "train.n_seeds": 2}
    spec = write_spec(tmp_path, spec=stacked_spec(fixed=fixed))
    alone, together = storage_url(tmp_path, "alone.db"), storage_url(tmp_path, "together.db")
    assert run_cli(tmp_path, spec, storage=alone).exit_code == 0
    assert run_cli(tmp_path, spec, "--stack", "4", storage=together).exit_code == 0
    one, four = by_params(alone), by_params(together)
    for params, trial in four.items():
        assert trial.user_attrs["per_seed"].keys() == one[params].user_attrs["per_seed"].keys()
        assert trial.value == one[params].value


@pytest.mark.processes
def test_a_stacked_study_with_a_median_pruner_runs_end_to_end(tmp_path):
    """run (two workers, each stacking its own asks), best, report, rerun, dashboard."""
    from browser import get_json, served_dashboard

    space = {"train.learning_rate": {"low": 0.002, "high": 0.05, "log": True}}
    pruner = {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1}
    spec = write_spec(tmp_path, spec=stacked_spec(space=space, n_trials=10, sampler={"type": "tpe", "seed": 3},
                                                  pruner=pruner, stack=4))  # fmt: skip
    url = storage_url(tmp_path)
    ran = invoke("run", spec, "--storage", url, "--artifacts", checkpoint_dir(tmp_path), "--workers", "2",
                 "--threads", "1")  # fmt: skip
    assert ran.exit_code == 0, ran.output
    study = load(url, "stacked")
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 10, states
    best = invoke("best", "stacked", "--storage", url)
    assert best.exit_code == 0 and f"trial {study.best_trial.number}" in best.stdout
    report = invoke("report", "stacked", "--storage", url, "--out", tmp_path / "r.html")
    assert report.exit_code == 0, report.output
    rerun = invoke("rerun", "stacked", str(study.best_trial.number), "--storage", url, "--threads", "1")
    assert rerun.exit_code == 0, rerun.output
    with served_dashboard(tmp_path, url) as base:
        (listed,) = get_json(f"{base}/api/studies")["study_summaries"]
        detail = get_json(f"{base}/api/studies/{listed['study_id']}")
        assert len(detail["trials"]) == 10


@pytest.mark.processes
def test_a_killed_workers_whole_stack_is_retried_on_postgresql(tmp_path):
    """Two workers stacking 3 trials each on PostgreSQL; one is killed (SIGKILL) while its stack trains:
    every trial of its stack goes stale, is failed and queued again, and the study still finishes exactly
    its budget."""
    import os
    import signal
    import subprocess
    import time

    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from pg_server import postgres_server, why_unavailable
    from sweep_helpers import SWEEP, subprocess_env

    if why_unavailable() is not None:
        pytest.skip(str(why_unavailable()))
    space = {"train.learning_rate": {"low": 0.002, "high": 0.05, "log": True}}
    fixed = {**stacked_spec()["fixed"], "train.n_epochs": 30, "train.num_threads": 1}
    spec = write_spec(tmp_path, spec=stacked_spec(space=space, fixed=fixed, n_trials=9, sampler={"type": "random"}))
    env = {**subprocess_env(), "SWEEP_GRACE_PERIOD": "4"}
    with postgres_server() as server:
        command = [str(SWEEP), "run", str(spec), "--storage", server.url, "--artifacts", str(tmp_path / "ckpt"),
                   "--stack", "3", "--threads", "1"]  # fmt: skip
        first = subprocess.run([*command, "--trials", "1"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert first.returncode == 0, first.stdout + first.stderr  # makes the study
        workers = [
            subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
            for _ in range(2)
        ]  # fmt: skip
        study = optuna.load_study(study_name="stacked", storage=server.url)
        victim_trials: list[int] = []
        try:
            deadline = time.time() + 120
            while not victim_trials and time.time() < deadline:
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                for worker in workers:
                    mine = [t for t in running if t.user_attrs.get("worker", "").endswith(f":{worker.pid}")]
                    if len(mine) >= 2 and all(t.intermediate_values for t in mine):  # a stack, mid-training
                        os.killpg(worker.pid, signal.SIGKILL)
                        worker.wait(timeout=60)
                        victim_trials = [t.number for t in mine]
                        break
                time.sleep(0.2)
            assert victim_trials, "no worker was killed while its stack trained"
            survivor = next(w for w in workers if w.returncode is None)
            _, err = survivor.communicate(timeout=300)
            assert survivor.returncode == 0, err
        finally:
            for worker in workers:
                if worker.poll() is None:
                    os.killpg(worker.pid, signal.SIGKILL)
        done = study.get_trials(deepcopy=False)
        finished = [t for t in done if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) == 9
        retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in done}
        for number in victim_trials:
            assert done[number].state == TrialState.FAIL
            assert number in retried  # queued again with its parameters, and run by the survivor


def test_each_stacked_trial_writes_its_tensorboard_run_closed_with_its_state(tmp_path):
    from test_tensorboard import hparams_of, read_run, scalars

    pruner = {"type": "threshold", "lower": 1.0}  # prunes every trial at its first report
    spec = write_spec(tmp_path, spec=stacked_spec(pruner=pruner))
    result = run_cli(tmp_path, spec, "--stack", "4", "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 0, result.output
    runs = sorted((tmp_path / "tb" / "stacked").iterdir())
    assert [r.name[:11] for r in runs] == [f"trial-0000{n}" for n in range(4)]
    for run in runs:
        events = read_run(run)
        assert hparams_of(events)["state"] == "pruned"
        assert len(scalars(events, "exact_match/val")) == 1  # its own epoch, when it left the stack


def test_the_stop_rule_ends_a_stacked_search(tmp_path):
    space = {"train.learning_rate": {"low": 0.002, "high": 0.05, "log": True}}
    spec = write_spec(
        tmp_path,
        spec=stacked_spec(space=space, n_trials=40, sampler={"type": "random", "seed": 2}, stop={"patience": 3}),
    )
    result = run_cli(tmp_path, spec, "--stack", "2")
    assert result.exit_code == 0, result.output
    assert "ended early" in result.output
    assert len(trials(storage_url(tmp_path), "stacked")) < 40


@pytest.mark.processes
def test_ctrl_c_fails_every_stacked_trial_as_interrupted_and_a_resume_retries_them(tmp_path):
    import signal
    import time

    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from sweep_helpers import kill_group, start_sweep, sweep_process, wait_for_running

    fixed = {**stacked_spec()["fixed"], "train.n_epochs": 80, "train.num_threads": 1}
    space = {"train.learning_rate": {"low": 0.002, "high": 0.05, "log": True}}
    spec = write_spec(tmp_path, spec=stacked_spec(fixed=fixed, space=space, sampler={"type": "random"}, n_trials=3))
    args = ["run", spec, "--storage", storage_url(tmp_path), "--artifacts", checkpoint_dir(tmp_path), "--stack", "3"]
    process = start_sweep(tmp_path, *args)
    try:
        wait_for_running(tmp_path / "s.db", process)
        deadline = time.time() + 120
        while time.time() < deadline:
            running = [t for t in trials(storage_url(tmp_path), "stacked") if t.intermediate_values]
            if len(running) == 3:
                break
            assert process.poll() is None, process.communicate()
            time.sleep(0.2)
        kill_group(process, signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        kill_group(process)
    assert process.returncode == 130, out + err
    study = load(storage_url(tmp_path), "stacked")
    stopped = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(stopped) == 3 and all(t.user_attrs["interrupted"] for t in stopped)
    retries = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) is not None]
    assert sorted(RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in retries) == [0, 1, 2]
    assert all(t.state == TrialState.WAITING for t in retries)
    resumed = sweep_process(tmp_path, *args, timeout=600)  # runs the three queued retries, as a stack
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = load(storage_url(tmp_path), "stacked").trials
    assert all(after[t.number].state == TrialState.COMPLETE for t in retries)
