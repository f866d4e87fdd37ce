"""DigitSumModel: a token embedding (or one-hot input), a recurrent stack and a linear head."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from digitsum.config import MODEL_TYPES, ModelConfig
from digitsum.data import N_INPUT_TOKENS, N_OUTPUT_TOKENS

_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class DigitSumModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.model_type not in _CELLS:
            raise ValueError(f"model_type {config.model_type!r}: choose one of {', '.join(MODEL_TYPES)}")
        self.config = config
        self.embedding = nn.Embedding(N_INPUT_TOKENS, config.embedding_dim) if config.embedding_dim else None
        self.rnn = _CELLS[config.model_type](
            input_size=config.embedding_dim or N_INPUT_TOKENS,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, N_OUTPUT_TOKENS)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens [B, T] -> logits [B, T, N_OUTPUT_TOKENS] and the recurrent state after T steps."""
        outputs, state = self.hidden(tokens, state)
        return self.head(self.dropout(outputs)), state

    def hidden(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens [B, T] -> the last layer's outputs [B, T, hidden_size] and the state after T steps."""
        inputs = self.embedding(tokens) if self.embedding is not None else F.one_hot(tokens, N_INPUT_TOKENS).float()
        return self.rnn(inputs, state)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
