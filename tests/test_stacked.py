"""K models stacked on a leading axis compute what each computes alone: outputs, states and gradients."""

from __future__ import annotations

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
    with pytest.raises(ValueError, match="one model config"):
        stack([DigitSumModel(CONFIGS["lstm"]), DigitSumModel(CONFIGS["gru"])])


@pytest.mark.parametrize("name", ["lstm, 2 layers, dropout", "lrnn", "gru"])
def test_dropout_and_state_noise_draw_apart_per_model_and_only_in_training(name):
    """Randomness is per element, so two models with equal weights and rows get different outputs in
    training, and each model's own output in evaluation."""
    torch.manual_seed(0)
    twin = DigitSumModel(CONFIGS[name])
    stacked = stack([twin, twin])
    x = tokens()[:1].expand(2, -1, -1)
    noise = 0.1
    training, _ = stacked.hidden(x, state_noise=noise)
    assert not torch.allclose(training[0], training[1])
    stacked.eval()
    evaluated, _ = stacked.hidden(x, state_noise=noise)
    torch.testing.assert_close(evaluated[0], evaluated[1])
    twin.eval()
    torch.testing.assert_close(evaluated[0], twin.hidden(x[0])[0], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Scoring K models at once (digitsum.stacked_decode), each on its own rows


def seeded_splits(k: int = K) -> list:
    from digitsum.config import TrainConfig
    from digitsum.data import encode
    from digitsum.datasets import data_split

    return [encode(data_split(TrainConfig(lengths="1-3", seed=seed))[1]) for seed in range(k)]


@pytest.mark.parametrize("name", ["lstm", "gru, 2 layers, one-hot", "rnn tanh", "lrnn, head, one-hot"])
def test_stacked_decoding_and_loss_are_each_models(name):
    from digitsum.decode import accuracy, greedy_decode
    from digitsum.stacked_decode import _decode, same_shape, stacked_accuracy, stacked_losses
    from digitsum.train import evaluate_loss

    models = seeded_models(CONFIGS[name])
    stacked = stack(models).eval()
    datas = seeded_splits()
    assert same_shape(datas)
    decoded = _decode(stacked, datas)
    scores = stacked_accuracy(stacked, datas)
    losses = stacked_losses(stacked, datas)
    for k, model in enumerate(models):
        assert torch.equal(decoded[k], greedy_decode(model, datas[k]))
        assert scores[k] == accuracy(model, datas[k])
        assert losses[k] == pytest.approx(evaluate_loss(model, datas[k]), rel=1e-5)
