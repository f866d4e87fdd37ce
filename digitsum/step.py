"""One training step of K members: their losses and gradients on one batch each.

Two paths compute it, and each member's computation is what its own run computes (within float
rounding): the fused C++ kernel (`digitsum.fused`) where it applies, else the stacked torch.nn path
here (`digitsum.stacked`: one batched GEMM a time step for all K, or torch's own recurrent op for one
model), which also takes every model type, dropout, state noise and the sum-state loss. Either
writes the gradients into each stacked weight's .grad; the optimizer (`digitsum.optim`) clips them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from digitsum.config import Config
from digitsum.data import IGNORE, N_OUTPUT_TOKENS, Encoded
from digitsum.fused import make_step
from digitsum.stacked import StackedModel


class Step:
    """A step of the members: (tokens, targets, sums) of each one's batch, [K, B, T] each, -> the K mean
    losses, every gradient written. ``sums`` (the running sums and digit mask of `running_sums`) only
    where a member has the sum-state loss."""

    def __init__(self, stacked: StackedModel, configs: Sequence[Config]):
        self.stacked = stacked
        self.parameters = list(stacked.parameters())
        self.fused = make_step(stacked, configs)
        device = stacked.device
        noise = [c.train.state_noise for c in configs]
        self.noise = torch.tensor(noise, device=device) if any(noise) else None
        weights = [c.train.sum_state_weight for c in configs]
        self.sum_state = torch.tensor(weights, device=device) if any(weights) else None

    def __call__(
        self, tokens: torch.Tensor, targets: torch.Tensor, sums: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(tokens, targets)
        losses, outputs = member_losses(self.stacked, tokens, targets, self.noise)
        if self.sum_state is not None:
            assert sums is not None, "the sum-state loss reads each row's running sums"
            losses = losses + self.sum_state * sum_state_spread(outputs, *sums)
        for p in self.parameters:
            p.grad = None
        losses.sum().backward()  # member k's weights get member k's gradient alone
        return losses.detach()


def member_losses(
    stacked: StackedModel, tokens: torch.Tensor, targets: torch.Tensor, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's cross-entropy over its own batch ([K], each as F.cross_entropy's mean), and the
    last layer's outputs [K, B, T, H] (what the sum-state loss reads)."""
    outputs, _ = stacked.hidden(tokens, state_noise=noise)
    logits = stacked.read_out(outputs)
    k = logits.shape[0]
    each = F.cross_entropy(
        logits.reshape(-1, N_OUTPUT_TOKENS), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(k, -1)
    return each.sum(1) / (targets != IGNORE).view(k, -1).sum(1), outputs


def running_sums(data: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, T] sum of the digits up to and including each position, and the [N, T] bool mask of
    digit positions (EOS, answer and padding are False)."""
    positions = torch.arange(data.inputs.shape[1], device=data.inputs.device)
    mask = positions[None, :] < data.input_lengths[:, None]
    return torch.where(mask, data.inputs, 0).cumsum(1), mask


def sum_state_spread(outputs: torch.Tensor, sums: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each member's spread of the hidden states within equal running sums, over their spread overall:
    outputs [K, B, T, H], sums and mask [K, B, T] -> [K].

    0 means the state after a digit is a function of the sum so far alone, whatever the position:
    the counter a longer input needs. Without it the sweep's best models were position-dependent,
    and 5-digit inputs with large sums came out ~2 too small.
    """
    k = outputs.shape[0]
    states = outputs[mask]
    model = torch.arange(k, device=outputs.device).view(k, 1, 1).expand_as(mask)[mask]
    n_groups = 9 * outputs.shape[2] + 1  # every possible running sum, per member; no device sync for the max
    groups = model * n_groups + sums[mask]
    ones = torch.ones_like(groups, dtype=states.dtype)
    counts = torch.zeros(k * n_groups, device=states.device, dtype=states.dtype).index_add_(0, groups, ones)
    means = states.new_zeros(k * n_groups, states.shape[1]).index_add_(0, groups, states) / counts.clamp(min=1)[:, None]
    per_model = states.new_zeros(k).index_add_(0, model, ones)
    centres = states.new_zeros(k, states.shape[1]).index_add_(0, model, states) / per_model[:, None]
    within = states.new_zeros(k).index_add_(0, model, ((states - means[groups]) ** 2).sum(1)) / per_model
    overall = states.new_zeros(k).index_add_(0, model, ((states - centres[model]) ** 2).sum(1)) / per_model
    return within / (overall + 1e-6)
