"""AdamW for members: each with its own learning rate and schedule, weight decay and gradient clipping,
over weights stacked [K, ...] (`digitsum.stacked`).

Per step, each member's gradients are clipped to its ``train.grad_clip`` (as torch.nn.utils.clip_grad_norm_
over its own gradients) and its weights take torch.optim.AdamW's update (no amsgrad) at its learning
rate of the step: ``train.learning_rate`` times its ``train.lr_schedule`` at that step, over every
step of the run (`schedule`). On the CPU both are one C++ call (`digitsum.fused`: torch.optim.AdamW
spends ~150 us of Python per step before its own fused kernel runs, and clipping ~100 us more); on
other devices, or where the kernel cannot be built, the same arithmetic in torch ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from digitsum.config import LR_SCHEDULES, TrainConfig
from digitsum.errors import ConfigError
from digitsum.fused import load

BETAS = (0.9, 0.999)
EPS = 1e-8


def schedule(name: str, total_steps: int) -> Callable[[int], float]:
    """The factor of the peak learning rate at each (0-based) step of a run of ``total_steps``."""
    if name == "constant":
        return lambda step: 1.0
    if name == "cosine":  # decay to 1%: a constant rate swung late in training
        return lambda step: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    raise ConfigError(f"lr_schedule {name!r}: choose one of {', '.join(LR_SCHEDULES)}")


class MemberAdamW:
    """AdamW over stacked parameters: member k (slice k of each) with ``configs[k]``'s rate, schedule,
    weight decay and clipping. The step count and AdamW's moments live here, one tensor per parameter."""

    def __init__(self, params: Sequence[torch.nn.Parameter], configs: Sequence[TrainConfig], total_steps: int):
        self.params = list(params)
        self.peaks = [c.learning_rate for c in configs]
        self.factors = [schedule(c.lr_schedule, total_steps) for c in configs]
        self.weight_decays = [c.weight_decay for c in configs]
        self.max_norms = [c.grad_clip for c in configs]
        self.steps = 0
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.kernel = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in self.params) and load()

    def keep(self, members: Sequence[int], params: Sequence[torch.nn.Parameter]) -> None:
        """Go on with these members alone (their slices of the moments, in this order), on ``params``, the
        weights of their own stack; the step count goes on."""
        index = torch.tensor(list(members), device=self.params[0].device)
        self.params = list(params)
        self.exp_avgs = [m.index_select(0, index) for m in self.exp_avgs]
        self.exp_avg_sqs = [v.index_select(0, index) for v in self.exp_avg_sqs]
        self.peaks, self.factors = [self.peaks[k] for k in members], [self.factors[k] for k in members]
        self.weight_decays = [self.weight_decays[k] for k in members]
        self.max_norms = [self.max_norms[k] for k in members]

    def copy(self, source: int, target: int) -> None:
        """Member ``target`` takes member ``source``'s moments (population-based training's exploit)."""
        for state in (*self.exp_avgs, *self.exp_avg_sqs):
            state[target].copy_(state[source])

    def retune(self, slot: int, config: TrainConfig, total_steps: int) -> None:
        """Member ``slot`` goes on with ``config``'s rate, schedule, weight decay and clipping, at the
        step the run is at (population-based training's explore)."""
        self.peaks[slot], self.factors[slot] = config.learning_rate, schedule(config.lr_schedule, total_steps)
        self.weight_decays[slot], self.max_norms[slot] = config.weight_decay, config.grad_clip

    @property
    def learning_rates(self) -> list[float]:
        """Each member's learning rate at the next step."""
        return [peak * factor(self.steps) for peak, factor in zip(self.peaks, self.factors, strict=True)]

    @torch.no_grad()
    def step(self) -> None:
        """Clip each member's gradients (in .grad, in place), then update its weights."""
        rates = self.learning_rates
        self.steps += 1
        grads = [p.grad for p in self.params]
        assert all(g is not None for g in grads), "a step fills every gradient"
        if self.kernel:
            torch.ops.digitsum.adamw_(
                self.params, grads, self.exp_avgs, self.exp_avg_sqs, self.steps, rates, *BETAS, EPS,
                self.weight_decays, self.max_norms,
            )  # fmt: skip
        else:
            self._torch_step(rates, [g for g in grads if g is not None])

    def _torch_step(self, rates: list[float], grads: list[torch.Tensor]) -> None:
        k, device = len(rates), grads[0].device
        limits = torch.tensor(self.max_norms, dtype=torch.float64, device=device)
        if bool((limits > 0).any()):
            norms = torch.stack([g.reshape(k, -1).double().square().sum(1) for g in grads]).sum(0).sqrt()
            scale = torch.where(limits > 0, (limits / (norms + 1e-6)).clamp(max=1.0), 1.0)
            for g in grads:
                g.mul_(scale.to(g.dtype).view(-1, *([1] * (g.dim() - 1))))
        beta1, beta2 = BETAS
        correction1, correction2 = 1 - beta1**self.steps, math.sqrt(1 - beta2**self.steps)
        rate = torch.tensor(rates, device=device)
        decay = 1 - rate * torch.tensor(self.weight_decays, device=device)
        for p, g, m, v in zip(self.params, grads, self.exp_avgs, self.exp_avg_sqs, strict=True):
            shape = (-1, *([1] * (p.dim() - 1)))
            p.mul_(decay.view(shape))
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            p.sub_((rate / correction1).view(shape) * m / (v.sqrt() / correction2 + EPS))
