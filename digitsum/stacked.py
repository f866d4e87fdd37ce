"""K models of one config as one module (issue 23's `train.n_seeds`): every weight stacked on a
leading K axis, so a step of all K models is one batched GEMM instead of K small ones.

torch.func's vmap cannot batch torch.nn's recurrent ops (no batching rule for aten::lstm,
aten::gru, aten::rnn_tanh), so the cells are written out here with PyTorch's own equations and
gate order; `stack` copies K DigitSumModels in and `unstack` copies model k back out, so a stacked
model starts from exactly the weights K separate runs would (each seeded before it is built).
Inputs are [K, B, T]: model k reads its own rows (its own split and batch order).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from digitsum.config import ModelConfig
from digitsum.data import N_INPUT_TOKENS
from digitsum.model import DigitSumModel

STACKED_TYPES = ("rnn", "lstm", "gru")

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
        if config.dropout > 0:  # each model's masks would come from another random stream than its own run's
            raise ValueError("stacking takes models without dropout (model.dropout=0)")
        self.config, self.k = config, len(models)
        tables = [m.embedding.weight for m in models if m.embedding is not None]
        self.embedding = _stacked(tables) if tables else None
        rnns = [m.rnn for m in models]
        self.weights = nn.ParameterList()
        for layer in range(config.num_layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                self.weights.append(_stacked([getattr(rnn, f"{name}_l{layer}") for rnn in rnns]))
        heads = [list(_linears(m.head)) for m in models]
        self.head = nn.ParameterList(
            _stacked([h[i].weight if j == 0 else h[i].bias for h in heads])
            for i in range(len(heads[0]))
            for j in (0, 1)
        )

    def forward(self, tokens: torch.Tensor, state: StackedState | None = None) -> tuple[torch.Tensor, StackedState]:
        """tokens [K, B, T] -> logits [K, B, T, N_OUTPUT_TOKENS] and the state after T steps."""
        outputs, state = self.hidden(tokens, state)
        return self.read_out(outputs), state

    def hidden(self, tokens: torch.Tensor, state: StackedState | None = None) -> tuple[torch.Tensor, StackedState]:
        """tokens [K, B, T] -> the last layer's outputs [K, B, T, H] and the state after T steps."""
        if self.embedding is not None:  # row k of the lookup table of model k
            inputs = torch.gather(
                self.embedding, 1, tokens.flatten(1).unsqueeze(2).expand(-1, -1, self.embedding.shape[2])
            ).view(*tokens.shape, -1)
        else:
            inputs = F.one_hot(tokens, N_INPUT_TOKENS).to(self.weights[0].dtype)
        kind, layers = self.config.model_type, self.config.num_layers
        h0, c0 = _initial(state, inputs, layers, self.config.hidden_size, kind)
        finals_h, finals_c = [], []
        for layer in range(layers):
            w_ih, w_hh, b_ih, b_hh = self.weights[4 * layer : 4 * layer + 4]
            inputs, h, c = _layer(kind, self.config, inputs, w_ih, w_hh, b_ih, b_hh, h0[:, layer], c0[:, layer])
            finals_h.append(h)
            finals_c.append(c)
        h_n = torch.stack(finals_h, 1)
        return inputs, ((h_n, torch.stack(finals_c, 1)) if kind == "lstm" else h_n)

    def read_out(self, outputs: torch.Tensor) -> torch.Tensor:
        """The head of each model over its outputs [K, B, T, H]."""
        x = outputs
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
            for layer in range(self.config.num_layers):
                for offset, name in enumerate(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
                    getattr(model.rnn, f"{name}_l{layer}").copy_(self.weights[4 * layer + offset][k])
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
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer over T steps: the input projection for all steps at once, then a batched GEMM a step."""
    k, batch, steps, _ = inputs.shape
    projected = torch.baddbmm(b_ih[:, None, :], inputs.reshape(k, batch * steps, -1), w_ih.transpose(1, 2))
    projected = projected.view(k, batch, steps, -1)
    w_hh_t = w_hh.transpose(1, 2)
    outputs = []
    for t in range(steps):
        recurrent = torch.baddbmm(b_hh[:, None, :], h, w_hh_t)
        h, c = _cell(kind, config, projected[:, :, t], recurrent, h, c)
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
