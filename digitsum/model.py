"""DigitSumModel: a token embedding (or one-hot input), a recurrent stack and a read-out head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from digitsum.config import MODEL_TYPES, ModelConfig, check_model
from digitsum.data import N_INPUT_TOKENS, N_OUTPUT_TOKENS
from digitsum.lrnn import LinearRNN

_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class DigitSumModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type {config.model_type!r}: choose one of {', '.join(MODEL_TYPES)}")
        check_model(config)  # also checked when a config is read; a ModelConfig can be built directly
        self.config = config
        self.embedding = nn.Embedding(N_INPUT_TOKENS, config.embedding_dim) if config.embedding_dim else None
        input_size = config.embedding_dim or N_INPUT_TOKENS
        self.rnn: nn.Module
        if config.model_type == "lrnn":
            self.rnn = LinearRNN(input_size, config.hidden_size)
        else:
            extra = {"nonlinearity": config.nonlinearity} if config.model_type == "rnn" else {}
            cell: nn.RNNBase = _CELLS[config.model_type](
                input_size=input_size,
                hidden_size=config.hidden_size,
                num_layers=config.num_layers,
                dropout=config.dropout if config.num_layers > 1 else 0.0,
                batch_first=True,
                **extra,
            )
            _initialize(cell, config)
            self.rnn = cell
        self.dropout = nn.Dropout(config.dropout)
        self.head: nn.Module = nn.Linear(config.hidden_size, N_OUTPUT_TOKENS)
        if config.head_size:
            self.head = nn.Sequential(
                nn.Linear(config.hidden_size, config.head_size), nn.ReLU(), nn.Linear(config.head_size, N_OUTPUT_TOKENS)
            )

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens [B, T] -> logits [B, T, N_OUTPUT_TOKENS] and the recurrent state after T steps."""
        outputs, state = self.hidden(tokens, state)
        return self.head(self.dropout(outputs)), state

    def hidden(
        self, tokens: torch.Tensor, state: State | None = None, state_noise: float = 0.0
    ) -> tuple[torch.Tensor, State]:
        """tokens [B, T] -> the last layer's outputs [B, T, hidden_size] and the state after T steps.

        With ``state_noise`` > 0 (training only), Gaussian noise of that std is added to every layer's
        state after every step, so the cell learns transitions that hold near its states, not only on
        them; that needs the steps one at a time (`_noisy_steps`)."""
        inputs = self.embedding(tokens) if self.embedding is not None else F.one_hot(tokens, N_INPUT_TOKENS).float()
        noise = state_noise if self.training else 0.0
        if isinstance(self.rnn, LinearRNN):
            assert state is None or isinstance(state, torch.Tensor), "an lrnn's state is one tensor"
            return self.rnn(inputs, state, noise)
        if noise > 0:
            assert isinstance(self.rnn, nn.RNNBase)
            return _noisy_steps(self.rnn, inputs, state, noise)
        return self.rnn(inputs, state)


def _initialize(rnn: nn.RNNBase, config: ModelConfig) -> None:
    """Recurrent weights per `recurrent_init` (each gate's block alike) and the forget-gate bias."""
    size = config.hidden_size
    with torch.no_grad():
        for layer in range(config.num_layers):
            weight = getattr(rnn, f"weight_hh_l{layer}")
            for block in weight.split(size):
                if config.recurrent_init == "identity":
                    block.copy_(torch.eye(size))
                elif config.recurrent_init == "orthogonal":
                    nn.init.orthogonal_(block)
            if config.recurrent_init == "identity" and config.model_type == "rnn":
                getattr(rnn, f"bias_hh_l{layer}").zero_()  # an IRNN starts as an exact accumulator
                getattr(rnn, f"bias_ih_l{layer}").zero_()
            if config.forget_bias:  # check_model allows it for lstm and gru only
                # the second block of gates: LSTM (input, forget, cell, output); GRU (reset, update, new),
                # whose update gate z keeps the old state: h' = (1 - z) * n + z * h
                getattr(rnn, f"bias_hh_l{layer}")[size : 2 * size] += config.forget_bias


def _noisy_steps(rnn: nn.RNNBase, inputs: torch.Tensor, state: State | None, std: float) -> tuple[torch.Tensor, State]:
    """`rnn(inputs, state)` one step and one layer at a time, with noise added to each new state."""
    batch, steps, _ = inputs.shape
    lstm = isinstance(rnn, nn.LSTM)
    if state is None:
        zeros = inputs.new_zeros(rnn.num_layers, batch, rnn.hidden_size)
        state = (zeros, zeros) if lstm else zeros
    h_all, c_all = state if isinstance(state, tuple) else (state, None)
    cell = _cell_function(rnn)
    layer_inputs = inputs
    final_h: list[torch.Tensor] = []
    final_c: list[torch.Tensor] = []
    for layer in range(rnn.num_layers):
        weights = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h = h_all[layer]
        c = c_all[layer] if c_all is not None else None
        outputs = []
        for t in range(steps):
            if lstm:
                h, c = cell(layer_inputs[:, t], (h, c), *weights)
                c = c + std * torch.randn_like(c)
            else:
                h = cell(layer_inputs[:, t], h, *weights)
            h = h + std * torch.randn_like(h)
            outputs.append(h)
        layer_inputs = torch.stack(outputs, 1)
        if layer + 1 < rnn.num_layers and rnn.dropout > 0:
            layer_inputs = F.dropout(layer_inputs, rnn.dropout, training=True)
        final_h.append(h)
        if c is not None:
            final_c.append(c)
    h_n = torch.stack(final_h)
    return layer_inputs, ((h_n, torch.stack(final_c)) if lstm else h_n)


def _cell_function(rnn: nn.RNNBase) -> Callable[..., Any]:
    if isinstance(rnn, nn.LSTM):
        return torch.lstm_cell
    if isinstance(rnn, nn.GRU):
        return torch.gru_cell
    return torch.rnn_relu_cell if rnn.nonlinearity == "relu" else torch.rnn_tanh_cell


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
