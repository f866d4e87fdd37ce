"""The rows a run trains, validates and probes on, made once per process for each data setting.

Trials of a sweep share their data: the split depends only on the dataset, the lengths, the
split fraction and the seed, and the probe only on its lengths and sample size.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from digitsum.config import TrainConfig, from_dict
from digitsum.data import Rows, make_in_range_rows, make_rows, read_csv, stratified_split
from digitsum.errors import DataError, UsageError
from digitsum.lengths import PROBE_SEED, Probe, parse_lengths


def load_rows(config: TrainConfig) -> Rows:
    """The config's CSV, or every string of its lengths."""
    if config.dataset_path:
        return read_csv(config.dataset_path)
    return make_rows(parse_lengths(config.lengths))


def split_rows(rows: Rows, config: TrainConfig) -> tuple[Rows, Rows]:
    """(train, validation): seeded, stratified by (input length, answer)."""
    train_index, val_index = stratified_split(rows, config.train_split_fraction, config.seed)
    if len(val_index) == 0:
        raise DataError(
            f"the validation split is empty: every (length, sum) group of these {len(rows)} rows is too small to "
            "spare a row; use more or longer lengths (e.g. train.lengths=2-4) or a smaller train.train_split_fraction"
        )
    return rows.take(train_index), rows.take(val_index)


def training_answers(config_values: dict[str, Any]) -> np.ndarray | None:
    """The digit sums of the rows a checkpoint's model trained on (its stored config's split); None
    where they cannot be rebuilt (a training CSV that is not on this machine)."""
    try:
        train_rows, _ = data_split(from_dict(config_values).train)
    except (UsageError, OSError):
        return None
    return train_rows.y


def data_split(config: TrainConfig) -> tuple[Rows, Rows]:
    """`split_rows(load_rows(config))`, cached for each distinct data setting."""
    return _cached_split(_data_only(config))


@functools.lru_cache(maxsize=4)
def _cached_split(config: TrainConfig) -> tuple[Rows, Rows]:
    return split_rows(load_rows(config), config)


def _data_only(config: TrainConfig) -> TrainConfig:
    """Keep only the keys that decide the rows and the split, so trials share the cache."""
    return TrainConfig(
        dataset_path=config.dataset_path,
        lengths=config.lengths,
        train_split_fraction=config.train_split_fraction,
        seed=config.seed,
    )


def probe_rows(probe: Probe, train: TrainConfig | None = None) -> Rows | None:
    """All strings of each probe length, or a seeded sample of ``probe.sample`` where there are more;
    with ``probe.in_range``, ``probe.sample`` strings per length drawn uniformly among those whose sum
    occurs in the training rows of ``train``'s data setting."""
    if probe.in_range and probe.lengths:
        assert train is not None, "an in-range probe draws from the training rows' sums"
        return _probe_rows(probe, tuple(np.unique(data_split(train)[0].y).tolist()))
    return _probe_rows(probe, ())


@functools.lru_cache(maxsize=4)
def _probe_rows(probe: Probe, sums: tuple[int, ...]) -> Rows | None:
    if not probe.lengths:
        return None
    if probe.in_range:
        return make_in_range_rows(list(probe.lengths), sums, probe.sample, seed=PROBE_SEED)
    sampled = any(10**n > probe.sample for n in probe.lengths)
    return make_rows(list(probe.lengths), sample=probe.sample if sampled else None, seed=PROBE_SEED)
