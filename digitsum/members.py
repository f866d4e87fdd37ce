"""Members: the models one training computation trains at once (`digitsum.train.fit`), K >= 1.

A member is a config of its own (its seed and its hyperparameters) with its own rows (its seed's
split). Members may differ in every key declared ``member=True`` (`digitsum.config`): the seed, the
learning rate and its schedule, weight decay, clipping, dropout, state noise, the sum-state weight
and the sampling of rows. Every other key (the shape of the weights, the data, the batch size, the
epochs and the curriculum: what makes one batch plan) is shared, so the K models stack on one axis
and step through their batches together. `train.n_seeds` K makes K members of one config, seeds
``train.seed`` to ``train.seed + K - 1``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from digitsum.config import Config, TrainConfig, as_flat, schema
from digitsum.data import Rows
from digitsum.datasets import data_split
from digitsum.errors import ConfigError


@dataclass(frozen=True)
class Member:
    config: Config  # its train.n_seeds is 1: one model
    train: Rows
    val: Rows

    @property
    def seed(self) -> int:
        return self.config.train.seed


def config_seeds(train: TrainConfig) -> list[int]:
    """The seeds a config trains: train.seed, train.seed + 1, ..., train.seed + n_seeds - 1."""
    return [train.seed + i for i in range(train.n_seeds)]


def seed_config(config: Config, seed: int) -> Config:
    """The config of one of its seeds alone: what that seed's checkpoint records."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed, n_seeds=1))


def seed_members(config: Config) -> list[Member]:
    """The members of a config: one per seed of its ``train.n_seeds``, each with its own split."""
    members = []
    for seed in config_seeds(config.train):
        own = seed_config(config, seed)
        members.append(Member(own, *data_split(own.train)))
    return members


SHARED_EXEMPT = ("train.n_seeds",)  # how many seeds a config expands to; each member has 1


def check_members(members: Sequence[Member]) -> None:
    """Members train as one computation: ConfigError naming the first shared key on which they differ,
    and ValueError where their validation rows cannot be decoded in lockstep."""
    if not members:
        raise ValueError("no members to train")
    keys = schema()
    first = as_flat(members[0].config)
    for member in members[1:]:
        for name, value in as_flat(member.config).items():
            if value != first[name] and not keys[name].member and name not in SHARED_EXEMPT:
                raise ConfigError(
                    f"{name} differs between members ({first[name]} and {value}): members trained as one "
                    "computation share it"
                )
    counts = [torch.bincount(torch.from_numpy(m.val.lengths), minlength=64) for m in members]
    if any(not torch.equal(counts[0], c) for c in counts[1:]) or len({len(m.train) for m in members}) > 1:
        raise ValueError("members trained as one computation need as many rows of each input length")
