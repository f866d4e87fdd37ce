"""digitsum.model: DigitSumModel shapes, input modes, layers and dropout, parameter count."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import needed_by

from digitsum.config import MODEL_TYPES, ModelConfig
from digitsum.data import EOS, N_INPUT_TOKENS, N_OUTPUT_TOKENS, PAD
from digitsum.lrnn import LinearRNN
from digitsum.model import DigitSumModel, count_parameters

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
TORCH_CELLS = tuple(GATES)
pytestmark = pytest.mark.usefixtures("one_thread")


def tokens(batch: int = 3, steps: int = 5, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, N_INPUT_TOKENS, (batch, steps), generator=generator)


def make(model_type: str = "gru", **kwargs) -> DigitSumModel:
    if model_type == "lrnn" and kwargs.get("num_layers", 1) > 1:
        pytest.skip("an lrnn has one layer")
    torch.manual_seed(0)
    return DigitSumModel(ModelConfig(model_type=model_type, **{"hidden_size": 8, **needed_by(model_type), **kwargs}))


def state_shapes(state) -> list[tuple[int, ...]]:
    return [tuple(s.shape) for s in (state if isinstance(state, tuple) else (state,))]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_output_and_state_shapes(model_type, num_layers):
    model = make(model_type, hidden_size=12, num_layers=num_layers)
    logits, state = model(tokens(batch=3, steps=5))
    assert logits.shape == (3, 5, N_OUTPUT_TOKENS)
    assert logits.dtype == torch.float32
    expected = [(num_layers, 3, 12)] * (2 if model_type == "lstm" else 1)
    assert state_shapes(state) == expected
    assert isinstance(state, tuple) == (model_type == "lstm")


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_cell_type(model_type):
    expected = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "lrnn": LinearRNN}[model_type]
    assert type(make(model_type).rnn) is expected


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_state_carries_over_between_calls(model_type):
    """Running a sequence in two parts with the state passed on equals one pass (decoding relies on it)."""
    model = make(model_type, num_layers=2).eval()
    seq = tokens(batch=4, steps=7, seed=1)
    whole, whole_state = model(seq)
    first, state = model(seq[:, :4])
    second, state = model(seq[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    for a, b in zip(
        state if isinstance(state, tuple) else (state,),
        whole_state if isinstance(whole_state, tuple) else (whole_state,),
        strict=True,
    ):
        torch.testing.assert_close(a, b)


def test_right_padding_does_not_change_earlier_outputs():
    """Unidirectional: PAD after a row's end cannot change logits at its earlier positions."""
    model = make("lstm").eval()
    seq = torch.tensor([[1, 2, EOS, 3]])
    padded = torch.tensor([[1, 2, EOS, 3, PAD, PAD]])
    torch.testing.assert_close(model(padded)[0][:, :4], model(seq)[0])


def test_embedding_input():
    model = make("rnn", embedding_dim=5)
    assert isinstance(model.embedding, torch.nn.Embedding)
    assert model.embedding.num_embeddings == N_INPUT_TOKENS
    assert model.embedding.embedding_dim == 5
    assert model.rnn.input_size == 5


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_one_hot_input(model_type):
    model = make(model_type, embedding_dim=0)
    assert model.embedding is None
    assert model.rnn.input_size == N_INPUT_TOKENS
    logits, _ = model(tokens(batch=2, steps=3))
    assert logits.shape == (2, 3, N_OUTPUT_TOKENS)


def test_one_hot_input_is_the_token_column():
    """With one-hot input, the first RNN step from a zero state is tanh(W_ih[:, t] + b_ih + b_hh)."""
    model = make("rnn", embedding_dim=0).eval()
    token_ids = torch.arange(N_INPUT_TOKENS)
    _, state = model(token_ids.unsqueeze(1))
    rnn = model.rnn
    expected = torch.tanh(rnn.weight_ih_l0.T[token_ids] + rnn.bias_ih_l0 + rnn.bias_hh_l0)
    torch.testing.assert_close(state[0], expected)


def test_one_hot_input_uses_every_token_id():
    model = make("gru", embedding_dim=0).eval()
    logits, _ = model(torch.arange(N_INPUT_TOKENS).unsqueeze(1))  # every id incl. EOS, EOA, PAD
    assert logits.shape == (N_INPUT_TOKENS, 1, N_OUTPUT_TOKENS)
    with pytest.raises((IndexError, RuntimeError)):
        model(torch.tensor([[N_INPUT_TOKENS]]))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_dropout_between_layers(model_type):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when dropout is set on a 1-layer cell
        single = make(model_type, num_layers=1, dropout=0.3)
        stacked = make(model_type, num_layers=3, dropout=0.3)
    assert single.rnn.dropout == 0.0
    assert stacked.rnn.dropout == 0.3
    assert stacked.rnn.num_layers == 3
    assert single.dropout.p == 0.3 and stacked.dropout.p == 0.3

    seq = tokens(batch=8, steps=6)
    stacked.train()
    torch.manual_seed(1)
    a, _ = stacked(seq)
    b, _ = stacked(seq)
    assert not torch.allclose(a, b)  # dropout active in training
    stacked.eval()
    c, _ = stacked(seq)
    d, _ = stacked(seq)
    assert torch.equal(c, d)  # and off in evaluation


@pytest.mark.parametrize("model_type", ["transformer", "LSTM", "", "rnn "])
def test_unknown_model_type(model_type):
    with pytest.raises(ValueError, match="model_type"):
        DigitSumModel(ModelConfig(model_type=model_type))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize(("embedding_dim", "num_layers"), [(0, 1), (6, 1), (6, 2)])
def test_count_parameters(model_type, embedding_dim, num_layers):
    hidden = 10
    model = make(model_type, hidden_size=hidden, embedding_dim=embedding_dim, num_layers=num_layers)
    expected = N_INPUT_TOKENS * embedding_dim
    size_in = embedding_dim or N_INPUT_TOKENS
    if model_type == "lrnn":  # a hidden x hidden matrix and a shift per input feature; a 16-unit head
        expected += size_in * hidden * hidden + size_in * hidden + hidden
        expected += hidden * 16 + 16 + 16 * N_OUTPUT_TOKENS + N_OUTPUT_TOKENS
        assert count_parameters(model) == expected
        return
    gates = GATES[model_type]
    for _ in range(num_layers):
        expected += gates * (size_in * hidden + hidden * hidden + 2 * hidden)
        size_in = hidden
    expected += hidden * N_OUTPUT_TOKENS + N_OUTPUT_TOKENS
    assert count_parameters(model) == expected


def test_same_seed_same_weights():
    a, b = make("lstm"), make("lstm")
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), name


def test_config_to_dict_round_trip():
    config = ModelConfig(model_type="rnn", hidden_size=9, num_layers=2, dropout=0.1, embedding_dim=0)
    values = config.to_dict()
    assert values == {
        "model_type": "rnn",
        "hidden_size": 9,
        "num_layers": 2,
        "dropout": 0.1,
        "embedding_dim": 0,
        "head_size": 0,
        "nonlinearity": "tanh",
        "recurrent_init": "default",
        "forget_bias": 0.0,
    }
    assert ModelConfig(**values) == config


def test_model_config_defaults():
    config = ModelConfig()
    assert config.model_type in MODEL_TYPES
    assert config.hidden_size >= 1 and config.num_layers >= 1 and 0.0 <= config.dropout < 1.0
    model = DigitSumModel(config)
    assert model.config is config


# ---------------------------------------------------------------------------------------------
# Initialization options and state noise


@pytest.mark.parametrize("model_type", TORCH_CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_stepwise_path_equals_the_cell_without_noise(model_type, num_layers):
    """The one-step-at-a-time path (used for state noise) computes what torch's cell computes."""
    from digitsum.model import _noisy_steps

    model = make(model_type, num_layers=num_layers, embedding_dim=4)
    inputs = model.embedding(tokens(batch=3, steps=6, seed=2))
    expected, expected_state = model.rnn(inputs)
    outputs, state = _noisy_steps(model.rnn, inputs, None, 0.0)
    torch.testing.assert_close(outputs, expected)
    for a, b in zip(state_shapes(state), state_shapes(expected_state), strict=True):
        assert a == b
    torch.testing.assert_close(
        torch.cat(list(state) if isinstance(state, tuple) else [state]).flatten(),
        torch.cat(list(expected_state) if isinstance(expected_state, tuple) else [expected_state]).flatten(),
    )


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_state_noise_only_in_training(model_type):
    model = make(model_type)
    seq = tokens(batch=4, steps=5, seed=3)
    model.train()
    clean, _ = model.hidden(seq)
    noisy, _ = model.hidden(seq, state_noise=0.1)
    assert not torch.allclose(clean, noisy)
    model.eval()
    torch.testing.assert_close(model.hidden(seq, state_noise=0.1)[0], model.hidden(seq)[0])


def test_identity_init_makes_an_irnn_an_accumulator():
    model = make("rnn", nonlinearity="relu", recurrent_init="identity", embedding_dim=4)
    assert torch.equal(model.rnn.weight_hh_l0, torch.eye(8))
    assert not model.rnn.bias_hh_l0.any() and not model.rnn.bias_ih_l0.any()
    # h_t = relu(h_{t-1} + W x_t): with non-negative increments the state is their running sum
    with torch.no_grad():
        model.rnn.weight_ih_l0.abs_()
        model.embedding.weight.abs_()
    seq = tokens(batch=2, steps=5, seed=4)
    outputs, _ = model.hidden(seq)
    increments = model.embedding(seq) @ model.rnn.weight_ih_l0.T
    torch.testing.assert_close(outputs, increments.cumsum(1))


@pytest.mark.parametrize("model_type", ["lstm", "gru"])
def test_forget_bias_and_orthogonal_init(model_type):
    plain, biased = make(model_type), make(model_type, forget_bias=2.0, recurrent_init="orthogonal")
    size = 8
    shift = biased.rnn.bias_hh_l0 - plain.rnn.bias_hh_l0
    assert torch.allclose(shift[size : 2 * size], torch.full((size,), 2.0))  # the forget (LSTM) / update (GRU) gate
    assert not shift[:size].any() and not shift[2 * size :].any()
    for block in biased.rnn.weight_hh_l0.detach().split(size):
        torch.testing.assert_close(block @ block.T, torch.eye(size), atol=1e-5, rtol=0)


def test_relu_is_for_the_plain_rnn_only():
    from digitsum.errors import ConfigError

    with pytest.raises(ConfigError, match="model.nonlinearity=relu applies to model.model_type=rnn only"):
        make("gru", nonlinearity="relu")


# ---------------------------------------------------------------------------------------------
# lrnn: the linear RNN


def test_lrnn_starts_as_an_accumulator_of_its_shifts():
    model = make("lrnn", embedding_dim=4)
    seq = tokens(batch=3, steps=6, seed=5)
    outputs, state = model.hidden(seq)
    shifts = model.rnn.shift(model.embedding(seq))
    torch.testing.assert_close(outputs, shifts.cumsum(1))  # every transition is the identity at first
    torch.testing.assert_close(state[0], outputs[:, -1])


def test_lrnn_step_is_affine_in_the_state():
    """What makes its transitions carry over to states it never trained on: for a fixed input, the
    new state is an affine function of the old one."""
    model = make("lrnn", embedding_dim=4)
    with torch.no_grad():
        model.rnn.transition.normal_(std=0.3)
    token = tokens(batch=2, steps=1, seed=6)
    h1, h2 = torch.randn(1, 2, 8), torch.randn(1, 2, 8)
    step = lambda h: model.hidden(token, h)[1]  # noqa: E731
    torch.testing.assert_close(step(0.3 * h1 + 0.7 * h2), 0.3 * step(h1) + 0.7 * step(h2))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"head_size": 0}, "give it model.head_size > 0"),
        ({"num_layers": 2}, "use model.num_layers=1"),
    ],
)
def test_lrnn_config_errors(values, message):
    from digitsum.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        DigitSumModel(ModelConfig(model_type="lrnn", **{"head_size": 8, **values}))
