"""The stop rule (a spec's ``stop:``): a search ends once it stops improving.

It counts finished trials (complete or pruned) in the order the ledger sees them finish, from the
first trial that completes and meets the constraints; a trial that improves the best value by more
than ``min_delta`` sets the count back to zero, and once it reaches ``patience`` no new trial
starts. With several objectives the gain is the growth of the Pareto front's hypervolume, as a
share of it. Each trial costs O(1): the hypervolume is computed only when a trial enters the
front, over the front (a few trials), never over the study.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from optuna._hypervolume import compute_hypervolume  # private (Optuna 5.1): tests/test_plateau.py checks it
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from sweep.spec.model import StopRule
from sweep.spec.objectives import sign


class Plateau:
    """How many finished trials in a row brought no gain, by the rule's measure."""

    def __init__(self, rule: StopRule, directions: Sequence[StudyDirection]) -> None:
        self.rule = rule
        self.signs = np.array([sign(d) for d in directions])
        self.since_gain = 0  # finished trials since the last gain (or the start)
        self.reference: float | None = None  # one objective: the value of the last gain
        self.gained_by: FrozenTrial | None = None  # the trial of the last gain
        self._front_at_gain: np.ndarray | None = None  # several: the front's losses at the last gain
        self._worst: np.ndarray | None = None  # several: the worst loss seen per objective

    @property
    def reached(self) -> bool:
        return self.since_gain >= self.rule.patience

    def see(self, trial: FrozenTrial, front: Iterable[FrozenTrial] | None) -> None:
        """A trial finished; ``front`` is the best set after it when it entered it, else None."""
        if trial.values is not None and len(self.signs) > 1:
            self._note_worst(trial)
        gained = front is not None and (self._gain(trial) if len(self.signs) == 1 else self._front_gain(front))
        if gained:
            self.since_gain, self.gained_by = 0, trial
        elif self.gained_by is not None:  # before the first complete (feasible) trial there is nothing to improve on
            self.since_gain += 1

    def _gain(self, trial: FrozenTrial) -> bool:
        value = trial.values[0]
        if self.reference is not None and self.signs[0] * (value - self.reference) <= self.rule.min_delta:
            return False
        self.reference = value
        return True

    def _note_worst(self, trial: FrozenTrial) -> None:
        loss = -self.signs * np.array(trial.values, dtype=float)
        self._worst = loss if self._worst is None else np.maximum(self._worst, loss)

    def _front_gain(self, front: Iterable[FrozenTrial]) -> bool:
        losses = np.array([-self.signs * np.array(t.values, dtype=float) for t in front])
        if self._front_at_gain is None:
            self._front_at_gain = losses
            return True
        assert self._worst is not None, "a trial in the front was seen"
        # the reference point lies 10% beyond the worst loss seen, so that no front point adds nothing
        span = self._worst - np.minimum(losses.min(axis=0), self._front_at_gain.min(axis=0))
        reference = self._worst + 0.1 * span + 1e-12 * (1 + np.abs(self._worst))
        now = compute_hypervolume(losses, reference)
        before = compute_hypervolume(self._front_at_gain, reference)
        if now - before <= self.rule.min_delta * now:
            return False
        self._front_at_gain = losses
        return True

    def reason(self, metric: str) -> str:
        """Why the search ended, in one line."""
        rule = self.rule
        if len(self.signs) > 1:
            measure = f"growth of the Pareto front's hypervolume above {rule.min_delta:.2%}"
        else:
            measure = f"gain in {metric} above {rule.min_delta:g}"
        last = f"; the last gain came from trial {self.gained_by.number}" if self.gained_by is not None else ""
        return f"stopped improving: no {measure} over the last {self.since_gain} finished trials (stop.patience){last}"
