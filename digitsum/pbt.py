"""Population-based training's two moves (Jaderberg et al., 2017), as pure functions: which members
copy which (exploit: the bottom quantile copies a member of the top one), and the hyperparameters
a copy goes on with (explore: each perturbed by a factor, or drawn anew, within its range).

The copy itself is `digitsum.train.Exploit`, applied between two epochs of one stacked computation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """Where a hyperparameter may go: [low, high], drawn on a log scale where ``log``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def clip(self, value: float) -> float:
        value = min(max(value, self.low), self.high)
        return float(round(value)) if self.integer else value

    def draw(self, rng: random.Random) -> float:
        if self.log:
            return self.clip(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return self.clip(rng.uniform(self.low, self.high))


def exploit(scores: Sequence[float], quantile: float, rng: random.Random) -> dict[int, int]:
    """target -> source: each member in the bottom ``quantile`` of ``scores`` (higher is better) copies
    a member drawn from the top one. At least one member moves, and at most half of them. A NaN score
    (a member that diverged, or has nothing to score) ranks below every other."""
    n = len(scores)
    cut = min(n // 2, max(1, math.ceil(n * quantile)))
    rank = [-math.inf if math.isnan(s) else s for s in scores]
    order = sorted(range(n), key=lambda i: (rank[i], -i))  # ties: the later member ranks lower
    top = order[n - cut :]
    return {target: rng.choice(top) for target in order[:cut]}


def explore(
    params: dict[str, float],
    ranges: dict[str, Range],
    perturb: tuple[float, float],
    resample: float,
    rng: random.Random,
) -> dict[str, float]:
    """A copied member's new hyperparameters: each drawn anew from its range with chance ``resample``,
    else multiplied by one of the ``perturb`` factors; always inside its range."""
    moved = {}
    for key, value in params.items():
        span = ranges[key]
        moved[key] = span.draw(rng) if rng.random() < resample else span.clip(value * rng.choice(perturb))
    return moved
