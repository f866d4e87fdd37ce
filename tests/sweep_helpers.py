"""Shared helpers for the sweep-layer and CLI tests: tiny specs, CLI calls, storage polling.

Every spec here trains in well under a second per trial (lengths 1-2, hidden 8-16, 1-3 epochs).
Tests write specs into tmp_path and always pass an explicit SQLite storage and checkpoint folder.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner

from sweep.cli import app

SWEEP = Path(sys.executable).parent / "sweep"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

_BASE_SPEC: dict[str, Any] = {
    "name": "tiny",
    "n_trials": 2,
    "data": {"lengths": [1, 2], "val_fraction": 0.2},
    "fixed": {
        "train.n_epochs": 2,
        "train.device": "cpu",
        "train.batch_size": 16,
        "train.lr_schedule": "constant",
        "model.embedding_dim": 8,
    },
    "sampler": {"type": "random", "seed": 1},
    "pruner": {"type": "none"},
    "space": {
        "model.model_type": {"choices": ["rnn", "gru"]},
        "model.hidden_size": {"low": 8, "high": 16},
        "train.learning_rate": {"low": 0.01, "high": 0.1, "log": True},
    },
}


# One body per sampler and per pruner, small enough for 2-trial studies.
SAMPLER_BODIES = {
    "tpe": {"type": "tpe", "seed": 1, "n_startup_trials": 1},
    "random": {"type": "random", "seed": 1},
    "grid": {"type": "grid", "seed": 1},
    "cmaes": {"type": "cmaes", "seed": 1},
    "nsgaii": {"type": "nsgaii", "seed": 1, "population_size": 2},
    "nsgaiii": {"type": "nsgaiii", "seed": 1, "population_size": 2},
    "gp": {"type": "gp", "seed": 1, "n_startup_trials": 1},
    "qmc": {"type": "qmc", "seed": 1, "scramble": True},
    "bruteforce": {"type": "bruteforce", "seed": 1},
}
PRUNER_BODIES = {
    "median": {"type": "median", "n_startup_trials": 1},
    "percentile": {"type": "percentile", "percentile": 50.0},
    "successive_halving": {"type": "successive_halving"},
    "hyperband": {"type": "hyperband", "min_resource": 1},
    "patient": {"type": "patient", "patience": 1, "min_delta": 0.0, "wrapped": {"type": "median"}},
    "threshold": {"type": "threshold", "lower": 0.0, "n_warmup_steps": 1},
    "none": {"type": "none"},
}
# The grid sampler needs every parameter as choices.
GRID_SPACE = {"model.model_type": {"choices": ["rnn", "gru"]}, "model.hidden_size": {"choices": [8, 16]}}


@contextlib.contextmanager
def on_one_core():
    """This process (and what it starts meanwhile) on one core, its pytest worker's own (gw0 the first,
    gw1 the second): a run then takes one torch thread, as on a one-core machine, instead of two that
    would spin against the other pytest worker's. Behaviour is the same; only the oversubscription goes."""
    allowed = sorted(os.sched_getaffinity(0))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    os.sched_setaffinity(0, {allowed[index % len(allowed)]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def spec_dict(**changes: Any) -> dict:
    """A copy of the tiny spec with top-level keys replaced (None removes a key)."""
    spec = copy.deepcopy(_BASE_SPEC)
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


def write_spec(directory: Path, filename: str = "spec.yaml", spec: dict | None = None, **changes: Any) -> Path:
    """Write ``spec`` (default: the tiny spec with ``changes``) as YAML; returns the path."""
    path = Path(directory) / filename
    path.write_text(yaml.safe_dump(spec if spec is not None else spec_dict(**changes), sort_keys=False))
    return path


def assert_spec_mistake(directory: Path, changes: dict, key: str, message: str) -> None:
    """The tiny spec with ``changes`` is refused by one SpecError line: "FILE: KEY: ...MESSAGE..."."""
    from sweep.spec import SpecError, load_spec

    path = write_spec(directory, "bad.yaml", **changes)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: {key}: "), text
    assert message in text and "\n" not in text, text


def storage_url(tmp_path: Path, filename: str = "s.db") -> str:
    return f"sqlite:///{tmp_path}/{filename}"


def checkpoint_dir(tmp_path: Path) -> str:
    """The artifact folder tests pass as --artifacts."""
    return f"{tmp_path}/ckpt"


def stored_checkpoints(tmp_path: Path) -> list[Path]:
    """The checkpoint files in the tests' artifact folder (an artifact is a file named by its id)."""
    return sorted(p for p in Path(checkpoint_dir(tmp_path)).glob("*") if p.is_file())


def artifact_of(trial: optuna.trial.FrozenTrial) -> str | None:
    return trial.user_attrs.get("artifact_id")


def invoke(*args: Any):
    """Run the `sweep` app in this process (typer's CliRunner); returns the Result."""
    return CliRunner().invoke(app, [str(a) for a in args])


def run_cli(tmp_path: Path, spec_path: Path, *extra: Any, storage: str | None = None):
    """`sweep run SPEC --storage ... --artifacts ...` in this process."""
    return invoke(
        "run",
        spec_path,
        "--storage",
        storage or storage_url(tmp_path),
        "--artifacts",
        checkpoint_dir(tmp_path),
        *extra,
    )


def assert_one_error_line(result, code: int = 2) -> str:
    """Exit ``code``, exactly one line on stderr starting with "error:", no traceback; returns the line."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return load(url, name).get_trials(deepcopy=False)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for `sweep` subprocesses: short heartbeats, unbuffered output."""
    env = dict(os.environ)
    env.pop("SWEEP_STORAGE", None)
    env.update(SWEEP_HEARTBEAT_INTERVAL="1", SWEEP_GRACE_PERIOD="3", PYTHONUNBUFFERED="1", **extra)
    return env


def start_sweep(tmp_path: Path, *args: Any) -> subprocess.Popen:
    """Start `sweep ARGS` as its own process group (so a test can signal all of it)."""
    return subprocess.Popen(
        [str(SWEEP), *map(str, args)],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def sweep_process(tmp_path: Path, *args: Any, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SWEEP), *map(str, args)],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_only(db_path: Path, query: str, *params: Any) -> list[tuple]:
    """Rows of ``query`` read straight from a SQLite storage file (read-only, so a poll never creates
    tables while `sweep run` is creating them); none while it is not there, or locked for a moment."""
    if not Path(db_path).is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute(query, params).fetchall()
    except sqlite3.Error:  # not created yet, or locked for a moment
        return []


def running_numbers(db_path: Path) -> list[int]:
    """Numbers of RUNNING trials, read straight from the SQLite file."""
    return [n for (n,) in read_only(db_path, "SELECT number FROM trials WHERE state = 'RUNNING'")]


def wait_for_running(db_path: Path, process: subprocess.Popen, timeout: float = 60) -> int:
    """Poll until a trial is RUNNING; returns its number. Fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"sweep exited {process.returncode} before a trial ran:\n{out}\n{err}")
        running = running_numbers(db_path)
        if running:
            return running[0]
        time.sleep(0.1)
    kill_group(process)
    pytest.fail("no trial became RUNNING in time")


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def freeze_mid_trial(study: optuna.Study, victim: subprocess.Popen, below: int) -> FrozenTrial | None:
    """Freeze `victim` (SIGSTOP to its group: a `sweep run` started by `start_sweep`) and return its
    running trial if that has reported fewer than `below` epochs; else let it go on (SIGCONT) and
    return None. While frozen, nothing it does can change what was read, except a commit already on
    its way to the database (at most one more epoch's report, or the trial's end after its last)."""
    kill_group(victim, signal.SIGSTOP)
    owner = f":{victim.pid}"
    try:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except BaseException:
        kill_group(victim, signal.SIGCONT)  # never leave it frozen
        raise
    for trial in running:
        if str(trial.user_attrs.get("worker", "")).endswith(owner) and len(trial.intermediate_values) < below:
            return trial
    kill_group(victim, signal.SIGCONT)
    return None


def kill_mid_trial(study: optuna.Study, victim: subprocess.Popen, epochs: int, others: bool = False) -> int | None:
    """SIGKILL `victim` in the middle of one of its trials of `epochs` epochs; the number of the trial
    it left unfinished, or None where it was not mid-trial. A trial counts as killed mid-trial only
    if it is still unfinished after the kill: one that was finishing as the victim froze may still
    complete (then None, and the victim is dead: `victim.poll()` says which). With `others` (other
    workers run the study) the trial may already be FAIL: one of them found its heartbeat stale."""
    trial = freeze_mid_trial(study, victim, epochs)
    if trial is None:
        return None
    kill_group(victim, signal.SIGKILL)
    victim.wait(timeout=60)
    after = study._storage.get_trial(trial._trial_id).state
    unfinished = (TrialState.RUNNING, TrialState.FAIL) if others else (TrialState.RUNNING,)
    return trial.number if after in unfinished else None


def run_spec(
    tmp_path: Path,
    spec: dict,
    n_trials: int | None = None,
    enqueue: list[dict] = (),
    workers: int = 1,
    threads: int = 1,
    timeout: float | None = None,
) -> optuna.Study:
    """Run a study in this process through the sweep layer's own API (prepare_study + run_study).

    ``enqueue`` puts trials with fixed parameters first (Optuna's enqueue_trial), to decide the
    order of good and bad trials. One torch thread: the test machine's 2 cores are shared."""
    from sweep.run import RunPlan, prepare_study, run_study
    from sweep.spec import parse_spec
    from sweep.store.storage import open_storage

    parsed = parse_spec(spec, str(tmp_path / "spec.yaml"))
    url = storage_url(tmp_path)
    study = prepare_study(parsed, open_storage(url), parsed.name, checkpoint_dir(tmp_path))
    for params in enqueue:
        study.enqueue_trial(params)
    plan = RunPlan(
        spec=parsed,
        storage_url=url,
        study_name=parsed.name,
        n_trials=n_trials or parsed.n_trials,
        timeout=timeout,
        workers=workers,
        artifacts=checkpoint_dir(tmp_path),
        threads=threads,
    )
    run_study(plan)
    return load(url, parsed.name)
