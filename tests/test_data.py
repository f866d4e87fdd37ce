"""digitsum.data: making rows, CSV reading/writing, encoding, splitting and batching."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from digitsum import data
from digitsum.data import (
    AUTO_SAMPLE,
    EOA,
    EOS,
    FULL_LIMIT,
    IGNORE,
    PAD,
    Rows,
    digit_sums,
    encode,
    encode_prompts,
    epoch_order,
    make_rows,
    number_digits,
    plan_rows,
    read_csv,
    stratified_split,
    write_csv,
)
from digitsum.errors import DataError
from digitsum.lengths import MAX_LENGTH, parse_lengths

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rnn_101"
pytestmark = pytest.mark.usefixtures("one_thread")


def python_digit_sum(x: str) -> int:
    return sum(int(c) for c in x)


def rows_of(*pairs: tuple[str, int]) -> Rows:
    return Rows(np.array([x for x, _ in pairs]), np.array([y for _, y in pairs], dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# make_rows / plan_rows


def test_make_rows_length_one_is_every_digit():
    rows = make_rows([1])
    assert rows.x.tolist() == [str(d) for d in range(10)]
    assert rows.y.tolist() == list(range(10))
    assert rows.y.dtype == np.int64


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_make_rows_counts_order_leading_zeros_and_sums(length):
    rows = make_rows([length])
    assert len(rows) == 10**length
    expected = [str(n).zfill(length) for n in range(10**length)]
    assert rows.x.tolist() == expected  # numeric order, leading zeros kept
    assert rows.y.tolist() == [python_digit_sum(x) for x in expected]
    assert set(rows.lengths.tolist()) == {length}


def test_make_rows_several_lengths_are_sorted_and_deduplicated():
    rows = make_rows([3, 1, 2, 2])
    assert len(rows) == 10 + 100 + 1000
    assert rows.x[:12].tolist() == [str(d) for d in range(10)] + ["00", "01"]
    assert rows.x[10 + 100] == "000"
    assert rows.x[-1] == "999" and rows.y[-1] == 27
    assert np.all(np.diff(rows.lengths) >= 0)


@pytest.mark.parametrize("lengths", [[], [0], [MAX_LENGTH + 1], [2, 10_001], [-1]])
def test_make_rows_rejects_bad_lengths(lengths):
    with pytest.raises(DataError, match="between 1 and 10,000"):
        make_rows(lengths)


def test_make_rows_sample_is_seeded_sorted_unique_and_correct():
    a = make_rows([5], sample=300, seed=3)
    b = make_rows([5], sample=300, seed=3)
    c = make_rows([5], sample=300, seed=4)
    assert len(a) == 300
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)
    assert len(set(a.x.tolist())) == 300
    assert a.x.tolist() == sorted(a.x.tolist())
    assert all(len(x) == 5 for x in a.x.tolist())
    assert a.y.tolist() == [python_digit_sum(x) for x in a.x.tolist()]


def test_make_rows_sample_per_length_does_not_depend_on_other_lengths():
    both = make_rows([3, 4], sample=20, seed=7)
    alone = make_rows([4], sample=20, seed=7)
    assert len(both) == 40
    assert both.x[20:].tolist() == alone.x.tolist()


def test_make_rows_sample_at_least_total_enumerates_everything():
    rows = make_rows([1, 2], sample=50)
    assert len(rows) == 10 + 50
    assert rows.x[:10].tolist() == [str(d) for d in range(10)]  # 50 >= 10: every 1-digit string
    rows = make_rows([2], sample=100)
    assert rows.x.tolist() == [str(n).zfill(2) for n in range(100)]


@pytest.mark.parametrize("length", [18, 19, 20, 100, 1000, MAX_LENGTH])
def test_make_rows_samples_long_lengths_digit_by_digit(length):
    rows = make_rows([length], sample=50, seed=1)
    assert len(rows) == 50 and len(set(rows.x.tolist())) == 50
    assert all(len(x) == length for x in rows.x.tolist())
    assert rows.x.tolist() == sorted(rows.x.tolist())
    assert rows.y.tolist() == [python_digit_sum(x) for x in rows.x.tolist()]
    assert np.array_equal(make_rows([length], sample=50, seed=1).x, rows.x)
    if length >= 100:  # drawn digit by digit: each digit about as often as any other
        digits = np.frombuffer("".join(rows.x.tolist()).encode(), dtype=np.uint8) - ord("0")
        assert 0.08 < (digits == 7).mean() < 0.12


def test_make_rows_keeps_the_samples_of_lengths_up_to_18():
    # drawn as numbers without replacement, as before lengths grew past 18: the probes' rows stay the same
    rows = make_rows([10], sample=3, seed=1234)
    rng = np.random.default_rng([1234, 10])
    assert rows.x.tolist() == [str(n).zfill(10) for n in np.sort(rng.choice(10**10, size=3, replace=False))]


def test_plan_rows_full_sampled_and_forced_sample():
    assert plan_rows([2, 3]) == {2: (100, False), 3: (1000, False)}
    assert plan_rows([6]) == {6: (10**6, False)}  # exactly FULL_LIMIT: still enumerated
    assert FULL_LIMIT == 10**6
    assert plan_rows([7]) == {7: (AUTO_SAMPLE, True)}
    assert plan_rows([2, 8], sample=500) == {2: (100, False), 8: (500, True)}
    assert plan_rows([3], sample=1000) == {3: (1000, False)}
    assert plan_rows([3], sample=999) == {3: (999, True)}


@pytest.mark.parametrize("sample", [0, -5])
def test_plan_rows_rejects_non_positive_sample(sample):
    with pytest.raises(DataError, match="at least 1"):
        plan_rows([2], sample=sample)


def test_make_rows_above_full_limit_auto_samples():
    rows = make_rows([7], seed=0)
    assert len(rows) == AUTO_SAMPLE
    assert len(np.unique(rows.x)) == AUTO_SAMPLE
    assert set(rows.lengths.tolist()) == {7}
    assert np.array_equal(rows.y, digit_sums(rows.x))
    first = rows.x[:50].tolist()
    assert rows.y[:50].tolist() == [python_digit_sum(x) for x in first]


def test_digit_sums_of_mixed_lengths():
    x = np.array(["0", "9", "10", "999", "123456789012345678"])
    assert digit_sums(x).tolist() == [0, 9, 1, 27, 81]
    assert digit_sums(x).tolist() == [python_digit_sum(s) for s in x.tolist()]


# ---------------------------------------------------------------------------------------------
# parse_lengths


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2-4", [2, 3, 4]),
        ("5", [5]),
        ("2,4,6", [2, 4, 6]),
        ("1-2,5", [1, 2, 5]),
        (" 2 - 3 , 6 ", [2, 3, 6]),
        ("4,2,2", [2, 4]),
        ("3-3", [3]),
        ("1-18", list(range(1, 19))),
    ],
)
def test_parse_lengths(text, expected):
    assert parse_lengths(text) == expected


@pytest.mark.parametrize("text", ["", "a", "2-", "-3", "2..4", "2;3", "2-4-6", "1.5", "2,", "0", "10001", "0-3", "4-2"])
def test_parse_lengths_rejects(text):
    with pytest.raises(DataError, match="lengths"):
        parse_lengths(text)


def test_parse_lengths_reversed_range_says_so():
    with pytest.raises(DataError, match="smaller length first"):
        parse_lengths("4-2")


# ---------------------------------------------------------------------------------------------
# write_csv / read_csv


def test_write_read_round_trip(tmp_path):
    rows = make_rows([1, 2, 3])
    path = tmp_path / "sub" / "dir" / "rows.csv"  # parent folders are created
    write_csv(rows, path)
    back = read_csv(path)
    assert np.array_equal(back.x, rows.x)
    assert np.array_equal(back.y, rows.y)
    text = path.read_bytes().decode()
    assert text.startswith("0,0\n1,1\n")
    assert "\n00,0\n01,1\n" in text and text.endswith("999,27\n")
    assert "\r" not in text
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.csv"]  # no temporary left behind


def test_write_csv_replaces_an_existing_file(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("junk that is not csv\n" * 100)
    write_csv(rows_of(("12", 3)), path)
    assert path.read_text() == "12,3\n"


def test_write_csv_keeps_the_umask_permissions(tmp_path):
    """An ordinary open() honours the umask (usually 0644); the atomic write should match it."""
    path = tmp_path / "rows.csv"
    previous = os.umask(0o022)
    try:
        write_csv(rows_of(("12", 3)), path)
    finally:
        os.umask(previous)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.skipif(not (SHARED_DATA / "seq_len_4.csv").is_file(), reason="../shared/data/rnn_101 is absent")
def test_make_rows_matches_the_tutorial_seq_len_4():
    path = SHARED_DATA / "seq_len_4.csv"
    tutorial = read_csv(path)
    ours = make_rows([2, 3, 4])
    assert len(tutorial) == 11_100
    assert np.array_equal(ours.x, tutorial.x)
    assert np.array_equal(ours.y, tutorial.y)
    # Same text apart from line endings (the tutorial file uses CRLF).
    assert (
        path.read_bytes().replace(b"\r\n", b"\n")
        == ("\n".join(f"{x},{y}" for x, y in zip(ours.x, ours.y, strict=True)) + "\n").encode()
    )


@pytest.mark.skipif(not (SHARED_DATA / "seq_len_5_only.csv").is_file(), reason="../shared/data/rnn_101 is absent")
def test_make_rows_matches_the_tutorial_seq_len_5_only():
    tutorial = read_csv(SHARED_DATA / "seq_len_5_only.csv")
    ours = make_rows([5])
    assert len(tutorial) == 100_000
    assert np.array_equal(ours.x, tutorial.x)
    assert np.array_equal(ours.y, tutorial.y)


def test_read_csv_crlf_blank_trailing_lines_and_spaces(tmp_path):
    path = tmp_path / "crlf.csv"
    path.write_bytes(b"00,0\r\n12,3\r\n 9999,36 \r\n\r\n\r\n")
    rows = read_csv(path)
    assert rows.x.tolist() == ["00", "12", "9999"]
    assert rows.y.tolist() == [0, 3, 36]


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("12,3\n1a,1\n", 2, "is not a row"),  # non-digit x
        ("12,3\n45,9\n99,17\n", 3, "is not the digit sum"),  # wrong sum
        ("12,3\n45,9\r\n99,17\r\n", 3, "is not the digit sum"),  # wrong sum, CRLF
        ("12,3\n123\n", 2, "is not a row"),  # missing comma
        ("12,3\n12,3,4\n", 2, "is not a row"),  # extra field
        ("12,3\n\n45,9\n", 2, "is not a row"),  # blank line inside
        ("x,y\n12,3\n", 1, "is not a row"),  # header
        ("12,-3\n", 1, "is not a row"),  # negative sum
        ("12,3\n,3\n", 2, "is not a row"),  # empty x
        ("1" * 10_001 + ",10001\n", 1, "an input of 10,001 digits; at most 10,000"),
        ("12,3\n34,7\n56,11\n78,14\n", 4, "is not the digit sum"),
    ],
)
def test_read_csv_names_the_first_bad_line(tmp_path, body, line, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(body.encode())
    with pytest.raises(DataError, match=message) as info:
        read_csv(path)
    assert f"{path}:{line}:" in str(info.value)


def test_read_csv_wrong_sum_message_gives_the_right_sum(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("1294,15\n")
    with pytest.raises(DataError, match=r"15 is not the digit sum of 1294 \(it is 16\)"):
        read_csv(path)


@pytest.mark.parametrize("body", [b"", b"\n", b"\n\n  \n", b"\r\n"])
def test_read_csv_empty_file(tmp_path, body):
    path = tmp_path / "empty.csv"
    path.write_bytes(body)
    with pytest.raises(DataError, match="empty"):
        read_csv(path)


def test_read_csv_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a folder, not a file"):
        read_csv(tmp_path)  # there, but no file: not "no such file"


def test_read_csv_binary_file(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(DataError, match="not a text file"):
        read_csv(path)


def test_read_csv_rejects_non_ascii_digits(tmp_path):
    path = tmp_path / "arabic.csv"
    # '٣' is ARABIC-INDIC DIGIT THREE; digit_sums counts it as ord('٣') - ord('0') = 1587.
    path.write_text("12,3\n\u0663,1587\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}:2:")):
        read_csv(path)


def test_read_csv_huge_sum_is_a_data_error(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_text("12,3\n12,123456789012345678901234\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:2:")):
        read_csv(path)


# ---------------------------------------------------------------------------------------------
# Encoding


def test_number_digits():
    digits, counts = number_digits(np.array([0, 7, 10, 36, 162]))
    assert counts.tolist() == [1, 1, 2, 2, 3]
    assert digits.tolist() == [
        [0, PAD, PAD],
        [7, PAD, PAD],
        [1, 0, PAD],
        [3, 6, PAD],
        [1, 6, 2],
    ]


def test_encode_exact_tensors():
    enc = encode(rows_of(("12", 3), ("9999", 36), ("0", 0), ("50", 5)))
    I = IGNORE  # noqa: E741
    assert enc.inputs.tolist() == [
        [1, 2, EOS, 3, PAD, PAD, PAD],
        [9, 9, 9, 9, EOS, 3, 6],
        [0, EOS, 0, PAD, PAD, PAD, PAD],
        [5, 0, EOS, 5, PAD, PAD, PAD],
    ]
    assert enc.targets.tolist() == [
        [I, I, 3, EOA, I, I, I],
        [I, I, I, I, 3, 6, EOA],
        [I, 0, EOA, I, I, I, I],
        [I, I, 5, EOA, I, I, I],
    ]
    assert enc.answers.tolist() == [
        [3, EOA, PAD],
        [3, 6, EOA],
        [0, EOA, PAD],
        [5, EOA, PAD],
    ]
    assert enc.input_lengths.tolist() == [2, 4, 1, 2]
    assert enc.sequence_lengths.tolist() == [4, 7, 3, 4]
    for t in (enc.inputs, enc.targets, enc.answers, enc.input_lengths, enc.sequence_lengths):
        assert t.dtype == torch.long
    assert len(enc) == 4


def test_encode_targets_are_the_next_input_on_answer_positions():
    """Teacher forcing: from EOS on, the target at t is the input at t+1, and EOA ends each row."""
    rows = make_rows([1, 2, 3])
    enc = encode(rows)
    for i in [0, 9, 10, 55, 109, 110, 500, 1109]:
        xl, sl = int(enc.input_lengths[i]), int(enc.sequence_lengths[i])
        x, y = rows.x[i], str(rows.y[i])
        assert enc.inputs[i, :sl].tolist() == [int(c) for c in x] + [EOS] + [int(c) for c in y]
        assert enc.targets[i, :xl].tolist() == [IGNORE] * xl
        assert enc.targets[i, xl : sl - 1].tolist() == enc.inputs[i, xl + 1 : sl].tolist()
        assert int(enc.targets[i, sl - 1]) == EOA
        assert set(enc.targets[i, sl:].tolist()) <= {IGNORE}
        assert set(enc.inputs[i, sl:].tolist()) <= {PAD}
    # PAD is never a target, EOS is never a target.
    assert not (enc.targets == PAD).any()
    assert not (enc.targets == EOS).any()
    assert int((enc.targets == EOA).sum()) == len(rows)


def test_encode_empty_rows():
    with pytest.raises(DataError, match="no rows"):
        encode(Rows(np.array([], dtype="<U1"), np.array([], dtype=np.int64)))


def test_encoded_take_and_to():
    enc = encode(rows_of(("12", 3), ("9999", 36), ("0", 0)))
    part = enc.take(torch.tensor([2, 0]))
    assert part.input_lengths.tolist() == [1, 2]
    assert part.inputs.tolist() == [enc.inputs[2].tolist(), enc.inputs[0].tolist()]
    assert part.answers.tolist() == [enc.answers[2].tolist(), enc.answers[0].tolist()]
    moved = enc.to("cpu")
    assert torch.equal(moved.targets, enc.targets)


def test_encode_prompts():
    enc = encode_prompts(["1294", "0"])
    assert enc.inputs[0, :5].tolist() == [1, 2, 9, 4, EOS]
    assert enc.inputs[1, :2].tolist() == [0, EOS]
    assert enc.input_lengths.tolist() == [4, 1]
    assert enc.answers.tolist() == [[1, 6, EOA], [0, EOA, PAD]]


@pytest.mark.parametrize(
    ("sequences", "message"),
    [
        ([], "nothing to predict"),
        (["12a"], "'12a' is not a digit sequence"),
        ([""], "is not a digit sequence"),
        (["1" * 10_001], "has 10,001 digits; give 1 to 10,000 digits"),
        (["12", " 3"], "' 3' is not a digit sequence"),
        (["-1"], "'-1' is not a digit sequence"),
    ],
)
def test_encode_prompts_rejects(sequences, message):
    with pytest.raises(DataError, match=message):
        encode_prompts(sequences)


def test_encode_prompts_rejects_non_ascii_digits():
    with pytest.raises(DataError, match="digit sequence"):
        encode_prompts(["\u0663"])  # ARABIC-INDIC DIGIT THREE


# ---------------------------------------------------------------------------------------------
# stratified_split


@pytest.fixture(scope="module")
def rows_1_to_4():
    return make_rows([1, 2, 3, 4])


def groups(rows: Rows, index: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(rows.lengths[index].tolist(), rows.y[index].tolist(), strict=True))


@pytest.mark.parametrize("fraction", [0.5, 0.8, 0.9])
def test_stratified_split_sizes_disjoint_and_covering(rows_1_to_4, fraction):
    rows = rows_1_to_4
    train, val = stratified_split(rows, fraction, seed=0)
    assert len(train) + len(val) == len(rows)
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(rows)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # sorted, unique
    n_groups = len(groups(rows, np.arange(len(rows))))
    assert abs(len(train) - fraction * len(rows)) <= n_groups  # per-group rounding at most
    assert abs(len(train) / len(rows) - fraction) < 0.02


def test_stratified_split_deterministic_per_seed(rows_1_to_4):
    a_train, a_val = stratified_split(rows_1_to_4, 0.8, seed=1)
    b_train, b_val = stratified_split(rows_1_to_4, 0.8, seed=1)
    c_train, _ = stratified_split(rows_1_to_4, 0.8, seed=2)
    assert np.array_equal(a_train, b_train) and np.array_equal(a_val, b_val)
    assert not np.array_equal(a_train, c_train)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stratified_split_every_validation_group_is_in_training(rows_1_to_4, seed):
    rows = rows_1_to_4
    train, val = stratified_split(rows, 0.5, seed=seed)
    assert groups(rows, val) <= groups(rows, train)
    assert groups(rows, train) == groups(rows, np.arange(len(rows)))  # every group trains
    only = int(np.flatnonzero(rows.x == "9999")[0])
    assert only in train and only not in val
    assert int(np.flatnonzero(rows.x == "0000")[0]) in train  # the only sum 0 of length 4


def test_stratified_split_is_stratified_by_length(rows_1_to_4):
    rows = rows_1_to_4
    train, val = stratified_split(rows, 0.8, seed=0)
    for length, total in [(3, 1000), (4, 10_000)]:
        n_train = int((rows.lengths[train] == length).sum())
        assert abs(n_train - 0.8 * total) <= 0.02 * total + 5


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.2])
def test_stratified_split_rejects_fraction(rows_1_to_4, fraction):
    with pytest.raises(DataError, match="between 0 and 1"):
        stratified_split(rows_1_to_4, fraction, seed=0)


# ---------------------------------------------------------------------------------------------
# epoch_order


def test_epoch_order_is_a_seeded_permutation():
    enc = encode(make_rows([1, 2]))
    order = epoch_order(enc, torch.Generator().manual_seed(5))
    assert sorted(order.tolist()) == list(range(110))
    assert order.tolist() != list(range(110))
    again = epoch_order(enc, torch.Generator().manual_seed(5))
    other = epoch_order(enc, torch.Generator().manual_seed(6))
    assert torch.equal(order, again)
    assert not torch.equal(order, other)


def test_epoch_order_generator_advances_between_epochs():
    enc = encode(make_rows([2]))
    generator = torch.Generator().manual_seed(0)
    first = epoch_order(enc, generator)
    second = epoch_order(enc, generator)
    assert not torch.equal(first, second)


def test_epoch_order_balanced_draws_lengths_equally():
    enc = encode(make_rows([1, 2, 3]))  # 10, 100 and 1000 rows
    n = len(enc)
    order = epoch_order(enc, torch.Generator().manual_seed(0), balance_lengths=True)
    assert len(order) == n
    drawn = torch.bincount(enc.input_lengths[order], minlength=4)[1:].tolist()
    for count in drawn:
        assert abs(count - n / 3) < 80, drawn  # ~5 standard deviations
    # Without balancing, the 1-digit rows are about 1% of the epoch.
    plain = epoch_order(enc, torch.Generator().manual_seed(0))
    assert torch.bincount(enc.input_lengths[plain], minlength=4)[1:].tolist() == [10, 100, 1000]
    again = epoch_order(enc, torch.Generator().manual_seed(0), balance_lengths=True)
    assert torch.equal(order, again)


def test_a_curriculum_stage_orders_only_its_lengths():
    data = encode(make_rows([1, 2, 3]))
    for balance in (False, True):
        index = epoch_order(data, torch.Generator().manual_seed(0), balance, 0.0, max_length=2)
        assert len(index) == 110 and int(data.input_lengths[index].max()) == 2
        if not balance:
            assert sorted(index.tolist()) == list(range(110))  # a permutation of the rows up to length 2


def test_data_module_never_imports_the_sweep_layer():
    source = Path(data.__file__).read_text()
    for name in ("optuna", "typer", "plotly", "sweep"):
        assert f"import {name}" not in source and f"from {name}" not in source
