"""Workers on a Slurm cluster (`sweep launch slurm`): one job array, one `sweep run` worker per task.

Each task is one worker of Optuna's distributed mode on the study's storage: it takes trials until the
study's budget is taken, so N tasks finish its exact total between them, and a task that ends early
(cancelled, preempted, out of time) leaves its trial to be queued again (sweep.run.signals). The
script fixes everything a task needs, because a compute node shares no shell with the login node:
the `sweep` of this venv, the spec's path, the storage, the artifact store and the threads.

Slurm ends a task with SIGTERM, then SIGKILL KillWait seconds later (30 by default). The script asks
for SIGTERM a while before the time limit (``--signal``) and ``exec``s the worker, so the batch
step's own process is the worker and the signal reaches it.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from digitsum.errors import UsageError

# Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}")
_PARTITION = re.compile(r"[A-Za-z0-9_.,-]+")
WARNING_SECONDS = 120  # SIGTERM this long before the time limit: a step's time, then the trial's record


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlurmJob:
    """What the job-array script holds: how many workers, where they run, and what each runs."""

    spec: Path
    study_name: str
    workers: int
    time: str
    partition: str | None
    cpus_per_worker: int
    gpus_per_worker: int
    storage: str
    artifacts: str
    logs: Path
    sweep: Path  # the `sweep` executable of this venv
    workdir: Path

    def __post_init__(self) -> None:
        if not _TIME.fullmatch(self.time):
            raise UsageError(f"--time {self.time!r}: expected minutes or [D-]HH:MM:SS as Slurm reads it, like 2:00:00")
        if self.partition is not None and not _PARTITION.fullmatch(self.partition):
            raise UsageError(f"--partition {self.partition!r}: expected a partition name, like gpu")
        if self.gpus_per_worker > 1:
            raise UsageError(
                f"--gpus-per-worker {self.gpus_per_worker}: a worker trains on one GPU at a time; "
                f"for more GPUs, raise --workers (each worker gets its own)"
            )


def script(job: SlurmJob) -> str:
    """The job-array script: one `sweep run` worker per array task."""
    run = [
        str(job.sweep), "run", str(job.spec), "--name", job.study_name, "--storage", job.storage,
        "--artifacts", job.artifacts, "--workers", "1", "--threads", str(job.cpus_per_worker),
    ]  # fmt: skip
    if job.gpus_per_worker:
        run += ["--devices", "auto"]  # the GPU Slurm gave the task (its CUDA_VISIBLE_DEVICES)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={_job_name(job.study_name)}",
        f"#SBATCH --array=0-{job.workers - 1}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={job.cpus_per_worker}",
        f"#SBATCH --time={job.time}",
        *([f"#SBATCH --partition={job.partition}"] if job.partition else []),
        *([f"#SBATCH --gres=gpu:{job.gpus_per_worker}"] if job.gpus_per_worker else []),
        f"#SBATCH --output={job.logs}/%x-%A_%a.out",
        "#SBATCH --open-mode=append",  # Slurm's own CANCELLED line must not overwrite the worker's last lines
        f"#SBATCH --signal=B:TERM@{WARNING_SECONDS}",
        f"# written by `sweep launch slurm`: {job.workers} workers of study {job.study_name!r} on one storage;",
        "# a worker stopped by SIGTERM (the time limit, scancel) queues its trial again. Submit it again to go on.",
        "set -eu",
        f"cd {shlex.quote(str(job.workdir))}",
        "export PYTHONUNBUFFERED=1",
        "exec " + " ".join(shlex.quote(part) for part in run),
    ]
    return "\n".join(lines) + "\n"


def _job_name(study_name: str) -> str:
    return "sweep-" + re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)[:60]


def write_script(job: SlurmJob, text: str) -> Path:
    """The script in the log folder, readable by its owner alone (the storage URL may hold a password)."""
    job.logs.mkdir(parents=True, exist_ok=True)
    path = job.logs / f"{_job_name(job.study_name)}.sbatch"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    return path


def submit(path: Path) -> str:
    """Submit the script with sbatch; the job id, or one line saying why Slurm refused it."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise UsageError("sbatch not found: run `sweep launch slurm` on a Slurm login node, or add --dry-run")
    done = subprocess.run([sbatch, "--parsable", str(path)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())[:300]
        raise UsageError(f"sbatch refused {path}: {said}")
    return done.stdout.strip().split(";")[0]  # --parsable: "ID" or "ID;CLUSTER"


@dataclasses.dataclass(frozen=True)
class Launched:
    """A job array written (and, unless a dry run, submitted): its script, where it is, its job id."""

    job: SlurmJob
    script: str
    path: Path | None  # None: a dry run writes nothing
    job_id: str | None  # None: a dry run submits nothing
    notes: tuple[str, ...] = ()


def launch(
    spec_path: str | Path,
    workers: int,
    *,
    time: str = "1:00:00",
    partition: str | None = None,
    cpus_per_worker: int = 1,
    gpus_per_worker: int = 0,
    storage: str | None = None,
    artifacts: str | None = None,
    logs: str | Path = "slurm",
    name: str | None = None,
    dry_run: bool = False,
) -> Launched:
    """Write a job array of ``workers`` `sweep run` workers of the spec's study, and submit it with sbatch.

    Unless ``dry_run``, the study is made (or resumed) here first, as `sweep run` makes it: a bad spec,
    storage or artifact store is refused now, not in every task, and the tasks do not race to make it."""
    import sys

    from sweep.spec.files import load_spec
    from sweep.spec.names import check_study_name
    from sweep.store.artifacts import where_checkpoints_go
    from sweep.store.storage import default_url, storage_file

    spec = load_spec(spec_path)
    study_name = name or spec.name
    check_study_name(study_name)
    url = storage or default_url()
    notes = []
    if storage_file(url) is not None:
        notes.append(
            f"note: the storage is a file ({url}): every task must reach it on a shared disk, and SQLite suits "
            "a few workers on one node; across nodes use PostgreSQL (docs/scaling.md)"
        )
    if dry_run:
        location, _ = where_checkpoints_go(study_name, url, artifacts)  # refuses what `sweep run` would
    else:
        location = _make_study(spec_path, study_name, url, artifacts, cpus_per_worker)
    job = SlurmJob(
        spec=Path(spec.path).resolve(), study_name=study_name, workers=workers, time=time, partition=partition,
        cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, storage=url, artifacts=location,
        logs=Path(logs).expanduser().resolve(), sweep=Path(sys.executable).with_name("sweep"), workdir=Path.cwd(),
    )  # fmt: skip
    text = script(job)
    if dry_run:
        return Launched(job, text, None, None, tuple(notes))
    path = write_script(job, text)
    return Launched(job, text, path, submit(path), tuple(notes))


def _make_study(spec_path: str | Path, name: str, url: str, artifacts: str | None, threads: int) -> str:
    """Make or resume the study as `sweep run` does; where its checkpoints go."""
    from sweep.run.plan import RunOptions, plan_run
    from sweep.store.storage import close_study

    options = RunOptions(storage=url, name=name, artifacts=artifacts, threads=threads)
    plan, study = plan_run(spec_path, options, trains_here=False)  # the compute nodes' cores and GPUs, not these
    close_study(study)
    return plan.artifacts
