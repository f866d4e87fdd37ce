"""The toolkit from Python (a notebook, a script): run a study, read its best trial, write a report,
load a checkpoint and predict. The same calls as the `sweep` commands, returning values instead of
printing; errors a user can fix raise `digitsum.errors.UsageError` with the same one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from digitsum.model import DigitSumModel


def run(
    spec: str | Path,
    *,
    storage: str | None = None,
    name: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    threads: int | None = None,
    artifacts: str | Path | None = None,
) -> optuna.Study:
    """Run (or resume) a study from a spec file or a shipped spec's name, like `sweep run`."""
    from sweep.commands import prepare
    from sweep.run import run_study

    plan, _ = prepare(
        spec,
        storage,
        name=name,
        trials=trials,
        timeout=timeout,
        workers=workers,
        threads=threads,
        artifacts=str(artifacts) if artifacts else None,
    )
    return run_study(plan)


def best(name: str, storage: str | None = None) -> dict[str, Any]:
    """The best trial as `sweep best --json` gives it (the Pareto set, for several objectives)."""
    from sweep.commands import best_summary, open_store, pareto_summary
    from sweep.storage import load_study

    study = load_study(name, open_store(storage))
    return pareto_summary(study) if len(study.directions) > 1 else best_summary(study)


def report(names: list[str], out: str | Path | None = None, storage: str | None = None) -> Path:
    """Write the HTML report of one or more studies, like `sweep report`; returns its path."""
    from sweep.commands import report as write

    path, _ = write(names, Path(out) if out else None, storage, attach=True)
    return path


def load_model(
    checkpoint: str | Path, device: str = "cpu", storage: str | None = None, artifacts: str | None = None
) -> DigitSumModel:
    """A checkpoint's model, ready to predict (in eval mode): a file, or ``STUDY:TRIAL`` (``STUDY:best``)
    fetched from the study's artifact store."""
    from digitsum.checkpoint import load_checkpoint
    from digitsum.device import resolve_device
    from sweep.commands import checkpoint_file

    where = resolve_device(device, "device")
    with checkpoint_file(str(checkpoint), storage, artifacts) as path:
        model, _ = load_checkpoint(path, where)
    return model


def predict(model: DigitSumModel, sequences: list[str]) -> list[str | None]:
    """Each digit string's decoded answer (greedy, token by token); None where it wrote no answer."""
    from digitsum.data import encode_prompts
    from digitsum.decode import answers_to_text, greedy_decode

    return answers_to_text(greedy_decode(model, encode_prompts(sequences)))
