"""`sweep launch slurm`: the study's workers as a Slurm job array (sweep.run.slurm)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sweep.cli.app import app
from sweep.cli.options import MAX_PROCESSES, Artifacts, SpecPath, Storage

launch = typer.Typer(
    help="Start a study's workers on a cluster's scheduler.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(launch, name="launch")


Workers = Annotated[int, typer.Option(min=1, max=MAX_PROCESSES, help="Workers: one array task each.")]
Time = Annotated[str, typer.Option(help="Each task's time limit, as Slurm reads it (minutes, or [D-]HH:MM:SS).")]
Partition = Annotated[str | None, typer.Option(help="The partition (default: the cluster's).")]
Cpus = Annotated[int, typer.Option(min=1, max=MAX_PROCESSES, help="CPUs per task, and the worker's torch threads.")]
Gpus = Annotated[int, typer.Option(min=0, help="GPUs per task: 0, or 1 (the worker trains on it: --devices auto).")]
Logs = Annotated[Path, typer.Option(help="Folder for the script and each task's output (on a disk the nodes share).")]
Name = Annotated[str | None, typer.Option(help="Study name (default: the spec's name).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the script; submit nothing, store nothing.")]


@launch.command()
def slurm(
    spec_path: SpecPath,
    workers: Workers = 4,
    time: Time = "1:00:00",
    partition: Partition = None,
    cpus_per_worker: Cpus = 1,
    gpus_per_worker: Gpus = 0,
    storage: Storage = None,
    artifacts: Artifacts = None,
    logs: Logs = Path("slurm"),
    name: Name = None,
    dry_run: DryRun = False,
) -> None:
    """Write a Slurm job array of `sweep run` workers (one per task) and submit it with sbatch.

    The study is made here first; each task is one worker on the shared storage, and together they
    run the study's exact total. A task that Slurm stops (its time limit, scancel, preemption) gets
    SIGTERM and queues its trial again; submit the same command again to finish.

    Example: sweep launch slurm studies/quickstart.yaml --workers 16 --time 2:00:00 --storage
    postgresql+psycopg://sweep@db/sweep --artifacts /shared/sweep-artifacts
    """
    from sweep.run.slurm import launch as launch_job

    launched = launch_job(
        spec_path,
        workers,
        time=time,
        partition=partition,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        storage=storage,
        artifacts=artifacts,
        logs=logs,
        name=name,
        dry_run=dry_run,
    )
    for note in launched.notes:
        typer.echo(note, err=True)
    if launched.job_id is None:
        typer.echo(launched.script, nl=False)
        return
    job, job_id = launched.job, launched.job_id
    typer.echo(f"submitted job array {job_id}: {job.workers} workers of study {job.study_name!r} ({launched.path})")
    typer.echo(f"  watch:  squeue -j {job_id}   and   sweep ls --storage '{job.storage}'")
    typer.echo(f"  logs:   {job.logs}/{launched.path.stem if launched.path else 'sweep'}-{job_id}_*.out")
    typer.echo(f"  cancel: scancel {job_id}   (running trials are queued again; submit again to finish)")
