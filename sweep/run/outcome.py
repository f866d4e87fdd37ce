"""What a finished trial measured, and what its record stores of it: each metric's value (at the best
or the last epoch), and with ``train.n_seeds`` K > 1 (`digitsum.members`) the same over its seeds: the
spec's `SeedAggregate` (mean or min) of their accuracies, and costs that are the shared computation's
divided by K. `sweep rerun` measures its seeds with these functions too, so a trial's seeds and its
reruns compare."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna

from digitsum.data import Rows
from digitsum.decode import Accuracy, answers_in_range, score_models
from digitsum.train import EpochResult, FitResult, time_to_target
from sweep.spec.model import SeedAggregate, StudySpec, ValueFrom
from sweep.spec.objectives import Metric, Objective, epoch_accuracy, measures
from sweep.store.records import write_trial


def trial_value(fitted: FitResult, metric: Metric, value_from: ValueFrom) -> float:
    """The trial's value: the metric at the best epoch (chosen by validation) or at the last."""
    epoch = fitted.history[fitted.best_epoch - 1] if value_from is ValueFrom.BEST else fitted.history[-1]
    return epoch_accuracy(epoch, metric)


def trial_accuracies(
    fits: Sequence[FitResult], metrics: Sequence[Metric], value_from: ValueFrom, over: SeedAggregate
) -> dict[Metric, float | None]:
    """The value of validation exact match and of every accuracy among ``metrics``, over the seeds."""
    wanted = {Metric.VAL_EXACT_MATCH, *(m for m in metrics if m.is_accuracy)}
    return {metric: over.of([trial_value(f, metric, value_from) for f in fits]) for metric in wanted}


def epoch_over_seeds(results: list[EpochResult], over: SeedAggregate) -> EpochResult:
    """One epoch of K seeds as the trial's epoch: validation exact match aggregated, losses averaged,
    seconds each seed's share of the shared pass (what the trial's costs and time to target read)."""
    if len(results) == 1:
        return results[0]
    k, first = len(results), results[0]
    return EpochResult(
        first.epoch,
        statistics.fmean(r.train_loss for r in results),
        statistics.fmean(r.val_loss for r in results),
        over.of([r.val_exact_match for r in results]),
        first.seconds / k,
        first.learning_rate,
        first.train_seconds / k,
    )


def score_probe(fits: Sequence[FitResult], probe: Rows, train_rows: Sequence[Rows]) -> list[Accuracy]:
    """Each seed's best model on the probe, and on the probe rows whose sum occurs in its own training
    rows (``train_rows[k]``), all K decoded at once."""
    in_ranges: list[np.ndarray | None] = [answers_in_range(probe.y, rows.y) for rows in train_rows]
    return score_models([f.model for f in fits], probe, in_ranges)


def seed_outcome(
    fitted: FitResult,
    goals: Sequence[Objective],
    value_from: ValueFrom,
    target: float,
    share: float,
    probe: Accuracy | None,
) -> dict[str, Any]:
    """One seed's outcome with `RerunRecord`'s fields, and ``values`` by metric (a target never
    reached: None); ``share`` (1/K) of the shared computation's seconds is charged to it."""
    reached = time_to_target(fitted.history, target)
    cost = {
        "n_parameters": fitted.n_parameters,
        "train_seconds": round(share * sum(e.train_seconds for e in fitted.history), 4),
        "epoch_to_target": reached[0] if reached else None,
        "seconds_to_target": round(share * reached[1], 4) if reached else None,
    }
    accuracy = trial_accuracies([fitted], [g.metric for g in goals], value_from, SeedAggregate.MEAN)
    values = measures(cost, accuracy)
    return {
        "value": values[goals[0].metric],
        "values": {str(g.metric): values[g.metric] if math.isfinite(values[g.metric]) else None for g in goals},
        "val_exact_match": fitted.best_exact_match,
        "probe_exact_match": probe.exact_match if probe is not None else None,
        **(
            {"probe_in_range_by_length": by_length([probe.in_range.by_length], SeedAggregate.MEAN)}
            if probe is not None and probe.in_range is not None
            else {}
        ),
        "epochs": len(fitted.history),
        **cost,
    }


def record_run(trial: optuna.Trial, epochs: list[EpochResult], target: float) -> dict[str, Any]:
    """How far the trial trained and what it cost, whether it completed or was pruned; returns what it wrote."""
    if not epochs:
        write_trial(trial, epochs_run=0)
        return {"epochs_run": 0, "train_seconds": 0.0, "seconds_to_target": None}
    reached = time_to_target(epochs, target)
    cost = {
        "epochs_run": len(epochs),
        "seconds_per_epoch": round(sum(e.seconds for e in epochs) / len(epochs), 4),
        "train_seconds": round(sum(e.train_seconds for e in epochs), 4),
        "epoch_to_target": reached[0] if reached else None,
        "seconds_to_target": round(reached[1], 4) if reached else None,
    }
    write_trial(trial, **cost)
    return cost


def record_fit(
    trial: optuna.Trial,
    spec: StudySpec,
    fits: list[FitResult],
    seeds: list[int],
    probe: Rows | None,
    train_rows: list[Rows],
) -> None:
    """The trial's best-epoch scores and probe (over several seeds: their aggregate), and with several
    seeds each one's outcome under ``per_seed``."""
    over = spec.seed_aggregate
    probes: list[Accuracy | None] = [*score_probe(fits, probe, train_rows)] if probe is not None else [None] * len(fits)
    write_trial(
        trial,
        n_parameters=fits[0].n_parameters,
        best_epoch=fits[0].best_epoch,
        val_exact_match=over.of([f.best_exact_match for f in fits]),
        val_by_length=by_length([f.best_val_accuracy.by_length for f in fits if f.best_val_accuracy], over),
    )
    if len(fits) > 1:
        outcomes = [
            seed_outcome(f, spec.goals, spec.value_from, spec.target, 1 / len(fits), p)
            for f, p in zip(fits, probes, strict=True)
        ]
        write_trial(trial, per_seed={str(seed): o for seed, o in zip(seeds, outcomes, strict=True)})
    measured = [p for p in probes if p is not None]
    if not measured:
        return
    write_trial(
        trial,
        probe_exact_match=over.of([m.exact_match for m in measured]),
        probe_by_length=by_length([m.by_length for m in measured], over),
    )
    inside = [m.in_range for m in measured if m.in_range is not None]
    if inside and len(inside) == len(measured):
        write_trial(
            trial,
            probe_in_range_exact_match=over.of([m.exact_match for m in inside]),
            probe_in_range_by_length=by_length([m.by_length for m in inside], over),
        )


def by_length(per_seed: list[dict[int, float]], over: SeedAggregate) -> dict[str, float]:
    """Accuracy per input length, over the seeds that scored that length."""
    lengths = sorted({length for values in per_seed for length in values})
    return {str(n): round(over.of([v[n] for v in per_seed if n in v]), 5) for n in lengths}


def objective_values(
    trial: optuna.Trial, spec: StudySpec, fits: list[FitResult], cost: dict[str, Any]
) -> tuple[tuple[float, ...], bool]:
    """The trial's value per objective (over its seeds) and whether it is feasible; its constraints
    are set on the trial (Optuna's set_constraint)."""
    accuracies = trial_accuracies(fits, spec.measured, spec.value_from, spec.seed_aggregate)
    values = measures({"n_parameters": fits[0].n_parameters, **cost}, accuracies)
    violations = [constraint.violation(values[constraint.metric]) for constraint in spec.constraints]
    for constraint, violation in zip(spec.constraints, violations, strict=True):
        trial.set_constraint(constraint.name, violation)
    return tuple(values[goal.metric] for goal in spec.goals), all(v <= 0 for v in violations)
