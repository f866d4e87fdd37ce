"""What `sweep run` prints while its workers train: a progress bar and one line per finished trial."""

from __future__ import annotations

from types import TracebackType

from optuna.trial import FrozenTrial, TrialState
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sweep.run.ledger import FINISHED
from sweep.store.records import TrialRecord, model_type


class TrialPrinter:
    """A context manager around rich's progress bar; `on_trial` is `run_study`'s callback."""

    def __init__(self, study_name: str, n_trials: int, finished: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        self.task = self.progress.add_task(study_name, total=n_trials, completed=min(finished, n_trials))

    def __enter__(self) -> TrialPrinter:
        self.progress.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.__exit__(kind, error, tb)

    def stop(self) -> None:
        self.progress.stop()

    def on_trial(self, trial: FrozenTrial, best: float | None) -> None:
        record = TrialRecord.read(trial)
        if record.surplus:
            return
        self.progress.console.print(trial_line(trial, record, best), highlight=False, markup=False)
        if trial.state in FINISHED:
            self.progress.advance(self.task)


def trial_line(trial: FrozenTrial, record: TrialRecord, best: float | None) -> str:
    """``trial    3  gru   COMPLETE  value 0.9950  best 0.9950  epochs  15    12.3s``."""
    started, completed = trial.datetime_start, trial.datetime_complete
    seconds = (completed - started).total_seconds() if started and completed else 0.0
    value = ", ".join(f"{v:.4g}" if abs(v) >= 10 else f"{v:.4f}" for v in trial.values) if trial.values else "-"
    curve = trial.intermediate_values or dict(enumerate(record.val_curve, start=1))
    if trial.state == TrialState.PRUNED and curve:
        value = f"{curve[max(curve)]:.4f}"
    best_text = f"{best:.4f}" if best is not None else "-"
    reason = record.fail_reason or record.pruned_reason or ""
    return (
        f"trial {trial.number:4d}  {model_type(trial):4s}  {trial.state.name:8s}  value {value}  best {best_text}  "
        f"epochs {record.epochs_run:3d}  {seconds:6.1f}s" + (f"  ({reason})" if reason else "")
    )
