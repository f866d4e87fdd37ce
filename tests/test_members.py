"""digitsum.members: what a member is, the seeds of a config, and what members must share."""

from __future__ import annotations

import dataclasses

import pytest

from digitsum.config import Config, ModelConfig, TrainConfig, schema
from digitsum.datasets import data_split
from digitsum.errors import ConfigError
from digitsum.members import Member, check_members, config_seeds, seed_config, seed_members

CONFIG = Config(ModelConfig(model_type="gru", hidden_size=8), TrainConfig(lengths="1-2", seed=5, n_seeds=3))


def test_a_config_trains_its_seeds_each_with_its_own_split():
    assert config_seeds(CONFIG.train) == [5, 6, 7]
    members = seed_members(CONFIG)
    assert [m.seed for m in members] == [5, 6, 7]
    for member in members:
        assert member.config == seed_config(CONFIG, member.seed)
        assert member.config.train.n_seeds == 1
        train, val = data_split(member.config.train)
        assert member.train.x.tolist() == train.x.tolist() and member.val.x.tolist() == val.x.tolist()
    assert members[0].train.x.tolist() != members[1].train.x.tolist()
    check_members(members)


def test_the_keys_members_may_differ_in():
    differ = sorted(name for name, key in schema().items() if key.member)
    assert differ == [
        "model.dropout",
        "train.answer_balance",
        "train.balance_lengths",
        "train.grad_clip",
        "train.keep_epoch",
        "train.learning_rate",
        "train.lr_schedule",
        "train.seed",
        "train.state_noise",
        "train.sum_state_weight",
        "train.weight_decay",
    ]


def with_train(member: Member, **changes) -> Member:
    return dataclasses.replace(
        member, config=dataclasses.replace(member.config, train=dataclasses.replace(member.config.train, **changes))
    )


def test_members_may_differ_in_hyperparameters_but_share_the_shape_and_the_batch_plan():
    first, second = seed_members(dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, n_seeds=2)))
    check_members(
        [first, with_train(second, learning_rate=0.1, weight_decay=0.5, grad_clip=0.0, lr_schedule="constant")]
    )
    for key, value in [("batch_size", 7), ("n_epochs", 3), ("curriculum", 0.5), ("fused", False)]:
        with pytest.raises(ConfigError, match=f"train.{key} differs between members"):
            check_members([first, with_train(second, **{key: value})])
    wider = dataclasses.replace(
        second, config=dataclasses.replace(second.config, model=ModelConfig(model_type="gru", hidden_size=9))
    )
    with pytest.raises(ConfigError, match="model.hidden_size differs between members .8 and 9."):
        check_members([first, wider])
    with pytest.raises(ValueError, match="as many rows of each input length"):
        check_members([first, dataclasses.replace(second, val=second.val.take(list(range(5))))])
    with pytest.raises(ValueError, match="no members"):
        check_members([])
