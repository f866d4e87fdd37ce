"""A process's running view of a study's trials, kept up to date at a cost that does not grow with them.

The budget checks, the checkpoint clean-up and the monitor need counts, the best trial (or the
Pareto set) and the trials that just finished, several times per trial. `study.get_trials` builds a
sorted list of every trial on each call (2.3 ms at 10,000 trials on this machine), so asking it
made each trial slower than the last. Optuna's RDB storage already keeps each process's trials in a
cache that reads only what changed (new trials and unfinished ones); the ledger has the cache read,
then looks only at the trial numbers it has not seen yet and at the trials it last saw unfinished.
Finished trials never change, so each is counted once. Storages without that cache (a journal file)
fall back to one `get_trials` per look, which is linear in the study again.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from sweep.run.plateau import Plateau
from sweep.spec.model import StopRule
from sweep.spec.objectives import beats, dominates, feasible
from sweep.store.records import param_or_queued

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
OPEN = (TrialState.RUNNING, TrialState.WAITING)
CLAIMED = (*FINISHED, *OPEN)


def place(trial: FrozenTrial) -> int:
    """Where a trial stands in the budget's order: a retry stands where its original did."""
    original = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return trial.number if original is None else original


class Ledger:
    """Counts by state, claimed places, the best trial or Pareto set, and the trials seen finishing."""

    def __init__(self, study: optuna.Study, balance_key: str | None = None, stop: StopRule | None = None) -> None:
        self.study = study
        self.directions = list(study.directions)
        self.balance_key = balance_key
        self.finished = 0  # COMPLETE or PRUNED
        self.final = 0  # every trial in a final state (FAIL included)
        self.best: dict[int, FrozenTrial] = {}  # the best trial, or the Pareto set's trials
        self.unneeded: list[FrozenTrial] = []  # left `best`, or failed, since the caller last took them
        self.done: list[FrozenTrial] = []  # reached a final state, since the caller last took them
        self._claimed_places: list[int] = []  # sorted; finished trials only (open ones are few)
        self._choices: Counter[Any] = Counter()  # balance_key's value over finished trials
        self._open: dict[int, FrozenTrial] = {}  # number -> the trial as last seen, running or waiting
        self._holes: set[int] = set()  # numbers below _next not seen yet (created, not yet visible)
        self._next = 0  # every number below it is final, open or a hole
        self.read_at = float("-inf")  # time.monotonic() of the last refresh
        self.plateau = Plateau(stop, self.directions) if stop is not None else None  # the spec's stop rule

    # Reading -------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read what changed; the trials that reached a final state are added to `done`."""
        self.read_at = time.monotonic()
        trials = _cached_trials(self.study)
        if trials is None:
            trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        for number in sorted((*self._open, *self._holes)):
            self._look(trials.get(number), number)
        new = len(trials) - self.final - len(self._open)  # trials numbered _next or more
        while new > 0:
            trial = trials.get(self._next)
            new -= trial is not None
            self._look(trial, self._next)
            self._next += 1

    def _look(self, trial: FrozenTrial | None, number: int) -> None:
        if trial is None:
            self._holes.add(number)
            return
        self._holes.discard(number)
        if trial.state in OPEN:
            self._open[number] = trial
            return
        self._open.pop(number, None)
        self.final += 1
        self.done.append(trial)
        if trial.state in FINISHED:
            self.finished += 1
            bisect.insort(self._claimed_places, place(trial))
            if self.balance_key is not None:
                self._choices[param_or_queued(trial, self.balance_key)] += 1
        entered = False
        if trial.state == TrialState.COMPLETE and trial.values and feasible(trial):
            entered = self._consider(trial)
        elif trial.state == TrialState.FAIL:
            self.unneeded.append(trial)
        if self.plateau is not None and trial.state in FINISHED:
            self.plateau.see(trial, self.best.values() if entered else None)

    def _consider(self, trial: FrozenTrial) -> bool:
        """Update the best trial (one objective) or the Pareto set (several) with a complete feasible
        trial; True if it entered."""
        if not self.would_be_best(trial.number, trial.values, is_feasible=True):
            return False
        if len(self.directions) == 1:
            self.unneeded.extend(self.best.values())
            self.best = {trial.number: trial}
            return True
        beaten = [b for b in self.best.values() if dominates(trial.values, b.values, self.directions)]
        for b in beaten:
            del self.best[b.number]
        self.unneeded.extend(beaten)
        self.best[trial.number] = trial
        return True

    # Asking --------------------------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        """The stop rule says the search stopped improving: no new trial starts."""
        return self.plateau is not None and self.plateau.reached

    @property
    def waiting(self) -> int:
        return sum(t.state == TrialState.WAITING for t in self._open.values())

    @property
    def claimed(self) -> int:
        """Finished, running or waiting: the trials that count against the budget."""
        return len(self._claimed_places) + len(self._open)

    def open_trials(self, state: TrialState | None = None) -> list[FrozenTrial]:
        return [t for t in self._open.values() if state is None or t.state == state]

    def knows(self, number: int) -> bool:
        """True if the last refresh saw trial `number` (open or final)."""
        return number < self._next and number not in self._holes

    def open_trial(self, number: int) -> FrozenTrial | None:
        return self._open.get(number)

    def claimed_before(self, number: int) -> int:
        """Claimed trials other than `number` that stand before it in the budget's order."""
        finished = bisect.bisect_left(self._claimed_places, number)
        return finished + sum(1 for t in self._open.values() if t.number != number and place(t) < number)

    def choice_counts(self) -> Counter[Any]:
        """How often each value of `balance_key` was claimed (finished, running or queued)."""
        assert self.balance_key is not None
        counts = Counter(self._choices)
        counts.update(param_or_queued(t, self.balance_key) for t in self._open.values())
        return counts

    def would_be_best(self, number: int, values: Sequence[float], is_feasible: bool) -> bool:
        """Would a trial with these values enter the best set as last read? When the read is old the
        answer can be a yes that a later trial overturns, never a wrong no (the best only improves)."""
        if not is_feasible:
            return False
        if len(self.directions) == 1:
            current = next(iter(self.best.values()), None)
            return current is None or beats((values[0], number), _key(current), self.directions[0])
        return not any(dominates(b.values, values, self.directions) for b in self.best.values())

    def take_done(self) -> list[FrozenTrial]:
        """The trials that reached a final state since the last call, by whichever refresh saw them."""
        taken, self.done = self.done, []
        return taken

    def take_unneeded(self) -> list[FrozenTrial]:
        """The trials whose checkpoints no best trial needs any more, as seen since the last call."""
        taken, self.unneeded = self.unneeded, []
        return taken


def _key(trial: FrozenTrial) -> tuple[float, int]:
    return trial.values[0], trial.number


def _cached_trials(study: optuna.Study) -> Mapping[int, FrozenTrial] | None:
    """The trials of Optuna's per-process cache (number -> trial) after it read what changed; None for
    a storage without one. Private to Optuna (5.0): tests/test_ledger.py fails if it goes away."""
    storage = study._storage
    read = getattr(storage, "_read_trials_from_remote_storage", None)
    studies = getattr(storage, "_studies", None)
    if read is None or studies is None:
        return None
    read(study._study_id)
    return studies[study._study_id].trials
