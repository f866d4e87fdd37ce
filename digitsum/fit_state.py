"""A fit's state between two epochs: all that `digitsum.train.fit` needs to go on as if it had never
stopped: each member's config (population-based training changes them), the stacked weights, AdamW's
step and moments, each member's row-order stream and the shared random stream, and each member's
history and best epoch so far.

Saved as tensors, numbers, strings, lists and dicts only, and loaded with ``weights_only=True``, as a
checkpoint is (`digitsum.checkpoint`): a state file is data, never code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from digitsum import config as cfg
from digitsum.config import Config
from digitsum.decode import Accuracy


@dataclass
class BestState:
    """One member's history and best epoch so far (`digitsum.train._Best`), with its best weights."""

    history: list[Any]  # EpochResults (dicts of their fields once saved; `digitsum.train.epoch_results`)
    epoch: int
    exact_match: float
    model: dict[str, torch.Tensor] | None  # the best epoch's DigitSumModel state_dict
    accuracy: dict[str, Any] | None


@dataclass
class FitState:
    epoch: int  # the last epoch trained: a resumed fit starts at the next
    indices: list[int]  # the members still training, by their index among those fit was given
    configs: list[Config]  # each training member's, as it is now
    weights: list[torch.Tensor]  # the stack's parameters, in order
    steps: int
    exp_avgs: list[torch.Tensor]
    exp_avg_sqs: list[torch.Tensor]
    generators: list[torch.Tensor]  # each training member's row-order stream
    rng: torch.Tensor  # the shared stream (dropout, state noise)
    bests: list[BestState]  # every member's, training or not


def save_state(state: FitState, path: str | Path) -> None:
    payload = dataclasses.asdict(state)  # EpochResults and their Accuracy become dicts too
    payload["configs"] = [config.to_dict() for config in state.configs]
    torch.save(payload, Path(path))


def load_state(path: str | Path) -> FitState:
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    payload["configs"] = [cfg.from_dict(values) for values in payload["configs"]]
    payload["bests"] = [BestState(**best) for best in payload["bests"]]
    return FitState(**payload)


def accuracy_dict(accuracy: Accuracy | None) -> dict[str, Any] | None:
    return dataclasses.asdict(accuracy) if accuracy is not None else None


def accuracy_of(values: dict[str, Any] | None) -> Accuracy | None:
    if values is None:
        return None
    return Accuracy(
        values["exact_match"],
        values["n_rows"],
        {int(k): v for k, v in values["by_length"].items()},
        {int(k): v for k, v in values["rows_by_length"].items()},
        accuracy_of(values.get("in_range")),
    )
