"""The study's budget: `--trials N` is its total of finished trials, whichever worker ran them.

Before each trial a worker counts the trials that are finished, running or waiting; a trial that
was asked for when the budget was already taken (two workers asking at the same instant) is failed
at once and marked ``surplus``. Workers that find no trial left to start wait for the running ones,
so a trial of a worker that dies is still retried and the total stays exact.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection

import optuna
from optuna.trial import TrialState

from sweep.run.ledger import Ledger, place
from sweep.spec.model import Param
from sweep.store.records import write_trial


class Step(enum.Enum):
    """What a worker does next."""

    RUN = "run"  # start a trial
    WAIT = "wait"  # others' trials may still need a retry
    DONE = "done"  # the budget is finished


def next_step(ledger: Ledger, n_trials: int, mine: Collection[int] = ()) -> Step:
    """What to do next, by the ledger as last read and the trials this worker started since (`mine`):
    they are claimed whether the ledger saw them or not, and none of them is waiting any more."""
    if ledger.finished >= n_trials or ledger.stopped:
        return Step.DONE
    unseen = sum(not ledger.knows(number) for number in mine)
    waiting = sum(t.number not in mine for t in ledger.open_trials(TrialState.WAITING))
    if waiting or ledger.claimed + unseen < n_trials:
        return Step.RUN
    return Step.WAIT


def room(ledger: Ledger, n_trials: int, mine: Collection[int] = ()) -> int:
    """How many trials a worker may ask for now (a stack's size at most): the budget's unclaimed places
    as the ledger last read them, and the trials queued for anyone."""
    unseen = sum(not ledger.knows(number) for number in mine)
    waiting = sum(t.number not in mine for t in ledger.open_trials(TrialState.WAITING))
    return max(0, n_trials - ledger.claimed - unseen) + waiting


def mark_surplus(trial: optuna.Trial) -> None:
    """Asked for when the budget was already taken: not a real trial."""
    write_trial(trial, surplus=True)


class _Surplus(Exception):
    """The study's budget was already taken when this trial was asked for."""


def over_budget(ledger: Ledger, number: int, n_trials: int) -> bool:
    """True if `n_trials` claimed trials stand before trial `number` (never true for a retry)."""
    if number < n_trials:
        return False  # each place before it holds at most one claimed trial: nothing to read
    ledger.refresh()
    me = ledger.open_trial(number)
    if me is None or place(me) != number:
        return False  # a retry replaces a trial that was already counted
    return ledger.claimed_before(number) >= n_trials


TrialValues = float | tuple[float, ...]


def budgeted(
    objective: Callable[[optuna.Trial], TrialValues],
    n_trials: int,
    ledger: Ledger,
    started: Callable[[int], None] = lambda number: None,
    failed: Callable[[optuna.Trial, Exception], None] = lambda trial, error: None,
) -> Callable[[optuna.Trial], TrialValues]:
    """Run `objective` only within the study's budget, and keep the reason of any failure.

    The budget is checked when the trial starts and again when it ends: failing a stale trial and
    queueing its retry are two writes, and a worker that counted between them can start a trial
    too many; by its end the retry is visible and the extra trial is failed as surplus.
    """

    def surplus(trial: optuna.Trial) -> _Surplus:
        mark_surplus(trial)
        return _Surplus(f"the study already has {n_trials} trials")

    def guarded(trial: optuna.Trial) -> TrialValues:
        started(trial.number)
        if over_budget(ledger, trial.number, n_trials):
            raise surplus(trial)
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            if over_budget(ledger, trial.number, n_trials):
                raise surplus(trial) from None
            raise
        except KeyboardInterrupt:
            raise
        except Exception as error:  # Optuna stores a FAIL without the reason; keep it on the trial
            write_trial(trial, fail_reason=f"{type(error).__name__}: {' '.join(str(error).split())[:300]}")
            failed(trial, error)
            raise
        if over_budget(ledger, trial.number, n_trials):
            raise surplus(trial)
        return value

    return guarded


def enqueue_balanced(study: optuna.Study, param: Param, ledger: Ledger) -> None:
    """Queue the least-tried choice of `param` (equal budgets per model type); the sampler fills in the rest."""
    if ledger.waiting:
        return  # a queued trial (a retry, or another worker's pick) goes first
    counts = ledger.choice_counts()
    choices = list(param.choices or ())
    choice = min(choices, key=lambda c: (counts[c], choices.index(c)))
    study.enqueue_trial({param.key: choice})
