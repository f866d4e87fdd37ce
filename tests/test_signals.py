"""sweep.run.signals: SIGTERM (a scheduler's stop) ends a worker cleanly, as Ctrl-C does; real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sweep_helpers import (
    FINISHED,
    kill_group,
    read_only,
    running_numbers,
    spec_dict,
    start_sweep,
    storage_url,
    sweep_process,
    trials,
    wait_for_running,
    write_spec,
)

from sweep.run.signals import EXIT_TERMINATED, Stopped, stop_on_signals

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

# Epochs of about 4 s on a small dataset (lengths 1-4, batch 4, the torch.nn step: ~2,200 steps of ~2 ms),
# so a stop that waited for the epoch's end would show: a SIGTERM early in epoch 1 must end the trial
# before epoch 1 reports.
LONG_EPOCHS = spec_dict(
    name="long",
    data={"lengths": "1-4", "val_fraction": 0.2},
    fixed={
        "train.n_epochs": 1,
        "train.device": "cpu",
        "train.batch_size": 4,
        "train.fused": False,
        "model.embedding_dim": 8,
    },  # fmt: skip
    space={"model.model_type": {"choices": ["gru"]}, "model.hidden_size": {"low": 8, "high": 16}},
)


def run_args(tmp_path, total: int, *extra) -> tuple:
    # one thread a worker: the other pytest worker trains too, and oversubscribed torch threads spin
    return ("run", "spec.yaml", "--storage", storage_url(tmp_path), "--artifacts", tmp_path / "ckpt",
            "--trials", total, "--threads", 1, *extra)  # fmt: skip


def terminate(process: subprocess.Popen) -> tuple[str, str, float]:
    """SIGTERM to this one process (as `kill` or a scheduler sends it); its output and seconds to exit."""
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=90)  # a loaded machine; the stop itself takes a step
    except subprocess.TimeoutExpired:
        kill_group(process)
        raise
    return out, err, time.monotonic() - sent


def left_in_group(process: subprocess.Popen) -> list[str]:
    """The processes (not zombies) left in the process group `start_sweep` made: pid and command line."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == process.pid and fields[0] != "Z":  # fields: state, ppid, pgrp
            left.append(f"{stat.parent.name}: {(stat.parent / 'cmdline').read_bytes().replace(bytes(1), b' ')!r}")
    return left


def assert_requeued(url: str, name: str, numbers: list[int]) -> None:
    """Each trial failed as interrupted, with what it trained recorded, and queued again with its parameters."""
    stored = trials(url, name)
    assert not [t for t in stored if t.state == TrialState.RUNNING]
    for number in numbers:
        stopped = next(t for t in stored if t.number == number)
        assert stopped.state == TrialState.FAIL and stopped.user_attrs["interrupted"], stopped
        assert "epochs_run" in stopped.user_attrs  # how far it got is kept on it
        (retry,) = [t for t in stored if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == number]
        assert retry.state == TrialState.WAITING and retry.params == stopped.params


@pytest.mark.processes
def test_sigterm_mid_epoch_fails_and_queues_the_trial_at_once_and_the_same_command_finishes(tmp_path):
    write_spec(tmp_path, spec=LONG_EPOCHS)
    url = storage_url(tmp_path)
    process = start_sweep(tmp_path, *run_args(tmp_path, 1))
    number = wait_for_running(tmp_path / "s.db", process)
    out, err, _ = terminate(process)
    assert process.returncode == EXIT_TERMINATED, out + err
    assert "Traceback" not in err
    assert f"terminated (SIGTERM); trial {number} queued again with the same parameters" in err, err
    assert_requeued(url, "long", [number])
    (stopped,) = [t for t in trials(url, "long") if t.number == number]
    assert stopped.intermediate_values == {}  # stopped inside epoch 1, not at its end: no heartbeat wait

    resumed = sweep_process(tmp_path, *run_args(tmp_path, 1), timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    finished = [t for t in trials(url, "long") if t.state in FINISHED]
    assert len(finished) == 1 and RetryHeartbeatStaleTrialCallback.retried_trial_number(finished[0]) == number


@pytest.mark.processes
def test_sigterm_to_the_parent_of_two_workers_stops_both_and_queues_their_k_seed_trials(tmp_path):
    write_spec(tmp_path, spec=LONG_EPOCHS | {"fixed": {**LONG_EPOCHS["fixed"], "train.n_seeds": 2}})
    url, db = storage_url(tmp_path), tmp_path / "s.db"
    process = start_sweep(tmp_path, *run_args(tmp_path, 6, "--workers", "2"))
    wait_for_running(db, process)
    deadline = time.monotonic() + 90
    while len(running_numbers(db)) < 2:  # the spawned worker's trial too
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    out, err, _ = terminate(process)
    assert process.returncode == EXIT_TERMINATED, out + err
    assert "Traceback" not in err
    try:  # the parent waited for its worker: nothing is left behind (multiprocessing's resource tracker,
        # which sees its parent gone, may take a moment to exit)
        deadline = time.monotonic() + 10
        while left_in_group(process) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left_in_group(process) == []
    finally:
        kill_group(process)
    stopped = [t.number for t in trials(url, "long") if t.state == TrialState.FAIL]
    assert len(stopped) == 2  # one per worker
    assert f"trials {stopped[0]}, {stopped[1]} queued again with the same parameters" in err, err
    assert_requeued(url, "long", stopped)


# ---------------------------------------------------------------------------------------------
# The handler itself


def test_sigterm_sets_the_stop_and_never_escalates_and_the_handlers_are_restored():
    stop, heard = threading.Event(), []
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stop_on_signals(stop, forward=heard.append) as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler and a parent may both send it: no KeyboardInterrupt
        assert stop.is_set() and signals.signum == signal.SIGTERM and heard == [signal.SIGTERM] * 2
        stopped = signals.stopped([3])
        assert isinstance(stopped, KeyboardInterrupt) and isinstance(stopped, Stopped)
        assert stopped.exit_code == 143 and stopped.requeued == [3]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_second_ctrl_c_interrupts_at_once_and_sigint_is_not_forwarded():
    stop, heard = threading.Event(), []
    with stop_on_signals(stop, forward=heard.append) as signals:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.is_set() and signals.stopped([]).exit_code == 130
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here, between bytecodes
    assert heard == []  # a terminal signals the whole group already


def test_nested_handlers_keep_the_outer_one_which_forwards():
    stop = threading.Event()
    with stop_on_signals(stop, forward=lambda signum: None) as outer, stop_on_signals(stop) as inner:
        assert inner is outer


def _reported(db, number: int) -> int:
    """How many epochs trial ``number`` has reported, read straight from the SQLite file."""
    query = (
        "SELECT count(*) FROM trial_intermediate_values v JOIN trials t ON t.trial_id = v.trial_id WHERE t.number = ?"
    )
    rows = read_only(db, query, number)
    return int(rows[0][0]) if rows else 0


@pytest.mark.processes
def test_a_stopped_k_seed_trials_retry_goes_on_from_its_last_epoch(tmp_path):
    fast = LONG_EPOCHS | {"data": {"lengths": "1-3", "val_fraction": 0.2}}
    fast["fixed"] = {**LONG_EPOCHS["fixed"], "train.n_epochs": 30, "train.batch_size": 8, "train.fused": True,
                     "train.n_seeds": 2}  # fmt: skip
    write_spec(tmp_path, spec=fast)
    url, db = storage_url(tmp_path), tmp_path / "s.db"
    process = start_sweep(tmp_path, *run_args(tmp_path, 1))
    number = wait_for_running(db, process)
    deadline = time.monotonic() + 60
    while _reported(db, number) < 3:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    out, err, _ = terminate(process)
    assert process.returncode == EXIT_TERMINATED, out + err
    (stopped,) = [t for t in trials(url, "long") if t.number == number]
    assert stopped.user_attrs["resume_id"] and len(stopped.intermediate_values) < 30
    resumed = sweep_process(tmp_path, *run_args(tmp_path, 1), timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (retry,) = [t for t in trials(url, "long") if t.state in FINISHED]
    went_on = retry.user_attrs["resumed_from"]
    assert 3 <= went_on <= len(stopped.intermediate_values)  # from its last finished epoch, not from epoch 1
    assert sorted(retry.intermediate_values) == list(range(1, 31))
    assert all(retry.intermediate_values[e] == stopped.intermediate_values[e] for e in range(1, went_on + 1))
    assert retry.user_attrs["epochs_run"] == 30
    assert len([p for p in (tmp_path / "ckpt").iterdir() if p.is_file()]) == 1  # the state went with the retry
