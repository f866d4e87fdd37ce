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

STACKED_TYPES = ("rnn", "lstm", "gru", "lrnn")
_RNN_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")

StackedState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # [K, layers, B, H] (and the LSTM's cell)


def _stacked(tensors: list[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach().clone() for t in tensors]))


class StackedModel(nn.Module):
    """K DigitSumModels (rnn, lstm, gru; any number of layers) with weights [K, ...]."""

    def __init__(self, models: list[DigitSumModel]):
        super().__init__()
        config = models[0].config
        if config.model_type not in STACKED_TYPES:
            raise ValueError(f"model_type {config.model_type!r}: stacking takes {', '.join(STACKED_TYPES)}")
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
        if self.embedding is not None:  # row k of the lookup table of model k
            inputs = torch.gather(
                self.embedding, 1, tokens.flatten(1).unsqueeze(2).expand(-1, -1, self.embedding.shape[2])
            ).view(*tokens.shape, -1)
        else:
            inputs = F.one_hot(tokens, N_INPUT_TOKENS).to(self.weights[0].dtype)
        kind, layers = self.config.model_type, self.config.num_layers
        noise = state_noise if self.training else 0.0
        h0, c0 = _initial(state, inputs, layers, self.config.hidden_size, kind)
        finals_h, finals_c = [], []
        group = len(self.weights) // layers
        for layer in range(layers):
            if layer > 0 and self.training and self.config.dropout > 0:  # torch.nn's dropout between layers
                inputs = F.dropout(inputs, self.config.dropout)
            weights = list(self.weights[group * layer : group * (layer + 1)])
            inputs, h, c = _layer(kind, self.config, inputs, weights, h0[:, layer], c0[:, layer], noise)
            finals_h.append(h)
            finals_c.append(c)
        h_n = torch.stack(finals_h, 1)
        return inputs, ((h_n, torch.stack(finals_c, 1)) if kind == "lstm" else h_n)

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
    state: StackedState | None, inputs: torch.Tensor, layers: int, size: int, kind: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, c) as [K, layers, B, H]; zeros where no state is given (c unused but by the LSTM)."""
    if state is None:
        zeros = inputs.new_zeros(inputs.shape[0], layers, inputs.shape[1], size)
        return zeros, zeros
    if kind == "lstm":
        assert isinstance(state, tuple), "an LSTM's state is (h, c)"
        return state
    assert isinstance(state, torch.Tensor)
    return state, state


def _layer(
    kind: str,
    config: ModelConfig,
    inputs: torch.Tensor,
    weights: list[torch.Tensor],
    h: torch.Tensor,
    c: torch.Tensor,
    noise: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer over T steps: the input projection for all steps at once, then a batched GEMM a step."""
    k, batch, steps, _ = inputs.shape
    if kind == "lrnn":  # h' = h + (x outer h) W^T + V x + c  (digitsum.lrnn)
        transition, shift_w, shift_b = weights
        projected = torch.baddbmm(shift_b[:, None, :], inputs.reshape(k, batch * steps, -1), shift_w.transpose(1, 2))
        w_hh_t = transition.transpose(1, 2)
    else:
        w_ih, w_hh, b_ih, b_hh = weights
        projected = torch.baddbmm(b_ih[:, None, :], inputs.reshape(k, batch * steps, -1), w_ih.transpose(1, 2))
        w_hh_t = w_hh.transpose(1, 2)
    projected = projected.view(k, batch, steps, -1)
    outputs = []
    for t in range(steps):
        if kind == "lrnn":
            h = h + torch.bmm((inputs[:, :, t].unsqueeze(3) * h.unsqueeze(2)).flatten(2), w_hh_t) + projected[:, :, t]
        else:
            h, c = _cell(kind, config, projected[:, :, t], torch.baddbmm(b_hh[:, None, :], h, w_hh_t), h, c)
        if noise > 0:  # where DigitSumModel adds it: h (and the LSTM's c) after each step
            h = h + noise * torch.randn_like(h)
            c = c + noise * torch.randn_like(c) if kind == "lstm" else c
        outputs.append(h)
    return torch.stack(outputs, 2), h, c


def _cell(
    kind: str, config: ModelConfig, x: torch.Tensor, r: torch.Tensor, h: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's RNN, LSTM and GRU equations (its gate order), given x W_ih + b_ih and h W_hh + b_hh."""
    if kind == "rnn":
        return (torch.relu(x + r) if config.nonlinearity == "relu" else torch.tanh(x + r)), c
    if kind == "lstm":
        i, f, g, o = (x + r).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    x_r, x_z, x_n = x.chunk(3, dim=-1)
    r_r, r_z, r_n = r.chunk(3, dim=-1)
    reset, update = torch.sigmoid(x_r + r_r), torch.sigmoid(x_z + r_z)
    new = torch.tanh(x_n + reset * r_n)
    return (1 - update) * new + update * h, c
