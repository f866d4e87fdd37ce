"""The options several commands share, declared once (Typer's `Annotated` style), and their caps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


class Seeds(tuple[int, ...]):
    """Comma-separated integers from the command line, e.g. ``--seeds 0,1,2``."""


def parse_seeds(text: str) -> Seeds:
    try:
        return Seeds(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected integers separated by commas, like 0,1,2") from None


MAX_SAMPLE = 10_000_000  # rows per length: more would not fit in memory as the tensors training makes
MAX_TRIALS = 1_000_000  # a study's total; a typo of more would run for years
MAX_PROCESSES = 1024  # worker processes, or torch threads

STORAGE_HELP = (
    "Optuna storage URL (default: $SWEEP_STORAGE, else sweep.db in the nearest studies/ folder at or above the "
    "working directory, else in ~/.local/share/digitsum-sweep); journal:FILE for a journal file."
)
Storage = Annotated[str | None, typer.Option(help=STORAGE_HELP)]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, ...")]
StudyName = Annotated[str, typer.Argument(help="Study name.")]
SpecPath = Annotated[Path, typer.Argument(metavar="STUDY.yaml", help="A study spec, e.g. studies/quickstart.yaml.")]
CheckpointArg = Annotated[
    str,
    typer.Argument(
        metavar="CHECKPOINT",
        help="A checkpoint file (a best.pt of `sweep train`), or STUDY:TRIAL (STUDY:best) from the artifact store.",
    ),
]
ARTIFACTS_HELP = (
    "Where checkpoints are stored: a folder (shared by every machine of a study) or s3://BUCKET/PREFIX "
    "(AWS_* variables configure it). Default: the store the study recorded when it was made, else "
    "$SWEEP_ARTIFACTS, else artifacts/ beside the storage file; a new study on PostgreSQL needs one given."
)
Artifacts = Annotated[str | None, typer.Option(help=ARTIFACTS_HELP)]
Oversubscribe = Annotated[
    bool, typer.Option("--oversubscribe", help="Run more threads in all than this machine has cores.")
]
TensorboardDir = Annotated[
    Path | None,
    typer.Option(
        "--tensorboard",
        metavar="DIR",
        help="Write a TensorBoard run per trial under DIR/STUDY/ (as the spec's tensorboard: key does); "
        "needs the tensorboard extra.",
    ),
]
