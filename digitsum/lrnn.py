"""LinearRNN: a linear recurrence whose transition depends on the input (model_type=lrnn).

    h_t = A(x_t) h_{t-1} + b(x_t),    A(x) = I + reshape(W x),    b(x) = V x + c

Each input token gets its own matrix (a second-order RNN without its squashing; "linear RNN" in
Merrill et al. 2024 and Grazzi et al. 2024). W starts at zero, so every transition starts as the
identity, and weight decay pulls it back there.

Why: a counter must map the state of a running sum s to the state of s + d. Training on lengths up
to 4 shows the cell that map only for s <= 27 (a larger sum needs four digits, and then comes the
end of the input). A GRU's or LSTM's transition is nonlinear in the state, so what it does from the
states of 28-35 is left to chance, and 5-10 digit inputs whose running sum passes 27 fail (see the
docs/results.md). A transition that is linear in the state is pinned down on every state in the span of the
states it was trained on, so it carries over. The model is linear throughout the recurrence; its
nonlinearity is the read-out head (``model.head_size`` > 0).
"""

from __future__ import annotations

import torch
from torch import nn


class LinearRNN(nn.Module):
    """Batch-first, one layer; the state is [1, B, hidden_size], like torch.nn.GRU's."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        # transition[i, e * hidden + j]: how input feature e scales h_j into h_i (beside the identity)
        self.transition = nn.Parameter(torch.zeros(hidden_size, input_size * hidden_size))
        self.shift = nn.Linear(input_size, hidden_size)
        # small steps, no bias: at first the state after T inputs is the sum of T shifts, so this keeps
        # it small; the prototype that found this model (docs/results.md: Length generalization) started so
        nn.init.normal_(self.shift.weight, std=0.1)
        nn.init.zeros_(self.shift.bias)

    def forward(
        self, inputs: torch.Tensor, state: torch.Tensor | None = None, state_noise: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs [B, T, input_size] -> outputs [B, T, hidden_size] and the state [1, B, hidden_size]."""
        batch, steps, _ = inputs.shape
        h = state[0] if state is not None else inputs.new_zeros(batch, self.hidden_size)
        shifts = self.shift(inputs)
        outputs = []
        for t in range(steps):  # T steps of [B, ...] matrix products; never a loop over rows
            x = inputs[:, t]
            h = h + (x.unsqueeze(2) * h.unsqueeze(1)).flatten(1) @ self.transition.T + shifts[:, t]
            if state_noise > 0:
                h = h + state_noise * torch.randn_like(h)
            outputs.append(h)
        return torch.stack(outputs, 1), h.unsqueeze(0)
