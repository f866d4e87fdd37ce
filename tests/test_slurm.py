"""sweep launch slurm: a job array of `sweep run` workers, on a real one-node Slurm cluster (munged,
slurmctld, slurmd started by the tests: tests/slurm_cluster.py) and a real PostgreSQL storage."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).parent))
from pg_server import postgres_server
from pg_server import why_unavailable as why_no_postgres
from slurm_cluster import slurm_cluster
from slurm_cluster import why_unavailable as why_no_slurm
from sweep_helpers import FINISHED, assert_one_error_line, invoke, spec_dict, subprocess_env, write_spec

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
SWEEP = str(Path(sys.executable).with_name("sweep"))
SPEC = spec_dict(
    name="on-slurm",
    n_trials=4,
    data={"lengths": "1-3", "val_fraction": 0.2},
    fixed={"train.n_epochs": 6, "train.device": "cpu", "train.batch_size": 8, "model.embedding_dim": 8},
    space={"model.model_type": {"choices": ["gru"]}, "model.hidden_size": {"low": 8, "high": 16}},
)


# ---------------------------------------------------------------------------------------------
# The script, without a cluster


def test_the_script_runs_one_worker_per_task_with_everything_fixed_in_it(tmp_path):
    spec = write_spec(tmp_path, spec=SPEC)
    url = "postgresql+psycopg://sweep@db.example:5432/sweep"
    shown = invoke(
        "launch", "slurm", spec, "--workers", 3, "--time", "2:00:00", "--partition", "gpu", "--cpus-per-worker", 4,
        "--gpus-per-worker", 1, "--storage", url, "--artifacts", tmp_path / "shared", "--logs", tmp_path / "logs",
        "--dry-run",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == "#!/bin/bash"
    for wanted in ("--array=0-2", "--cpus-per-task=4", "--time=2:00:00", "--partition=gpu", "--gres=gpu:1",
                   f"--output={tmp_path / 'logs'}/%x-%A_%a.out", "--signal=B:TERM@"):  # fmt: skip
        assert any(line.startswith("#SBATCH " + wanted) for line in lines), (wanted, shown.stdout)
    (command,) = [line for line in lines if line.startswith("exec ")]
    assert command.split()[1] == SWEEP  # this venv's sweep
    for part in (f"run {spec}", f"--storage {url}", f"--artifacts {tmp_path / 'shared'}", "--workers 1",
                 "--threads 4", "--devices auto"):  # fmt: skip
        assert part in command, (part, command)
    assert not (tmp_path / "logs").exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (("--time", "two hours"), "--time 'two hours': expected minutes or [D-]HH:MM:SS"),
        (("--gpus-per-worker", "2"), "a worker trains on one GPU at a time"),
        (("--partition", "a b"), "expected a partition name"),
    ],
)
def test_a_bad_option_is_one_line(tmp_path, option, said):
    spec = write_spec(tmp_path, spec=SPEC)
    result = invoke("launch", "slurm", spec, *option, "--storage", f"sqlite:///{tmp_path}/s.db", "--dry-run")
    assert said in assert_one_error_line(result)


# ---------------------------------------------------------------------------------------------
# On a real Slurm


def needs_slurm(test):
    """A test on the real cluster and a real PostgreSQL, skipped with the reason where either cannot run."""
    test = pytest.mark.processes(test)
    test = pytest.mark.skipif(why_no_slurm() is not None, reason=str(why_no_slurm()))(test)
    return pytest.mark.skipif(why_no_postgres() is not None, reason=str(why_no_postgres()))(test)


@pytest.fixture(scope="module")
def cluster():
    with slurm_cluster() as started:
        print(f"\nSlurm daemons started in {started.started_in:.2f} s")
        yield started


@pytest.fixture(scope="module")
def server():
    with postgres_server() as pg:
        yield pg


def submit(cluster, tmp_path: Path, spec: Path, url: str, workers: int = 2) -> str:
    """`sweep launch slurm` as a user runs it on the login node; the job id it prints."""
    env = {**subprocess_env(), **cluster.env}
    done = subprocess.run(
        [SWEEP, "launch", "slurm", str(spec), "--workers", str(workers), "--time", "10", "--storage", url,
         "--artifacts", str(tmp_path / "shared"), "--logs", str(tmp_path / "logs")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"submitted job array (\d+)", done.stdout)
    assert found, done.stdout
    assert f"scancel {found.group(1)}" in done.stdout
    return found.group(1)


def logs(tmp_path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((tmp_path / "logs").glob("*.out"))}


@needs_slurm
def test_a_two_task_array_runs_the_study_to_its_exact_total(cluster, server, tmp_path):
    started = time.monotonic()
    job = submit(cluster, tmp_path, write_spec(tmp_path, spec=SPEC), server.url)
    cluster.wait_until_done(job, timeout=240)
    print(f"\n2-task array: {time.monotonic() - started:.1f} s from submit to done")
    outputs = logs(tmp_path)
    assert len(outputs) == 2, outputs
    assert not any("Traceback" in text or "error:" in text for text in outputs.values()), outputs
    stored = optuna.load_study(study_name="on-slurm", storage=server.url).get_trials(deepcopy=False)
    assert sum(t.state in FINISHED for t in stored) == 4  # the exact total, between the two tasks
    assert not [t for t in stored if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    ran = {t.user_attrs["worker"] for t in stored if t.state in FINISHED}
    assert 1 <= len(ran) <= 2 and all(t.user_attrs["num_threads"] == 1 for t in stored if t.state in FINISHED)


@needs_slurm
def test_scancel_of_one_task_mid_trial_loses_nothing_and_its_trial_is_retried(cluster, server, tmp_path):
    long = SPEC | {"name": "cancelled", "fixed": {**SPEC["fixed"], "train.n_epochs": 15}}  # trials of seconds
    job = submit(cluster, tmp_path, write_spec(tmp_path, spec=long), server.url)
    study = optuna.load_study(study_name="cancelled", storage=server.url)
    deadline = time.monotonic() + 120
    while len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) < 2:  # both tasks mid-trial
        assert time.monotonic() < deadline, (cluster.queued(job), logs(tmp_path))
        time.sleep(0.2)
    cancelled = cluster.run("scancel", f"{job}_0")
    assert cancelled.returncode == 0, cancelled.stderr
    cluster.wait_until_done(job, timeout=300)
    stored = study.get_trials(deepcopy=False)
    assert sum(t.state in FINISHED for t in stored) == 4  # the other task ran the retry too
    assert not [t for t in stored if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    (stopped,) = [t for t in stored if t.state == TrialState.FAIL]
    assert stopped.user_attrs["interrupted"]  # failed by its own worker on SIGTERM, not left to go stale
    (retry,) = [t for t in stored if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == stopped.number]
    assert retry.state in FINISHED and retry.params == stopped.params
    said = logs(tmp_path)[f"sweep-cancelled-{job}_0.out"]
    assert f"terminated (SIGTERM); trial {stopped.number} queued again" in said, said
    assert "Traceback" not in said
