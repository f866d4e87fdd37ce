"""Strings drawn uniformly among those whose digit sum is in a set, at any length (digitsum.in_range,
digitsum.data.make_in_range_rows)."""

from __future__ import annotations

import numpy as np
import pytest

from digitsum.data import make_in_range_rows
from digitsum.errors import DataError
from digitsum.in_range import string_counts


def python_digit_sum(x: str) -> int:
    return sum(int(c) for c in x)


@pytest.mark.parametrize("length", [5, 19, 20, 100, 1000])
def test_in_range_rows_are_uniform_among_strings_of_the_wanted_sums(length):
    rows = make_in_range_rows([length], range(0, 37), sample=2000, seed=5)
    assert len(rows) == 2000 and set(np.char.str_len(rows.x).tolist()) == {length}
    assert rows.y.max() <= 36 and rows.y.tolist() == [python_digit_sum(x) for x in rows.x.tolist()]
    assert np.array_equal(make_in_range_rows([length], range(0, 37), sample=2000, seed=5).x, rows.x)
    counts = string_counts(length, 36)[length]
    expected = np.array(counts, dtype=float) / sum(counts)  # each sum as often as it has strings
    seen = np.bincount(rows.y, minlength=37) / len(rows)
    assert np.abs(seen - expected).max() < 0.04


def test_in_range_rows_at_a_short_length_match_every_such_string_equally():
    # 3 digits summing to at most 4: 35 strings; 35,000 draws give each about 1,000
    rows = make_in_range_rows([3], [0, 1, 2, 3, 4], sample=35_000, seed=2)
    strings, counts = np.unique(rows.x, return_counts=True)
    assert len(strings) == 35 == sum(string_counts(3, 4)[3])
    assert counts.min() > 850 and counts.max() < 1150


def test_string_counts_are_exact():
    counts = string_counts(20, 36)
    assert counts[2][18] == 1 and counts[2][9] == 10 and counts[4][36] == 1
    assert sum(string_counts(4, 36)[4]) == 10_000
    # at 20 digits about 7 strings in a million have a sum of at most 36
    assert 6e-6 < sum(counts[20]) / 10**20 < 8e-6


def test_in_range_rows_refuse_sums_no_string_has():
    with pytest.raises(DataError, match="no string of 2 digits has a digit sum in"):
        make_in_range_rows([2], [19, 20], sample=5)
