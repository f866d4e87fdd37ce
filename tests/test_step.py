"""digitsum.step: a step of K members on the stacked torch.nn path, the sum-state loss and running sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from digitsum.config import Config, ModelConfig, TrainConfig
from digitsum.data import Rows, encode, make_rows
from digitsum.model import DigitSumModel
from digitsum.stacked import stack
from digitsum.step import Step, member_losses, running_sums, sum_state_spread


def test_running_sums_cover_the_digits_only():
    data = encode(Rows(np.array(["12", "905"]), np.array([3, 14])))
    sums, mask = running_sums(data)
    assert mask.tolist() == [[True, True, False, False, False, False], [True, True, True, False, False, False]]
    assert sums[mask].tolist() == [1, 3, 9, 9, 14]


def test_sum_state_spread_is_zero_when_states_depend_on_the_sum_alone():
    sums = torch.tensor([[[1, 3, 0], [3, 4, 7]]])
    mask = torch.tensor([[[True, True, False], [True, True, True]]])
    by_sum = torch.randn(30, 5)
    outputs = by_sum[sums]  # [1, 2, 3, 5]: the state is a function of the running sum
    assert sum_state_spread(outputs, sums, mask).item() == pytest.approx(0.0, abs=1e-6)
    outputs[0, 0, 1] += 1.0  # sum 3 at position 1 of row 0 now differs from sum 3 at position 0 of row 1
    spread = sum_state_spread(outputs, sums, mask).item()
    assert spread > 0.01
    outputs[0, 0, 2] = 1e6  # masked positions (after the digits) never count
    assert sum_state_spread(outputs, sums, mask).item() == spread


def test_sum_state_spread_of_k_members_is_each_ones_alone():
    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(3, 4, 5, 6, generator=generator)
    sums = torch.randint(0, 20, (3, 4, 5), generator=generator)
    mask = torch.rand(3, 4, 5, generator=generator) > 0.3
    each = sum_state_spread(outputs, sums, mask)
    for k in range(3):
        alone = sum_state_spread(outputs[k : k + 1], sums[k : k + 1], mask[k : k + 1])
        assert float(each[k]) == pytest.approx(float(alone[0]), rel=1e-5)


def configs(**train) -> list[Config]:
    model = ModelConfig(model_type="rnn", hidden_size=8, embedding_dim=4)
    return [Config(model, TrainConfig(**train)), Config(model, TrainConfig(**{**train, "sum_state_weight": 0.0}))]


def test_a_step_adds_each_members_own_sum_state_loss():
    """Member 0 weighs the sum-state loss by 2, member 1 not at all: its loss is the cross-entropy alone."""
    torch.manual_seed(0)
    stacked = stack([DigitSumModel(configs()[0].model) for _ in range(2)])
    data = encode(make_rows([2]))
    tokens = data.inputs[:16].expand(2, -1, -1)
    targets = data.targets[:16].expand(2, -1, -1)
    sums, mask = running_sums(data)
    step = Step(stacked, configs(sum_state_weight=2.0))
    losses = step(tokens, targets, (sums[:16].expand(2, -1, -1), mask[:16].expand(2, -1, -1)))
    with torch.no_grad():
        plain, outputs = member_losses(stacked, tokens, targets)
        spread = sum_state_spread(outputs, sums[:16].expand(2, -1, -1), mask[:16].expand(2, -1, -1))
    assert float(losses[0]) == pytest.approx(float(plain[0] + 2.0 * spread[0]), rel=1e-6)
    assert float(losses[1]) == pytest.approx(float(plain[1]), rel=1e-6)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stacked.parameters())
