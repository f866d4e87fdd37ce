"""K models of one shape as one module, the form every model trains and decodes in (K >= 1): every
weight stacked on a leading K axis, so a step of all K models is one batched GEMM instead of K small
ones. The models may differ in dropout (a member's own hyperparameter); everything else in their
ModelConfig is their shared shape.

torch.func's vmap cannot batch torch.nn's recurrent ops (no batching rule for aten::lstm,
aten::gru, aten::rnn_tanh), so the cells are written out here with PyTorch's own equations and
gate order (and `LinearRNN`'s). One model (K = 1) of those cells runs torch's own recurrent op on
its weights instead, as torch.nn.LSTM would (oneDNN on the CPU, cuDNN on CUDA: for one model, faster
than the written-out steps). `stack` copies K DigitSumModels in and `unstack` copies model k back
out, so a stacked model starts from exactly the weights K separate runs would (each seeded before
it is built). Inputs are [K, B, T]: model k reads its own rows (its own split and batch order).

Dropout and state noise draw one random stream for all K models, in the order one model draws them,
so one model (K = 1) draws what DigitSumModel draws, and with K > 1 model k matches its separate run
in distribution, not draw for draw; without them it matches within float rounding.
"""

from __future__ import annotations

import dataclasses

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
    """K DigitSumModels (rnn, lstm, gru, lrnn; any number of layers) with weights [K, ...]."""

    def __init__(self, models: list[DigitSumModel]):
        super().__init__()
        self.configs = [m.config for m in models]
        self.config = self.configs[0]  # the shape; member k's dropout is configs[k]'s
        if any(dataclasses.replace(c, dropout=self.config.dropout) != self.config for c in self.configs):
            raise ValueError("stacked models share one shape: their model configs differ in dropout at most")
        self.k = len(models)
        self.dropouts = [c.dropout for c in self.configs]
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

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    def forward(self, tokens: torch.Tensor, state: StackedState | None = None) -> tuple[torch.Tensor, StackedState]:
        """tokens [K, B, T] -> logits [K, B, T, N_OUTPUT_TOKENS] and the state after T steps."""
        outputs, state = self.hidden(tokens, state)
        return self.read_out(outputs), state

    def hidden(
        self, tokens: torch.Tensor, state: StackedState | None = None, state_noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, StackedState]:
        """tokens [K, B, T] -> the last layer's outputs [K, B, T, H] and the state after T steps; with
        ``state_noise`` [K] (training only; None where no model has any) noise of model k's std on every
        state after every step, as `DigitSumModel.hidden` adds it."""
        kind, layers = self.config.model_type, self.config.num_layers
        noise = state_noise if self.training else None
        if self.k == 1 and kind != "lrnn" and noise is None:
            return self._torch_op(tokens, state)
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
                inputs = self.dropout(inputs)  # torch.nn's dropout between layers
                projected = _projection(kind, inputs, weights)
            inputs, h, c = _layer(kind, self.config, inputs, projected, weights, h0[:, layer], c0[:, layer], noise)
            finals_h.append(h)
            finals_c.append(c)
        assert inputs is not None
        h_n = torch.stack(finals_h, 1)
        return inputs, ((h_n, torch.stack(finals_c, 1)) if kind == "lstm" else h_n)

    def _torch_op(self, tokens: torch.Tensor, state: StackedState | None) -> tuple[torch.Tensor, StackedState]:
        """One model's layers as torch.nn runs them: torch's own recurrent op on this model's weights
        (their gradients reach the stacked ones), between-layer dropout included."""
        config = self.config
        x = tokens[0]
        if self.embedding is None:
            inputs = F.one_hot(x, N_INPUT_TOKENS).to(self.weights[0].dtype)
        else:
            inputs = F.embedding(x, _one(self.embedding))
        weights = [_one(w) for w in self.weights]
        kind = config.model_type if config.model_type != "rnn" else f"rnn_{config.nonlinearity}"
        if state is None:
            zeros = inputs.new_zeros(config.num_layers, x.shape[0], config.hidden_size)
            hx: torch.Tensor | tuple[torch.Tensor, torch.Tensor] = (zeros, zeros) if kind == "lstm" else zeros
        else:
            hx = (state[0][0], state[1][0]) if isinstance(state, tuple) else state[0]
        dropout = self.dropouts[0] if config.num_layers > 1 else 0.0
        args = (weights, True, config.num_layers, dropout, self.training, False, True)
        if kind == "lstm":
            assert isinstance(hx, tuple)
            outputs, h, c = torch.lstm(inputs, hx, *args)
            return outputs.unsqueeze(0), (h.unsqueeze(0), c.unsqueeze(0))
        assert isinstance(hx, torch.Tensor)
        outputs, h = getattr(torch, kind)(inputs, hx, *args)
        return outputs.unsqueeze(0), h.unsqueeze(0)

    def dropout(self, x: torch.Tensor) -> torch.Tensor:
        """Member k's dropout on its slice x[k] (training only): one draw of torch's dropout where the
        members share a rate (the draws one model's nn.Dropout takes), a mask per rate where they differ."""
        if not self.training or not any(self.dropouts):
            return x
        if len(set(self.dropouts)) == 1:
            return F.dropout(x, self.dropouts[0])
        keep = 1 - torch.tensor(self.dropouts, dtype=x.dtype, device=x.device).view(-1, *([1] * (x.dim() - 1)))
        return x * torch.bernoulli(keep.expand_as(x)) / keep

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
        x = self.dropout(outputs)
        params = list(self.head)
        for index in range(0, len(params), 2):
            weight, bias = params[index], params[index + 1]
            if self.k == 1:  # nn.Linear's own op
                x = F.linear(x, _one(weight), _one(bias))
            else:
                k, batch, steps, _ = x.shape
                x = torch.baddbmm(bias[:, None, :], x.reshape(k, batch * steps, -1), weight.transpose(1, 2))
                x = x.view(k, batch, steps, -1)
            if index + 2 < len(params):
                x = F.relu(x)
        return x

    def keep(self, members: list[int]) -> StackedModel:
        """A stack of these models alone (copies of their weights, in this order)."""
        return stack([self.unstack(k) for k in members])

    def unstack(self, k: int) -> DigitSumModel:
        """Model k as a DigitSumModel of its own, with a copy of its weights. Its initialization's random
        draws are given back, so training goes on with the random stream it would have alone."""
        with torch.random.fork_rng(devices=[]):  # (the meta device would do, but it imports torch._dynamo: ~2 s)
            model = DigitSumModel(self.configs[k]).to(self.device)
        with torch.no_grad():
            if self.embedding is not None and model.embedding is not None:
                model.embedding.weight.copy_(self.embedding[k])
            mine = dict(model.rnn.named_parameters())
            for name, weight in zip(self._names(), self.weights, strict=True):
                mine[name].copy_(weight[k])
            for index, linear in enumerate(_linears(model.head)):
                linear.weight.copy_(self.head[2 * index][k])
                linear.bias.copy_(self.head[2 * index + 1][k])
        return model.train(self.training)


def _one(weight: torch.Tensor) -> torch.Tensor:
    """The only model's weight of a stack of one, as a view (its gradient reaches the stacked one without a copy)."""
    return weight.view(weight.shape[1:])


def stack(models: list[DigitSumModel]) -> StackedModel:
    """K models (of one shape) as one StackedModel, on their device, in their mode (training or not)."""
    return StackedModel(models).to(next(models[0].parameters()).device).train(models[0].training)


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
    noise: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer over T steps, given its input projection [K, T, B, G] (time-major, so each step's slice
    is contiguous): one batched GEMM a step that adds onto it. ``inputs``: the lrnn's features; ``noise``:
    each model's state-noise std [K]."""
    steps = projected.shape[1]
    std = noise.view(-1, 1, 1) if noise is not None else None
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
        if std is not None:  # where and in the order DigitSumModel adds it: the LSTM's c, then h, after each step
            c = c + std * torch.randn_like(c) if kind == "lstm" else c
            h = h + std * torch.randn_like(h)
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
