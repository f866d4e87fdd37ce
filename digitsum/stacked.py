"""K models of one config as one module (issue 23's `train.n_seeds`): every weight stacked on a
leading K axis, so a step of all K models is one batched GEMM instead of K small ones.

torch.func's vmap cannot batch torch.nn's recurrent ops (no batching rule for aten::lstm,
aten::gru, aten::rnn_tanh), so the cells are written out here with PyTorch's own equations and
gate order (and `LinearRNN`'s); `stack` copies K DigitSumModels in and `unstack` copies model k back
out, so a stacked model starts from exactly the weights K separate runs would (each seeded before
it is built). Inputs are [K, B, T]: model k reads its own rows (its own split and batch order).

Dropout and state noise draw one random stream for all K models, so with them model k matches its
separate run in distribution, not draw for draw; without them it matches within float rounding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from digitsum.config import ModelConfig
from digitsum.data import N_INPUT_TOKENS
from digitsum.model import DigitSumModel

_RNN_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")

StackedState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # [K, layers, B, H] (and the LSTM's cell)


def _stacked(tensors: list[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach().clone() for t in tensors]))


class StackedModel(nn.Module):
    """K DigitSumModels (rnn, lstm, gru; any number of layers) with weights [K, ...]."""

    def __init__(self, models: list[DigitSumModel]):
        super().__init__()
        config = models[0].config
        if any(m.config != config for m in models):
            raise ValueError("stacked models share one model config")
        self.config, self.k = config, len(models)
        tables = [m.embedding.weight for m in models if m.embedding is not None]
        self.embedding = _stacked(tables) if tables else None
        rnns = [dict(m.rnn.named_parameters()) for m in models]
        self.weights = nn.ParameterList(_stacked([rnn[name] for rnn in rnns]) for name in self._names())
        heads = [list(_linears(m.head)) for m in models]
        self.head = nn.ParameterList(
            _stacked([h[i].weight if j == 0 else h[i].bias for h in heads])
            for i in range(len(heads[0]))
            for j in (0, 1)
        )

    def _names(self) -> list[str]:
        """The recurrent weights in the order `weights` holds them (one group per layer)."""
        if self.config.model_type == "lrnn":
            return ["transition", "shift.weight", "shift.bias"]
        return [f"{name}_l{layer}" for layer in range(self.config.num_layers) for name in _RNN_WEIGHTS]

    def forward(self, tokens: torch.Tensor, state: StackedState | None = None) -> tuple[torch.Tensor, StackedState]:
        """tokens [K, B, T] -> logits [K, B, T, N_OUTPUT_TOKENS] and the state after T steps."""
        outputs, state = self.hidden(tokens, state)
        return self.read_out(outputs), state

    def hidden(
        self, tokens: torch.Tensor, state: StackedState | None = None, state_noise: float = 0.0
    ) -> tuple[torch.Tensor, StackedState]:
        """tokens [K, B, T] -> the last layer's outputs [K, B, T, H] and the state after T steps; with
        ``state_noise`` (training only) noise of that std on every state after every step, as
        `DigitSumModel.hidden` adds it."""
        kind, layers = self.config.model_type, self.config.num_layers
        noise = state_noise if self.training else 0.0
        h0, c0 = _initial(state, tokens, layers, self.config.hidden_size, kind, self.weights[0])
        finals_h, finals_c = [], []
        group = len(self.weights) // layers
        inputs = self._features(tokens) if kind == "lrnn" else None  # the lrnn's transition reads them
        for layer in range(layers):
            weights = list(self.weights[group * layer : group * (layer + 1)])
            if layer == 0:
                projected = self._token_projection(tokens, weights)
            else:
                assert inputs is not None
                if self.training and self.config.dropout > 0:  # torch.nn's dropout between layers
                    inputs = F.dropout(inputs, self.config.dropout)
                projected = _projection(kind, inputs, weights)
            inputs, h, c = _layer(kind, self.config, inputs, projected, weights, h0[:, layer], c0[:, layer], noise)
            finals_h.append(h)
            finals_c.append(c)
        assert inputs is not None
        h_n = torch.stack(finals_h, 1)
        return inputs, ((h_n, torch.stack(finals_c, 1)) if kind == "lstm" else h_n)

    def _features(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [K, B, T] -> each model's input features [K, B, T, E]: its embedding rows, or one-hot."""
        if self.embedding is None:
            return F.one_hot(tokens, N_INPUT_TOKENS).to(self.weights[0].dtype)
        index = tokens.flatten(1).unsqueeze(2).expand(-1, -1, self.embedding.shape[2])
        return torch.gather(self.embedding, 1, index).view(*tokens.shape, -1)  # row k of model k's table

    def _token_projection(self, tokens: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        """The first layer's input projection [K, T, B, G] as rows of a table per model (one row per token:
        embedding @ W_in^T + bias, or W_in^T + bias for one-hot input), as the fused kernel takes it:
        a gather instead of a GEMM over every position."""
        w_in, bias = _input_side(self.config.model_type, weights)
        if self.embedding is not None:
            table = torch.baddbmm(bias[:, None, :], self.embedding, w_in.transpose(1, 2))
        else:
            table = w_in.transpose(1, 2) + bias[:, None, :]
        k, vocabulary = table.shape[:2]
        index = tokens.transpose(1, 2) + vocabulary * torch.arange(k, device=tokens.device).view(k, 1, 1)
        return F.embedding(index, table.reshape(k * vocabulary, -1))  # a row copy (index_select), forward and back

    def read_out(self, outputs: torch.Tensor) -> torch.Tensor:
        """The head of each model over its outputs [K, B, T, H] (after the model's dropout, in training)."""
        x = F.dropout(outputs, self.config.dropout, self.training) if self.config.dropout > 0 else outputs
        pairs = list(zip(self.head[0::2], self.head[1::2], strict=True))
        for index, (weight, bias) in enumerate(pairs):
            x = torch.einsum("kbti,koi->kbto", x, weight) + bias[:, None, None, :]
            if index + 1 < len(pairs):
                x = F.relu(x)
        return x

    def unstack(self, k: int) -> DigitSumModel:
        """Model k as a DigitSumModel of its own, with a copy of its weights."""
        model = DigitSumModel(self.config)
        with torch.no_grad():
            if self.embedding is not None and model.embedding is not None:
                model.embedding.weight.copy_(self.embedding[k])
            mine = dict(model.rnn.named_parameters())
            for name, weight in zip(self._names(), self.weights, strict=True):
                mine[name].copy_(weight[k])
            for index, linear in enumerate(_linears(model.head)):
                linear.weight.copy_(self.head[2 * index][k])
                linear.bias.copy_(self.head[2 * index + 1][k])
        return model.to(self.weights[0].device)


def stack(models: list[DigitSumModel]) -> StackedModel:
    return StackedModel(models).to(next(models[0].parameters()).device)


def _linears(head: nn.Module) -> list[nn.Linear]:
    return [head] if isinstance(head, nn.Linear) else [m for m in head.modules() if isinstance(m, nn.Linear)]


def _initial(
    state: StackedState | None, tokens: torch.Tensor, layers: int, size: int, kind: str, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, c) as [K, layers, B, H]; zeros where no state is given (c unused but by the LSTM)."""
    if state is None:
        zeros = like.new_zeros(tokens.shape[0], layers, tokens.shape[1], size)
        return zeros, zeros
    if kind == "lstm":
        assert isinstance(state, tuple), "an LSTM's state is (h, c)"
        return state
    assert isinstance(state, torch.Tensor)
    return state, state


def _input_side(kind: str, weights: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's input weights and the bias that goes with its input projection. An LSTM's and an RNN's
    two biases add to the same pre-activations, so b_hh is folded in once; a GRU's b_hh sits inside
    reset * (...), so it stays in the recurrent part."""
    if kind == "lrnn":  # h' = h + (x outer h) W^T + V x + c  (digitsum.lrnn)
        _, shift_w, shift_b = weights
        return shift_w, shift_b
    w_ih, _, b_ih, b_hh = weights
    return w_ih, (b_ih if kind == "gru" else b_ih + b_hh)


def _projection(kind: str, inputs: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """inputs [K, B, T, E] -> the input projection of every step at once, time-major [K, T, B, G]."""
    k, batch, steps, _ = inputs.shape
    w_in, bias = _input_side(kind, weights)
    rows = inputs.transpose(1, 2).reshape(k, steps * batch, -1)
    return torch.baddbmm(bias[:, None, :], rows, w_in.transpose(1, 2)).view(k, steps, batch, -1)


def _layer(
    kind: str,
    config: ModelConfig,
    inputs: torch.Tensor | None,
    projected: torch.Tensor,
    weights: list[torch.Tensor],
    h: torch.Tensor,
    c: torch.Tensor,
    noise: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer over T steps, given its input projection [K, T, B, G] (time-major, so each step's slice
    is contiguous): one batched GEMM a step that adds onto it. ``inputs``: the lrnn's features."""
    steps = projected.shape[1]
    w_rec_t = weights[0 if kind == "lrnn" else 1].transpose(1, 2)
    features = inputs.transpose(1, 2) if inputs is not None else None
    outputs = []
    for t in range(steps):
        if kind == "lrnn":
            assert features is not None, "an lrnn's transition reads its input features"
            outer = (features[:, t].unsqueeze(3) * h.unsqueeze(2)).flatten(2)
            h = torch.baddbmm(h + projected[:, t], outer, w_rec_t)
        elif kind == "gru":
            h = _gru(projected[:, t], torch.baddbmm(weights[3][:, None, :], h, w_rec_t), h)
        else:
            gates = torch.baddbmm(projected[:, t], h, w_rec_t)
            h, c = _lstm(gates, c) if kind == "lstm" else (_rnn(gates, config.nonlinearity), c)
        if noise > 0:  # where DigitSumModel adds it: h (and the LSTM's c) after each step
            h = h + noise * torch.randn_like(h)
            c = c + noise * torch.randn_like(c) if kind == "lstm" else c
        outputs.append(h)
    return torch.stack(outputs, 2), h, c


# PyTorch's cell equations and gate order, given the pre-activations.


def _rnn(gates: torch.Tensor, nonlinearity: str) -> torch.Tensor:
    return torch.relu(gates) if nonlinearity == "relu" else _tanh(gates)


def _lstm(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gates: x W_ih + h W_hh + both biases, as (i, f, g, o)."""
    size = c.shape[-1]
    i, f, _, o = torch.sigmoid(gates).chunk(4, dim=-1)  # one sigmoid over all four (g's unused): strided
    c = f * c + i * _tanh(gates[..., 2 * size : 3 * size])  # chunks are slow on CPU
    return o * _tanh(c), c


def _gru(x: torch.Tensor, r: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """x: x W_ih + b_ih, r: h W_hh + b_hh, each as (reset, update, new)."""
    size = h.shape[-1]
    reset, update = torch.sigmoid(x[..., : 2 * size] + r[..., : 2 * size]).chunk(2, dim=-1)
    new = _tanh(x[..., 2 * size :] + reset * r[..., 2 * size :])
    return torch.lerp(new, h, update)


def _tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh; when scoring (no gradient), as 2 sigmoid(2x) - 1: torch's CPU tanh is ~3x slower than these
    four ops on the thousands of rows a validation pass decodes (in training, at batch 32, one op is cheaper)."""
    if x.requires_grad:
        return torch.tanh(x)
    return 2 * torch.sigmoid(2 * x) - 1
