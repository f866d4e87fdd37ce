"""Input lengths as users write them (``5``, a range ``2-4``, a list ``2,4,6``) and the probe of unseen ones.

No torch here: the CLI checks lengths and study specs without loading it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from digitsum.errors import DataError, shown

# Decoding is linear in the length and strings are sampled digit by digit, so this bounds only what
# one row costs (10,000 digits: ~40 KB as text, a second or so to decode a batch on a CPU).
MAX_LENGTH = 10_000
PROBE_SAMPLE = 10_000  # probe rows per length where 10**length is more than this
PROBE_SEED = 1234  # the probe's sample is the same for every trial and every study
# The length curve (`sweep evaluate --lengths`, the report): its default lengths, strings per length,
# and the exact match at which a model counts as holding at a length
CURVE_LENGTHS = (5, 10, 20, 50, 100)
IN_RANGE_SAMPLE = 5000
HOLD_LEVEL = 0.99


@dataclass(frozen=True)
class Probe:
    """Longer inputs than training saw, scored to measure length generalization."""

    lengths: tuple[int, ...] = ()
    sample: int = PROBE_SAMPLE
    # draw each length's rows uniformly among the strings whose sum occurs in training (digitsum.in_range)
    # rather than among all strings: past ~15 digits almost no uniform string is in range
    in_range: bool = False


def parse_lengths(text: str) -> list[int]:
    """``"2-4"`` -> [2, 3, 4]; ``"5"`` -> [5]; ``"2,4,6"`` -> [2, 4, 6]."""
    return check_lengths(_numbers(text, "lengths", "length", "a length like 5, a range like 2-4 or a list like 2,4,6"))


def parse_sums(text: str) -> list[int]:
    """Digit sums as ``0-36``, ``5`` or ``3,7,9`` (0 allowed, unlike a length), sorted and deduplicated."""
    return sorted(set(_numbers(text, "sums", "sum", "a sum like 7, a range like 0-36 or a list like 3,7,9")))


def _numbers(text: str, what: str, one: str, expected: str) -> list[int]:
    """A comma-separated list of numbers and ranges (``low-high``), in the order given."""
    numbers: list[int] = []
    for part in text.replace(" ", "").split(","):
        match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", part)
        if not match:
            raise DataError(f"{what} {shown(text)}: expected {expected}")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if low > high:
            raise DataError(f"{what} {shown(text)}: range {low}-{high} is empty; write the smaller {one} first")
        numbers.extend(range(low, high + 1))
    return numbers


def check_lengths(lengths: list[int]) -> list[int]:
    """Sorted and deduplicated; DataError unless every length is in 1..MAX_LENGTH."""
    bad = [n for n in lengths if not 1 <= n <= MAX_LENGTH]
    if not lengths or bad:
        raise DataError(f"lengths {lengths}: every length must be between 1 and {MAX_LENGTH:,}")
    return sorted(set(lengths))


def lengths_text(lengths: list[int] | tuple[int, ...]) -> str:
    """The canonical spelling: [2, 3, 4] -> "2,3,4"."""
    return ",".join(map(str, lengths))


def holds_up_to(lengths: list[int], values: list[float], level: float = HOLD_LEVEL) -> int | None:
    """The longest of ``lengths`` (ascending) up to which every value is at or above ``level``; None
    where the shortest already falls below it (a length curve: how far a model counts)."""
    longest = None
    for length, value in zip(lengths, values, strict=True):
        if value < level:
            break
        longest = length
    return longest
