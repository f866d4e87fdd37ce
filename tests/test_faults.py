"""Faults a long study meets on a real machine: another program locking the SQLite storage, and a disk
that fills up while a trial stores its checkpoint or the storage writes a trial. (The PostgreSQL
server restarting under eight workers is in test_postgres.py.)

Each fault ends the same way: the run waits and goes on, or stops with one line on stderr and no
traceback; what was stored stays intact (SQLite's own integrity check), and the same command resumes
the study to its exact total.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sweep_helpers import (
    FINISHED,
    SWEEP,
    spec_dict,
    start_sweep,
    storage_url,
    subprocess_env,
    sweep_process,
    trials,
    wait_for_running,
    write_spec,
)

pytestmark = pytest.mark.processes

LOCK_SECONDS = 20  # what the issue asks: another process holds the lock this long
SPEC = spec_dict(
    name="faults",
    n_trials=4,
    fixed={"train.n_epochs": 3, "train.device": "cpu", "train.batch_size": 16, "model.embedding_dim": 8},
    space={
        "model.model_type": {"choices": ["rnn", "gru"]},
        "train.learning_rate": {"low": 0.01, "high": 0.1, "log": True},
    },
)


def run_args(storage: str, artifacts: Path, trials: int) -> list:
    return ["run", "spec.yaml", "--trials", trials, "--threads", 1, "--storage", storage, "--artifacts", artifacts]


def integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def assert_resumes_to_the_total(tmp_path: Path, storage: str, artifacts: Path, total: int) -> list:
    done = sweep_process(tmp_path, *run_args(storage, artifacts, total), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    found = trials(storage, "faults")
    assert sum(t.state in FINISHED for t in found) == total
    assert len({t.number for t in found}) == len(found)
    assert not [t for t in found if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    return found


# ---------------------------------------------------------------------------------------------
# SQLite: another process holds an exclusive lock on the storage


def hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process holding an exclusive lock on the SQLite file for ``seconds``; returns once it holds it."""
    hold = f"import sqlite3, time; db = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
    hold += f"db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep({seconds})\n"
    hold += "db.execute('COMMIT'); print('released', flush=True)"
    locker = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    return locker


def test_a_storage_locked_by_another_process_for_20_s_is_waited_for(tmp_path):
    write_spec(tmp_path, spec=SPEC | {"fixed": {**SPEC["fixed"], "train.n_epochs": 10}})
    db, url = tmp_path / "s.db", storage_url(tmp_path)
    run = start_sweep(tmp_path, *run_args(url, tmp_path / "ckpt", 4))
    locker = None
    try:
        wait_for_running(db, run)
        locker = hold_lock(db, LOCK_SECONDS)
        locked_at = time.monotonic()
        out, err = run.communicate(timeout=300)
        assert locker.wait(timeout=60) == 0
    finally:
        for process in (run, locker):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert run.returncode == 0, out + err  # it waited for the lock and went on
    assert time.monotonic() - locked_at >= LOCK_SECONDS  # it could not have finished without the lock
    assert "Traceback" not in err and not error_lines(err)
    assert integrity(db) == "ok"
    found = trials(url, "faults")
    assert sum(t.state in FINISHED for t in found) == 4
    assert not [t for t in found if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_a_storage_locked_when_the_run_starts_is_one_line_after_the_patience_and_loses_nothing(tmp_path):
    write_spec(tmp_path, spec=SPEC | {"fixed": {**SPEC["fixed"], "train.n_epochs": 1}})
    db, url = tmp_path / "s.db", storage_url(tmp_path)
    assert_resumes_to_the_total(tmp_path, url, tmp_path / "ckpt", 1)
    locker = hold_lock(db, 60)
    try:
        locked = subprocess.run(
            [str(SWEEP), *map(str, run_args(url, tmp_path / "ckpt", 2))],
            cwd=tmp_path, env=subprocess_env(SWEEP_STORAGE_PATIENCE="2"), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        locker.kill()
        locker.wait()
    assert locked.returncode == 1, locked.stdout + locked.stderr
    assert "Traceback" not in locked.stderr
    (line,) = error_lines(locked.stderr)
    assert line.startswith("error: lost the storage (") and "database is locked" in line, line
    assert integrity(db) == "ok"
    assert_resumes_to_the_total(tmp_path, url, tmp_path / "ckpt", 2)  # the lock gone, the same command goes on


# ---------------------------------------------------------------------------------------------
# A full disk


@contextlib.contextmanager
def small_filesystem(folder: Path, size: str) -> Iterator[bool]:
    """A tmpfs of `size` mounted at `folder` (root can: `make test` runs as root in CI), unmounted
    afterwards; False where mounting is not allowed."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    try:
        yield mounted.returncode == 0
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the filesystem under `folder` until `leave` bytes are free (0: until a write fails, while
    others may be writing too); the filler file."""
    filler = folder / "filler"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with filler.open("wb", buffering=0) as file:
        if leave:
            file.write(b"\0" * max(free - leave, 0))
            return filler
        with contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                file.write(b"\0" * 4096)
    return filler


def test_a_full_disk_while_a_checkpoint_is_stored(tmp_path):
    """The artifact store's disk fills: the trial's checkpoint cannot be written. One line, exit 1; no
    artifact is recorded and no half-written file is left; the trial is queued again, and once there is
    room the same command resumes the study to its total, that trial first."""
    write_spec(tmp_path, spec=SPEC | {"fixed": {**SPEC["fixed"], "model.hidden_size": 64}})  # ~100 KB each
    url, store = storage_url(tmp_path), tmp_path / "store"
    with small_filesystem(store, "1m") as mounted:
        if not mounted:
            pytest.skip("mounting a small filesystem is not allowed here (needs root)")
        filler = fill(store, leave=16_384)
        command = [str(SWEEP), *map(str, run_args(url, store, 4))]
        done = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True)
        assert done.returncode == 1, done.stdout + done.stderr
        (line,) = error_lines(done.stderr)
        assert "could not store its checkpoint" in line and "run the same command again" in line, line
        assert "Traceback" not in done.stderr
        assert integrity(tmp_path / "s.db") == "ok"
        found = trials(url, "faults")
        assert not [t for t in found if t.user_attrs.get("artifact_id")]  # nothing recorded
        assert sorted(p.name for p in store.iterdir()) == ["filler"]  # no half-written checkpoint, no temporary file
        (failed,) = [t for t in found if t.state == TrialState.FAIL]
        (queued,) = [t for t in found if t.state == TrialState.WAITING]
        assert RetryHeartbeatStaleTrialCallback.retried_trial_number(queued) == failed.number
        assert queued.params == failed.params
        filler.unlink()  # room again
        found = assert_resumes_to_the_total(tmp_path, url, store, 4)
    assert next(t for t in found if t.number == queued.number).state in FINISHED  # the resume ran it


def test_a_full_disk_while_the_storage_writes_a_trial(tmp_path):
    """The SQLite storage's disk fills mid-study: one line, exit 1, no traceback; the file stays intact,
    and once there is room the same command resumes the study to its exact total."""
    write_spec(tmp_path, spec=SPEC | {"fixed": {**SPEC["fixed"], "train.n_epochs": 6}})
    disk = tmp_path / "disk"
    with small_filesystem(disk, "4m") as mounted:
        if not mounted:
            pytest.skip("mounting a small filesystem is not allowed here (needs root)")
        url = f"sqlite:///{disk}/s.db"
        run = start_sweep(tmp_path, *run_args(url, tmp_path / "ckpt", 6))
        try:
            wait_for_finished(disk / "s.db", run, 1)
            filler = fill(disk)
            out, err = run.communicate(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert run.returncode == 1, out + err
        (line,) = error_lines(err)
        assert "disk is full" in line and "run the same command again" in line, line
        assert "Traceback" not in err
        filler.unlink()
        assert integrity(disk / "s.db") == "ok"
        assert_resumes_to_the_total(tmp_path, url, tmp_path / "ckpt", 6)


def wait_for_finished(db: Path, process: subprocess.Popen, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        with contextlib.suppress(sqlite3.Error):
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
                done = connection.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
            if done >= count:
                return
        time.sleep(0.1)
    raise AssertionError(f"{count} trial(s) did not finish in time")
