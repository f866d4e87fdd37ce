"""What a finished trial measured: each metric's value (at the best or the last epoch), and with
``train.n_seeds`` K > 1 (`digitsum.members`) the same over its seeds: the spec's `SeedAggregate`
(mean or min) of their accuracies, and costs that are the shared computation's divided by K.
`sweep rerun` measures its seeds with these functions too, so a trial's seeds and its reruns compare."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from digitsum.data import Rows, encode
from digitsum.decode import Accuracy, answers_in_range, score_models
from digitsum.train import EpochResult, FitResult, time_to_target
from sweep.spec.model import SeedAggregate, ValueFrom
from sweep.spec.objectives import Metric, Objective, epoch_accuracy, measures


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
    device = next(fits[0].model.parameters()).device
    return score_models([f.model for f in fits], encode(probe).to(device), in_ranges)


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
        "epochs": len(fitted.history),
        **cost,
    }
