"""Comparisons that know about seed noise: mean and spread over seeds, the bootstrap interval of a
difference between two model types, and the sentence a report says it in."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 10_000


@dataclass(frozen=True)
class Spread:
    """Values of one configuration over seeds."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def stdev(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self, percent: bool = True) -> str:
        if percent:
            return f"{100 * self.mean:.2f}% +- {100 * self.stdev:.2f} ({len(self.values)} seeds)"
        return f"{self.mean:.3g} +- {self.stdev:.2g} ({len(self.values)} seeds)"


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b), and its 95% bootstrap interval (seeds resampled within each side)."""

    value: float
    low: float
    high: float

    @property
    def within_noise(self) -> bool:
        return self.low <= 0.0 <= self.high


def bootstrap_difference(a: Spread, b: Spread, seed: int = 0) -> Difference:
    rng = np.random.default_rng(seed)
    xs, ys = np.asarray(a.values), np.asarray(b.values)
    means_a = rng.choice(xs, size=(BOOTSTRAP_SAMPLES, len(xs))).mean(axis=1)
    means_b = rng.choice(ys, size=(BOOTSTRAP_SAMPLES, len(ys))).mean(axis=1)
    low, high = np.percentile(means_a - means_b, [2.5, 97.5])
    return Difference(a.mean - b.mean, float(low), float(high))


def verdict(name_a: str, a: Spread, name_b: str, b: Spread) -> str:
    """One sentence: is ``a`` better than ``b`` beyond the spread over seeds? (``a`` has the higher mean.)"""
    diff = bootstrap_difference(a, b)
    interval = f"95% bootstrap interval of the difference [{100 * diff.low:+.2f}, {100 * diff.high:+.2f}] points"
    if len(a.values) < 2 or len(b.values) < 2:
        return (
            f"{name_a} {a.text()} against {name_b} {b.text()}: too few seeds to say whether the difference "
            "exceeds seed noise; rerun with more seeds (sweep rerun --top 1 --seeds 0,1,2)."
        )
    if diff.within_noise:
        return f"{name_a} and {name_b} are within seed noise: {a.text()} against {b.text()} ({interval})."
    return (
        f"{name_a} is better than {name_b} by {100 * diff.value:.2f} points, beyond seed noise: "
        f"{a.text()} against {b.text()} ({interval})."
    )
