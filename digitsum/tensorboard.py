"""TensorBoard event files of a training run, through torch.utils.tensorboard.

The `tensorboard` package is an optional extra (`pip install 'digitsum-sweep[tensorboard]'`; never
TensorFlow). Without it `missing()` gives the one line that says so and no event files are written:
training never fails for want of it. Loaded lazily, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from digitsum.data import Encoded
    from digitsum.decode import Accuracy
    from digitsum.model import DigitSumModel

MISSING = "no TensorBoard event files: tensorboard is not installed (pip install 'digitsum-sweep[tensorboard]')"

# history.csv's columns -> their scalar tags (TensorBoard groups a tag's cards by the part before "/")
SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "val_exact_match": "exact_match/val",
    "learning_rate": "learning_rate",
    "seconds": "seconds/epoch",
    "train_seconds": "seconds/train",
}
EXAMPLES = "examples"  # the text tag of the decoded examples
N_EXAMPLES = 8  # validation rows decoded each epoch: one greedy pass over 8 rows, a few milliseconds
HPARAM_VALUE = (bool, int, float, str)  # what TensorBoard's HParams view takes; other values go as text


class Epoch(Protocol):
    """What the log reads of an epoch (digitsum.train.EpochResult, which imports this module), and SCALARS' columns."""

    @property
    def epoch(self) -> int: ...
    @property
    def val_exact_match(self) -> float: ...
    @property
    def probe(self) -> Accuracy | None: ...
    @property
    def probe_exact_match(self) -> float | None: ...


@functools.cache
def missing() -> str | None:
    """None where torch.utils.tensorboard loads and makes every summary a run writes; else the one line
    saying why no event files are written."""
    try:
        summary = importlib.import_module("torch.utils.tensorboard.summary")
        # what loads lazily, at a run's end: tensorboard < 2.18 fails here under NumPy 2 (np.string_)
        summary.hparams({"key": 1}, {"metric": 0.0})
        summary.text(EXAMPLES, "text")
    except ImportError:
        return MISSING
    except Exception as error:  # a broken install (a protobuf or NumPy that does not fit) must not stop training
        return (
            f"no TensorBoard event files: the tensorboard package does not work here ({type(error).__name__}: {error})"
        )
    return None


class EventLog:
    """One run's event files: scalars every epoch, a few decoded examples, and its hparams at the end."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self.writer = SummaryWriter(log_dir=str(folder))
        self.best: Epoch | None = None
        self.epochs = 0
        self.examples: torch.Tensor | None = None  # the validation rows decoded as examples

    def epoch(self, result: Epoch, val: Accuracy, model: DigitSumModel, data: Encoded) -> None:
        """Write one epoch: history.csv's columns, exact match per input length (validation and probe), examples."""
        step, add = result.epoch, self.writer.add_scalar
        for column, tag in SCALARS.items():
            add(tag, getattr(result, column), step)
        for length, value in val.by_length.items():
            add(f"val_by_length/{length}", value, step)
        probe = result.probe
        if probe is not None:
            add("exact_match/probe", probe.exact_match, step)
            for length, value in probe.by_length.items():
                add(f"probe_by_length/{length}", value, step)
            for length, value in (probe.in_range.by_length if probe.in_range else {}).items():
                add(f"probe_in_range_by_length/{length}", value, step)
        self.writer.add_text(EXAMPLES, self._examples(model, data), step)
        self.epochs += 1
        if self.best is None or result.val_exact_match > self.best.val_exact_match:
            self.best = result

    def _examples(self, model: DigitSumModel, data: Encoded) -> str:
        """A Markdown table of a few validation rows (the same ones every epoch): input, answer, decoded."""
        import torch

        from digitsum.decode import answers_to_text, greedy_decode

        if self.examples is None:
            chosen = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:N_EXAMPLES]
            self.examples = chosen[torch.argsort(data.input_lengths[chosen].cpu(), stable=True)]
        rows = data.take(self.examples.to(data.inputs.device))
        decoded = answers_to_text(greedy_decode(model, rows))
        lines = ["| input | sum | decoded | right |", "|---|---|---|---|"]
        for tokens, length, answer, text in zip(
            rows.inputs.tolist(), rows.input_lengths.tolist(), rows.sums.tolist(), decoded, strict=True
        ):
            mark = "yes" if text == str(answer) else "no"
            lines.append(f"| {''.join(map(str, tokens[:length]))} | {answer} | {text or '(none)'} | {mark} |")
        return "\n".join(lines)

    def close(self, hparams: dict[str, Any], state: str) -> None:
        """Write the run's hparams and its best epoch's measures (HParams view), then close the files."""
        values = {k: v if isinstance(v, HPARAM_VALUE) else str(v) for k, v in hparams.items() if v is not None}
        best = self.best
        metrics: dict[str, float] = {"hparams/epochs": self.epochs}
        if best is not None:
            metrics |= {"hparams/best_val_exact_match": best.val_exact_match, "hparams/best_epoch": best.epoch}
            if best.probe_exact_match is not None:
                metrics["hparams/probe_exact_match"] = best.probe_exact_match
        # "." keeps the hparams in this run's folder (add_hparams' default is a new run per call)
        self.writer.add_hparams({**values, "state": state}, metrics, run_name=".")
        self.writer.close()


def open_log(folder: Path) -> EventLog | None:
    """An event log writing into ``folder``; None where the tensorboard package is missing (see `missing`)."""
    return EventLog(folder) if missing() is None else None


def outcome(error: BaseException | None) -> str:
    """The run's state in its hparams: complete, interrupted (Ctrl-C) or failed."""
    if error is None:
        return "complete"
    return "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"


@contextlib.contextmanager
def recording(
    folder: Path | None, hparams: dict[str, Any], state_of: Callable[[BaseException | None], str] = outcome
) -> Iterator[EventLog | None]:
    """An event log for the block, closed with ``hparams`` and the block's outcome (``state_of`` names
    it) however it ends; None when ``folder`` is None or the package is missing."""
    log = open_log(folder) if folder is not None else None
    if log is None:
        yield None
        return
    try:
        yield log
    except BaseException as error:
        log.close(hparams, state_of(error))
        raise
    log.close(hparams, state_of(None))
