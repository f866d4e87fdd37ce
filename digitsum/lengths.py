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


@dataclass(frozen=True)
class Probe:
    """Longer inputs than training saw, scored to measure length generalization."""

    lengths: tuple[int, ...] = ()
    sample: int = PROBE_SAMPLE


def parse_lengths(text: str) -> list[int]:
    """``"2-4"`` -> [2, 3, 4]; ``"5"`` -> [5]; ``"2,4,6"`` -> [2, 4, 6]."""
    lengths: list[int] = []
    for part in text.replace(" ", "").split(","):
        match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", part)
        if not match:
            raise DataError(f"lengths {shown(text)}: expected a length like 5, a range like 2-4 or a list like 2,4,6")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if low > high:
            raise DataError(f"lengths {shown(text)}: range {low}-{high} is empty; write the smaller length first")
        lengths.extend(range(low, high + 1))
    return check_lengths(lengths)


def check_lengths(lengths: list[int]) -> list[int]:
    """Sorted and deduplicated; DataError unless every length is in 1..MAX_LENGTH."""
    bad = [n for n in lengths if not 1 <= n <= MAX_LENGTH]
    if not lengths or bad:
        raise DataError(f"lengths {lengths}: every length must be between 1 and {MAX_LENGTH:,}")
    return sorted(set(lengths))


def lengths_text(lengths: list[int] | tuple[int, ...]) -> str:
    """The canonical spelling: [2, 3, 4] -> "2,3,4"."""
    return ",".join(map(str, lengths))
