"""K models stacked on a leading axis compute what each computes alone: outputs, states and gradients."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from digitsum.config import ModelConfig
from digitsum.data import IGNORE, N_INPUT_TOKENS, N_OUTPUT_TOKENS
from digitsum.model import DigitSumModel
from digitsum.stacked import stack

CONFIGS = {
    "rnn tanh": ModelConfig(model_type="rnn", hidden_size=12, embedding_dim=6),
    "rnn relu, one-hot": ModelConfig(model_type="rnn", hidden_size=12, embedding_dim=0, nonlinearity="relu"),
    "lstm": ModelConfig(model_type="lstm", hidden_size=12, embedding_dim=6, forget_bias=1.0),
    "lstm, 2 layers, head": ModelConfig(model_type="lstm", hidden_size=10, embedding_dim=6, num_layers=2, head_size=16),
    "gru": ModelConfig(model_type="gru", hidden_size=12, embedding_dim=6),
    "gru, 2 layers, one-hot": ModelConfig(model_type="gru", hidden_size=10, embedding_dim=0, num_layers=2),
    "lrnn, head, one-hot": ModelConfig(model_type="lrnn", hidden_size=8, embedding_dim=0, head_size=16),
    "lrnn": ModelConfig(model_type="lrnn", hidden_size=8, embedding_dim=6, head_size=12),
    "lstm, 2 layers, dropout": ModelConfig(
        model_type="lstm", hidden_size=10, embedding_dim=6, num_layers=2, dropout=0.2
    ),
}
K = 3


def seeded_models(config: ModelConfig) -> list[DigitSumModel]:
    """What K separate runs would build: each model right after its own torch.manual_seed; in
    evaluation mode, so dropout (random per model, see the dropout test) is off."""
    models = []
    for seed in range(K):
        torch.manual_seed(seed)
        models.append(DigitSumModel(config).eval())
    return models


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, N_INPUT_TOKENS, (K, 5, 7), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_outputs_and_states_match_each_model_alone(name):
    models = seeded_models(CONFIGS[name])
    stacked = stack(models).eval()
    x = tokens()
    logits, state = stacked(x)
    for k, model in enumerate(models):
        alone, alone_state = model(x[k])
        torch.testing.assert_close(logits[k], alone, rtol=1e-5, atol=1e-6)
        if isinstance(alone_state, tuple):
            torch.testing.assert_close(state[0][k], alone_state[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(state[1][k], alone_state[1], rtol=1e-5, atol=1e-6)
        else:
            torch.testing.assert_close(state[k], alone_state, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn tanh", "lrnn"])
def test_a_state_carries_over_like_each_models(name):
    """Decoding feeds the state back one step at a time."""
    models = seeded_models(CONFIGS[name])
    stacked = stack(models).eval()
    x = tokens(1)
    _, state = stacked(x[:, :, :4])
    logits, _ = stacked(x[:, :, 4:], state)
    for k, model in enumerate(models):
        _, alone_state = model(x[k, :, :4])
        alone, _ = model(x[k, :, 4:], alone_state)
        torch.testing.assert_close(logits[k], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gradients_match_each_model_alone(name):
    models = seeded_models(CONFIGS[name])
    stacked = stack(models).eval()
    x = tokens(2)
    targets = torch.randint(0, N_OUTPUT_TOKENS, x.shape, generator=torch.Generator().manual_seed(3))
    targets[:, :, :2] = IGNORE
    logits, _ = stacked(x)
    per_model = F.cross_entropy(logits.flatten(0, 2), targets.flatten(), ignore_index=IGNORE, reduction="none")
    per_model = per_model.view(K, -1).sum(1) / (targets != IGNORE).view(K, -1).sum(1)
    per_model.sum().backward()
    for k, model in enumerate(models):
        alone, _ = model(x[k])
        F.cross_entropy(alone.flatten(0, 1), targets[k].flatten(), ignore_index=IGNORE).backward()
        back = stacked.unstack(k)  # its weights, to name each stacked gradient by the model's own parameter names
        assert [n for n, _ in back.named_parameters()] == [n for n, _ in model.named_parameters()]
        grads = [p.grad[k] for p in stacked.parameters()]
        for (param_name, param), grad in zip(model.named_parameters(), grads, strict=True):
            torch.testing.assert_close(grad, param.grad, rtol=1e-4, atol=1e-6, msg=param_name)


def test_unstack_gives_each_model_back():
    models = seeded_models(CONFIGS["lstm, 2 layers, head"])
    stacked = stack(models)
    for k, model in enumerate(models):
        back = stacked.unstack(k)
        for (name, theirs), mine in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
            assert torch.equal(theirs, mine), name


def test_unstack_gives_an_lrnn_back():
    models = seeded_models(CONFIGS["lrnn, head, one-hot"])
    back = stack(models).unstack(2)
    for (name, theirs), mine in zip(models[2].state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(theirs, mine), name


def test_what_stacking_refuses():
    with pytest.raises(ValueError, match="one shape"):
        stack([DigitSumModel(CONFIGS["lstm"]), DigitSumModel(CONFIGS["gru"])])


def test_members_may_differ_in_dropout_and_each_draws_its_own_rate():
    config = CONFIGS["lstm, 2 layers, dropout"]
    low, high = DigitSumModel(replace(config, dropout=0.0)), DigitSumModel(replace(config, dropout=0.9))
    stacked = stack([low, high])
    assert stacked.dropouts == [0.0, 0.9] and stacked.unstack(1).config.dropout == 0.9
    x = torch.ones(2, 400, 10)
    dropped = stacked.dropout(x)
    assert torch.equal(dropped[0], x[0])  # rate 0: kept whole
    assert 0.8 < float((dropped[1] == 0).double().mean()) < 0.95
    assert torch.allclose(dropped[1][dropped[1] != 0], torch.tensor(10.0))  # the kept ones scaled by 1 / 0.1
    stacked.eval()
    assert torch.equal(stacked.dropout(x), x)


@pytest.mark.parametrize("name", ["lstm, 2 layers, dropout", "gru, 2 layers, one-hot", "rnn relu, one-hot"])
def test_one_model_runs_torchs_own_op_and_draws_its_dropout(name):
    """K = 1 runs torch.nn's recurrent op on the model's own weights: the same outputs as the model, and in
    training the same dropout draws from the same seed."""
    torch.manual_seed(0)
    model = DigitSumModel(replace(CONFIGS[name], dropout=0.3))
    stacked = stack([model])
    x = tokens()[:1]
    torch.manual_seed(5)
    mine, _ = stacked(x)
    torch.manual_seed(5)
    theirs, _ = model(x[0])
    assert torch.equal(mine[0], theirs)


@pytest.mark.parametrize("name", ["lstm", "gru", "lrnn"])
def test_one_model_draws_the_state_noise_its_model_draws(name):
    torch.manual_seed(0)
    model = DigitSumModel(CONFIGS[name])
    stacked = stack([model])
    x = tokens()[:1]
    torch.manual_seed(7)
    mine, _ = stacked.hidden(x, state_noise=torch.tensor([0.1]))
    torch.manual_seed(7)
    theirs, _ = model.hidden(x[0], state_noise=0.1)
    torch.testing.assert_close(mine[0], theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["lstm, 2 layers, dropout", "lrnn", "gru"])
def test_dropout_and_state_noise_draw_apart_per_model_and_only_in_training(name):
    """Randomness is per element, so two models with equal weights and rows get different outputs in
    training, and each model's own output in evaluation."""
    torch.manual_seed(0)
    twin = DigitSumModel(CONFIGS[name])
    stacked = stack([twin, twin])
    x = tokens()[:1].expand(2, -1, -1)
    noise = torch.tensor([0.1, 0.1])
    training, _ = stacked.hidden(x, state_noise=noise)
    assert not torch.allclose(training[0], training[1])
    stacked.eval()
    evaluated, _ = stacked.hidden(x, state_noise=noise)
    torch.testing.assert_close(evaluated[0], evaluated[1])
    twin.eval()
    torch.testing.assert_close(evaluated[0], twin.hidden(x[0])[0], rtol=1e-5, atol=1e-6)
