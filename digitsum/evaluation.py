"""The tutorial's test script: a trained model's unrolled exact match on a CSV of rows, overall, per input
length and over the rows whose sum occurs in its own training rows ("in range"); and every seed of a
`train.n_seeds` run folder at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from digitsum.checkpoint import load_checkpoint
from digitsum.data import Rows, encode
from digitsum.datasets import training_answers
from digitsum.decode import Accuracy, accuracy, answers_in_range, score_models
from digitsum.errors import UsageError
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
    result = accuracy(model, encode(rows), answers_in_range(rows.y, seen) if seen is not None else None)
    return Evaluation(result, time.perf_counter() - start, seen)


@dataclass(frozen=True)
class SeedsEvaluation:
    seeds: list[int]  # from the run folder's seed-S/ checkpoints
    accuracies: list[Accuracy]  # one per seed, in the same order
    seconds: float


def evaluate_run(run_dir: Path, rows: Rows, device: torch.device) -> SeedsEvaluation:
    """Every seed of a `train.n_seeds` run folder on these rows, decoded at once (models of one shape)."""
    found = seed_checkpoints(run_dir)
    if not found:
        raise UsageError(f"{run_dir}: is a folder, not a checkpoint file (nor a train.n_seeds run: no seed-S/best.pt)")
    loaded = [load_checkpoint(path, device) for _, path in found]
    seen = [training_answers(payload["config"]) for _, payload in loaded]
    masks = [answers_in_range(rows.y, s) if s is not None else None for s in seen]
    data = encode(rows).to(device)
    start = time.perf_counter()
    scores = score_models([model for model, _ in loaded], data, masks)
    return SeedsEvaluation([seed for seed, _ in found], scores, time.perf_counter() - start)
