"""What a study optimizes: its objectives (a metric and a direction each), its constraints, and how
trials of a study that Optuna's pruners cannot serve (several objectives) still stop early.

Optuna's pruners need one objective, reported every epoch. A study with several objectives keeps
each trial's validation curve in its record instead, and `CurveMedian` stops a trial whose best
validation exact match so far is below the median of the completed trials' curves at the same
epoch: MedianPruner's rule, on the curve rather than on the objective.
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sweep.store.records import TrialRecord

if TYPE_CHECKING:  # the CLI reads specs without loading torch
    from digitsum.train import EpochResult


class Name(str, enum.Enum):
    """A name from a spec, compared as an enum and written (JSON, f-strings) as its text."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Metric(Name):
    VAL_EXACT_MATCH = "val_exact_match"
    PROBE_EXACT_MATCH = "probe_exact_match"
    # over the probe rows whose answer occurs in the training rows (no ceiling from unseen sums)
    PROBE_IN_RANGE_EXACT_MATCH = "probe_in_range_exact_match"
    PROBE_IN_RANGE_LONGEST = "probe_in_range_longest"  # the same at the longest probe length alone
    N_PARAMETERS = "n_parameters"
    TRAIN_SECONDS = "train_seconds"
    SECONDS_TO_TARGET = "seconds_to_target"

    @property
    def is_accuracy(self) -> bool:
        return self is Metric.VAL_EXACT_MATCH or self.uses_probe

    @property
    def uses_probe(self) -> bool:
        return self in (Metric.PROBE_EXACT_MATCH, Metric.PROBE_IN_RANGE_EXACT_MATCH, Metric.PROBE_IN_RANGE_LONGEST)

    @property
    def natural_direction(self) -> Direction:
        return Direction.MAXIMIZE if self.is_accuracy else Direction.MINIMIZE


class Direction(Name):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


ACCURACY_METRICS = tuple(m.value for m in Metric if m.is_accuracy)


def epoch_accuracy(result: EpochResult, metric: Metric) -> float:
    """An accuracy metric at one epoch; NaN (Optuna fails such a trial) where the probe has no
    in-range rows to score."""
    if metric is Metric.VAL_EXACT_MATCH:
        return result.val_exact_match
    if metric is Metric.PROBE_EXACT_MATCH:
        assert result.probe_exact_match is not None, "fit scores the probe every epoch when it is given"
        return result.probe_exact_match
    assert result.probe is not None, "fit scores the probe every epoch when it is given"
    in_range = result.probe.in_range
    if in_range is None:
        return math.nan
    if metric is Metric.PROBE_IN_RANGE_EXACT_MATCH:
        return in_range.exact_match
    if metric is Metric.PROBE_IN_RANGE_LONGEST:
        longest = max(result.probe.by_length)
        return in_range.by_length.get(longest, math.nan)
    raise ValueError(f"{metric} is not an accuracy")


@dataclass(frozen=True)
class Objective:
    metric: Metric
    direction: Direction

    def to_dict(self) -> dict[str, str]:
        return {"metric": self.metric.value, "direction": self.direction.value}


@dataclass(frozen=True)
class Constraint:
    """A bound on a metric; the trial is feasible when ``low <= value <= high``."""

    metric: Metric
    low: float | None = None
    high: float | None = None

    def violation(self, value: float) -> float:
        """Optuna's constraint value: <= 0 when feasible, else how far outside the bound."""
        above = value - self.high if self.high is not None else -math.inf
        below = self.low - value if self.low is not None else -math.inf
        return max(above, below)

    @property
    def name(self) -> str:
        bounds = [
            f">= {self.low:g}" if self.low is not None else "",
            f"<= {self.high:g}" if self.high is not None else "",
        ]
        return f"{self.metric} {' and '.join(b for b in bounds if b)}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric.value, "min": self.low, "max": self.high}


def reports_per_epoch(goals: Sequence[Objective]) -> bool:
    """One accuracy objective, maximized: the only kind Optuna's pruners serve (via trial.report)."""
    return len(goals) == 1 and goals[0].metric.is_accuracy and goals[0].direction is Direction.MAXIMIZE


def feasible(trial: FrozenTrial) -> bool:
    """Whether a trial meets its study's constraints (Optuna's: every constraint value <= 0)."""
    return all(value <= 0 for value in trial.constraints.values())


def sign(direction: Direction | StudyDirection) -> float:
    """+1 for a maximized objective, -1 for a minimized one: ``sign * value`` is larger when better."""
    return 1.0 if direction in (Direction.MAXIMIZE, StudyDirection.MAXIMIZE) else -1.0


# ---------------------------------------------------------------------------------------------
# The best trial: one rule for `sweep best`, the report, `rerun --top`, the run's ledger and the API


def beats(a: tuple[float, int], b: tuple[float, int], direction: Direction | StudyDirection) -> bool:
    """One objective, (value, trial number) each: `a` has the better value, or the same value and a
    lower number (ties are common at 100% exact match; Optuna's best_trial orders them no set way)."""
    s = sign(direction)
    return s * a[0] > s * b[0] or (a[0] == b[0] and a[1] < b[1])


def ranked(
    trials: Iterable[FrozenTrial],
    direction: Direction | StudyDirection = Direction.MAXIMIZE,
    value: Callable[[FrozenTrial], float | None] | None = None,
) -> list[FrozenTrial]:
    """The trials that can be best, best first: complete, feasible (`feasible`) and with a value (``value``
    of a trial, by default its first objective's), ordered by it in ``direction``, ties to the lowest number."""
    of = value or _first_value
    scored: list[tuple[float, FrozenTrial]] = []
    for trial in trials:
        v = of(trial) if trial.state == TrialState.COMPLETE and feasible(trial) else None
        if v is not None and not math.isnan(v):
            scored.append((v, trial))
    s = sign(direction)
    return [t for _, t in sorted(scored, key=lambda pair: (-s * pair[0], pair[1].number))]


def _first_value(trial: FrozenTrial) -> float | None:
    return trial.values[0] if trial.values else None


def best_of(
    trials: Iterable[FrozenTrial],
    direction: Direction | StudyDirection = Direction.MAXIMIZE,
    value: Callable[[FrozenTrial], float | None] | None = None,
) -> FrozenTrial | None:
    """The best of these trials by `ranked`'s rule; None when none can be."""
    best = ranked(trials, direction, value)
    return best[0] if best else None


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The best trial of a one-objective study (`ranked`: complete, feasible, ties to the lowest number,
    the one whose checkpoint is kept); ValueError when there is none."""
    best = best_of(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), study.direction)
    if best is None:
        raise ValueError(f"study {study.study_name!r} has no complete feasible trial")
    return best


def best_numbers(study: optuna.Study) -> set[int]:
    """The best trial's number, or the Pareto set's with several objectives (feasible trials only)."""
    try:
        if len(study.directions) > 1:
            return {t.number for t in study.best_trials}
        return {best_trial(study).number}
    except ValueError:  # nothing complete (or feasible) yet
        return set()


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[Direction | StudyDirection]) -> bool:
    """True if values `a` are at least as good as `b` in every objective and better in one."""
    pairs = [(sign(d) * x, sign(d) * y) for d, x, y in zip(directions, a, b, strict=True)]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[Direction | StudyDirection]) -> list[int]:
    """The indices of the points no other point dominates, best first by the first objective.

    Sorted best first, a point can only be dominated by one before it, and then by one already on
    the front (dominance is transitive): each point is compared with the front, not with every point."""
    signs = [sign(d) for d in directions]
    order = sorted(range(len(points)), key=lambda i: [-s * v for s, v in zip(signs, points[i], strict=True)])
    front: list[int] = []
    for i in order:
        if not any(dominates(points[j], points[i], directions) for j in front):
            front.append(i)
    return front


def objectives_from_stored(stored: list[dict[str, str]] | None, metric: str) -> tuple[Objective, ...]:
    """A study's objectives as stored; a study made before objectives has its one metric, maximized."""
    if not stored:
        return (Objective(Metric(metric), Direction.MAXIMIZE),)
    return tuple(Objective(Metric(o["metric"]), Direction(o["direction"])) for o in stored)


def measures(record_values: dict[str, Any], accuracy: dict[Metric, float | None]) -> dict[Metric, float]:
    """Every metric of a finished trial: its accuracies and its costs. A target never reached costs
    an infinite time (Optuna accepts inf; such a trial is dominated on that objective)."""
    values: dict[Metric, float] = {m: v for m, v in accuracy.items() if v is not None}
    values[Metric.N_PARAMETERS] = float(record_values["n_parameters"])
    values[Metric.TRAIN_SECONDS] = float(record_values["train_seconds"])
    seconds = record_values.get("seconds_to_target")
    values[Metric.SECONDS_TO_TARGET] = math.inf if seconds is None else float(seconds)
    return values


@dataclass(frozen=True)
class CurveMedian:
    """Stop a trial whose best validation exact match so far is below the median of the completed
    trials' curves at the same epoch (after ``n_startup_trials`` completed, past ``n_warmup_steps``).

    With ``group_by`` (a spec's ``balance`` key, the model type), a trial is compared only with the
    completed trials of its own group: a cell that learns more slowly is not stopped for being slower
    than the others, which would starve it of trials in a comparison of equal budgets."""

    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    group_by: str | None = None

    def should_stop(self, study: optuna.Study, curve: list[float], params: dict[str, Any] | None = None) -> bool:
        epoch = len(curve)
        if epoch <= self.n_warmup_steps:
            return False
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if self.group_by is not None and params is not None:
            completed = [t for t in completed if t.params.get(self.group_by) == params.get(self.group_by)]
        if len(completed) < self.n_startup_trials:
            return False
        others = [c[epoch - 1] for c in (TrialRecord.read(t).val_curve for t in completed) if len(c) >= epoch]
        return bool(others) and max(curve) < statistics.median(others)
