"""The tutorial's test script: a trained model's unrolled exact match on a CSV of rows, overall, per input
length and over the rows whose sum occurs in its own training rows ("in range"); every seed of a
`train.n_seeds` run folder at once; and the length curve, in-range exact match far past the training
lengths on strings drawn for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from digitsum.checkpoint import load_checkpoint
from digitsum.data import Rows, make_in_range_rows
from digitsum.datasets import training_answers
from digitsum.decode import Accuracy, answers_in_range, score_models
from digitsum.errors import UsageError
from digitsum.lengths import CURVE_LENGTHS, HOLD_LEVEL, IN_RANGE_SAMPLE, holds_up_to
from digitsum.model import DigitSumModel
from digitsum.runs import seed_checkpoints


@dataclass(frozen=True)
class Evaluation:
    accuracy: Accuracy
    seconds: float
    training_sums: np.ndarray | None  # the digit sums the model trained on; None where they cannot be rebuilt


def evaluate_model(model: DigitSumModel, config_values: dict[str, Any], rows: Rows) -> Evaluation:
    """A checkpoint's model (and the config it stored) on these rows; in range by its own training rows."""
    seen = training_answers(config_values)
    start = time.perf_counter()
    result = score_models([model], rows, [answers_in_range(rows.y, seen) if seen is not None else None])[0]
    return Evaluation(result, time.perf_counter() - start, seen)


@dataclass(frozen=True)
class SeedsEvaluation:
    seeds: list[int]  # from the run folder's seed-S/ checkpoints
    accuracies: list[Accuracy]  # one per seed, in the same order
    seconds: float


def evaluate_run(run_dir: Path, rows: Rows, device: torch.device) -> SeedsEvaluation:
    """Every seed of a `train.n_seeds` run folder on these rows, decoded at once (models of one shape)."""
    loaded = load_models(run_dir, device)
    seen = [training_answers(payload["config"]) for _, payload in loaded]
    masks = [answers_in_range(rows.y, s) if s is not None else None for s in seen]
    start = time.perf_counter()
    scores = score_models([model for model, _ in loaded], rows, masks)
    return SeedsEvaluation(_seeds(loaded), scores, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# The length curve: in-range exact match against input length, far past the training lengths


@dataclass(frozen=True)
class LengthCurve:
    """Each model's in-range exact match at each length, on ``sample`` strings per length drawn uniformly
    among those whose digit sum every model saw in training (`digitsum.in_range`)."""

    lengths: list[int]
    seeds: list[int]  # the models' train.seed, in order
    exact_match: list[list[float]]  # [model][length]
    sample: int
    sums: list[int]  # the digit sums the strings were drawn among
    seconds: float

    def holds_up_to(self, level: float = HOLD_LEVEL) -> list[int | None]:
        """Per model, the longest length up to which every length scored is at or above ``level``;
        None where the shortest already falls below it."""
        return [holds_up_to(self.lengths, values, level) for values in self.exact_match]


def length_curve(
    loaded: list[tuple[DigitSumModel, dict[str, Any]]],
    lengths: tuple[int, ...] = CURVE_LENGTHS,
    sample: int = IN_RANGE_SAMPLE,
    seed: int = 0,
) -> LengthCurve:
    """The length curve of these models (checkpoints of one shape: one model, or a run's seeds), each
    length's strings decoded for all of them at once, a block of rows at a time."""
    seen = [training_answers(payload["config"]) for _, payload in loaded]
    if any(s is None for s in seen):
        raise UsageError(
            "the model's training rows cannot be rebuilt here (its training CSV is missing), so its sums are unknown"
        )
    sums = sorted(set.intersection(*(set(np.unique(s).tolist()) for s in seen if s is not None)))
    models = [model for model, _ in loaded]
    start = time.perf_counter()
    values: list[list[float]] = [[] for _ in models]
    for length in lengths:
        rows = make_in_range_rows([length], sums, sample, seed)
        for k, accuracy in enumerate(score_models(models, rows, [None] * len(models))):
            values[k].append(accuracy.exact_match)
    return LengthCurve(list(lengths), _seeds(loaded), values, sample, sums, time.perf_counter() - start)


def _seeds(loaded: list[tuple[DigitSumModel, dict[str, Any]]]) -> list[int]:
    return [int(payload["config"]["train"]["seed"]) for _, payload in loaded]


def load_models(path: Path, device: torch.device) -> list[tuple[DigitSumModel, dict[str, Any]]]:
    """A checkpoint file's model, or every seed's of a `train.n_seeds` run folder, by seed."""
    if not path.is_dir():
        return [load_checkpoint(path, device)]
    found = seed_checkpoints(path)
    if not found:
        raise UsageError(f"{path}: is a folder, not a checkpoint file (nor a train.n_seeds run: no seed-S/best.pt)")
    return [load_checkpoint(checkpoint, device) for _, checkpoint in found]
