"""Digit strings drawn uniformly among those whose digit sum is in a given set (the sums a model saw in
training: "in range"), at any length.

Rejection sampling cannot reach long lengths: at 20 digits about 7 strings in a million have a sum of
at most 36 (what training on up to 4 digits shows), at 100 digits about 1 in 10^40. Instead, with
N(n, s) the number of n-digit strings summing to s (exact integers, by dynamic programming over
sums up to the largest wanted), a row draws its sum s with chance N(L, s) / sum over the set, then
its digits left to right, digit d with chance N(n - 1, r - d) / N(n, r) for the n digits left and
the r still to place: every string of the set is then equally likely. The loop runs over positions;
each position draws every row's digit at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from digitsum.errors import DataError


def string_counts(length: int, max_sum: int) -> list[list[int]]:
    """counts[n][s]: how many n-digit strings (leading zeros allowed) have digit sum s, for n in
    0..length and s in 0..max_sum (exact: Python integers)."""
    counts = [[1] + [0] * max_sum]
    for _ in range(length):
        previous = counts[-1]
        counts.append([sum(previous[s - d] for d in range(min(9, s) + 1)) for s in range(max_sum + 1)])
    return counts


def sample_in_range(length: int, sums: Iterable[int], count: int, seed: int | list[int]) -> np.ndarray:
    """``count`` strings of ``length`` digits, uniform among those whose digit sum is in ``sums``, with
    replacement (seeded); their digits as an int8 array [count, length]. DataError where no string of
    this length has such a sum."""
    given = sorted({int(s) for s in sums})
    wanted = [s for s in given if 0 <= s <= 9 * length]
    if not wanted:
        shown = f"{given[0]}-{given[-1]}" if given and len(given) == given[-1] - given[0] + 1 else given
        raise DataError(f"length {length}: no string of {length} digits has a digit sum in {shown}")
    counts = string_counts(length, wanted[-1])
    rng = np.random.default_rng(seed)
    total = sum(counts[length][s] for s in wanted)
    chance = np.array([counts[length][s] / total for s in wanted])
    remaining = np.array(wanted)[rng.choice(len(wanted), size=count, p=chance / chance.sum())]
    steps = _digit_chances(counts, length, wanted[-1])
    digits = np.empty((count, length), dtype=np.int8)
    for position in range(length):
        left = length - position
        cumulative = np.cumsum(steps[left][remaining], axis=1)  # [count, 10]
        draw = rng.random(count)[:, None] * cumulative[:, -1:]
        digit = np.minimum((draw >= cumulative).sum(axis=1), 9)
        digits[:, position] = digit
        remaining = remaining - digit
    assert (remaining == 0).all(), "the digits drawn add up to each row's sum"
    return digits


def _digit_chances(counts: list[list[int]], length: int, max_sum: int) -> np.ndarray:
    """steps[n][r][d]: the chance that the next digit is d, with n digits left to place summing to r."""
    steps = np.zeros((length + 1, max_sum + 1, 10))
    for n in range(1, length + 1):
        for r in range(max_sum + 1):
            if counts[n][r] == 0:
                continue
            for d in range(min(9, r) + 1):
                steps[n][r][d] = counts[n - 1][r - d] / counts[n][r]
    return steps
