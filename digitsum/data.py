"""Digit-sum rows: make them, read and write the tutorial's CSV, encode them to tensors, batch them.

A row is a digit string ``x`` (leading zeros kept) and ``y``, the sum of its digits. Rows live in
numpy arrays (`Rows`); encoding turns a whole split into padded tensors at once (`Encoded`), so
training and decoding never loop over rows in Python.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from digitsum.errors import DataError, shown
from digitsum.files import atomic_path, require_file
from digitsum.in_range import sample_in_range
from digitsum.lengths import MAX_LENGTH, check_lengths

# Token ids. Digits are their own ids; PAD is an input id only and never a target.
EOS = 10  # end of the input sequence: the model answers from here on
EOA = 11  # end of the answer
PAD = 12
N_INPUT_TOKENS = 13
N_OUTPUT_TOKENS = 12  # digits, EOS (never a target), EOA
IGNORE = -100  # target for positions that are not scored (cross_entropy's ignore_index)

INT64_DIGITS = 18  # 10**18 still fits in int64: up to here, strings are drawn as numbers
FULL_LIMIT = 1_000_000  # above this many strings of one length, a seeded sample is drawn
AUTO_SAMPLE = 100_000  # the sample size used when FULL_LIMIT forces sampling


@dataclass(frozen=True)
class Rows:
    """Digit strings ``x`` (numpy unicode array) and their digit sums ``y`` (int64 array)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    @property
    def lengths(self) -> np.ndarray:
        return np.char.str_len(self.x).astype(np.int64)

    def take(self, index: np.ndarray) -> Rows:
        return Rows(self.x[index], self.y[index])


# ---------------------------------------------------------------------------------------------
# Making rows


def plan_rows(lengths: list[int], sample: int | None = None) -> dict[int, tuple[int, bool]]:
    """Rows per length and whether they are a seeded sample (asked for, or forced by FULL_LIMIT)."""
    if sample is not None and sample < 1:
        raise DataError(f"sample {sample}: must be at least 1 row per length")
    plan = {}
    for length in check_lengths(lengths):
        total = 10**length
        if sample is not None:
            plan[length] = (min(sample, total), sample < total)
        elif total > FULL_LIMIT:
            plan[length] = (AUTO_SAMPLE, True)
        else:
            plan[length] = (total, False)
    return plan


def make_rows(lengths: list[int], sample: int | None = None, seed: int = 0) -> Rows:
    """Every digit string of each length, in numeric order, or a seeded sample per `plan_rows`: drawn
    without replacement up to INT64_DIGITS digits, and above, digit by digit with replacement and then
    deduplicated (at 19 digits, 100,000 draws repeat one with a chance of 5e-10)."""
    xs, ys = [], []
    for length, (count, sampled) in plan_rows(lengths, sample).items():
        rng = np.random.default_rng([seed, length])
        if sampled and length > INT64_DIGITS:
            drawn = np.unique(rng.integers(0, 10, size=(count, length), dtype=np.int8), axis=0)  # sorted
            xs.append(digit_strings(drawn))
            ys.append(drawn.sum(axis=1, dtype=np.int64))
            continue
        if sampled:
            numbers = np.sort(rng.choice(10**length, size=count, replace=False))
        else:
            numbers = np.arange(10**length, dtype=np.int64)
        digits = (numbers[:, None] // 10 ** np.arange(length - 1, -1, -1, dtype=np.int64)) % 10
        xs.append(np.char.zfill(numbers.astype(str), length))
        ys.append(digits.sum(axis=1))
    return Rows(np.concatenate(xs), np.concatenate(ys).astype(np.int64))


def make_in_range_rows(lengths: list[int], sums: Iterable[int], sample: int, seed: int = 0) -> Rows:
    """``sample`` strings of each length, uniform among those whose digit sum is in ``sums`` (with
    replacement; `digitsum.in_range`), sorted: the rows a model that saw only those sums can answer."""
    wanted = set(sums)
    xs, ys = [], []
    for length in check_lengths(lengths):
        digits = sample_in_range(length, wanted, sample, [seed, length])
        digits = digits[np.lexsort(digits.T[::-1])]
        xs.append(digit_strings(digits))
        ys.append(digits.sum(axis=1, dtype=np.int64))
    return Rows(np.concatenate(xs), np.concatenate(ys).astype(np.int64))


def digit_strings(digits: np.ndarray) -> np.ndarray:
    """[N, L] digits (0-9) -> N unicode strings of L characters."""
    n, length = digits.shape
    as_bytes = np.ascontiguousarray(digits.astype(np.uint8) + ord("0")).view(f"S{length}").reshape(n)
    return as_bytes.astype(f"U{length}")


def digit_sums(x: np.ndarray) -> np.ndarray:
    """Each string's digit sum, from its characters (never through an integer of the whole string),
    a chunk of rows at a time so long strings never hold more than ~4M code points at once."""
    width = max(int(np.char.str_len(x).max()), 1) if len(x) else 1
    step = max(1, 2**22 // width)
    sums = [_chunk_sums(_char_codes(x[i : i + step])) for i in range(0, len(x), step)]
    return np.concatenate(sums or [np.zeros(0)]).astype(np.int64)


def _chunk_sums(codes: np.ndarray) -> np.ndarray:
    return np.where(codes > 0, codes - ord("0"), 0).sum(axis=1)


def _char_codes(x: np.ndarray) -> np.ndarray:
    """[N] unicode strings -> [N, width] code points, right-padded with 0."""
    width = max(int(np.char.str_len(x).max()), 1) if len(x) else 1
    return np.ascontiguousarray(x.astype(f"<U{width}")).view(np.uint32).reshape(len(x), width).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# CSV (headerless ``x,y``, the tutorial's format)

_LINE = re.compile(r"([0-9]+),([0-9]{1,6})")  # [0-9], not \d: \d matches other scripts' digits


def read_csv(path: str | Path) -> Rows:
    """Read and validate every line: digits only, and ``y`` is the digit sum of ``x``."""
    path = require_file(path, "file", f"make one with `sweep data {path} --lengths 2-4`")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file; expected headerless CSV lines like 1294,16") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}: the file is empty; expected headerless CSV lines like 1294,16")
    xs, ys = [], []
    for number, line in enumerate(lines, start=1):
        match = _LINE.fullmatch(line.strip())
        if not match:
            raise DataError(
                f"{path}:{number}: {line[:40]!r} is not a row; "
                "expected digits, a comma and their digit sum, like 1294,16"
            )
        if len(match.group(1)) > MAX_LENGTH:
            raise DataError(
                f"{path}:{number}: an input of {len(match.group(1)):,} digits; at most {MAX_LENGTH:,} digits a row"
            )
        xs.append(match.group(1))
        ys.append(int(match.group(2)))
    rows = Rows(np.array(xs), np.array(ys, dtype=np.int64))
    wrong = np.flatnonzero(digit_sums(rows.x) != rows.y)
    if len(wrong):
        i = int(wrong[0])
        raise DataError(
            f"{path}:{i + 1}: {lines[i][:60]!r}: {ys[i]} is not the digit sum of {_cut(xs[i])} "
            f"(it is {int(digit_sums(rows.x[i : i + 1])[0])})"
        )
    return rows


def _cut(x: str, limit: int = 40) -> str:
    return x if len(x) <= limit else f"{x[:limit]}... ({len(x):,} digits)"


def write_csv(rows: Rows, path: str | Path) -> None:
    """Write atomically, so a failure leaves no half-written file."""
    body = "\n".join(np.char.add(np.char.add(rows.x, ","), rows.y.astype(str)).tolist()) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(body, encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Encoding


@dataclass(frozen=True)
class Encoded:
    """A split as padded tensors.

    ``inputs``: x digits, EOS, y digits, PAD...  (the teacher-forced sequence)
    ``targets``: IGNORE over x, then y digits and EOA from the EOS position on, IGNORE after.
    ``answers``: y digits, EOA, PAD...  (what unrolled decoding must produce)
    ``input_lengths``: len(x); the prompt is ``inputs[:, :input_length + 1]``.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    answers: torch.Tensor
    input_lengths: torch.Tensor
    sequence_lengths: torch.Tensor
    sums: torch.Tensor  # y as a number, for sampling and error analysis

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def _tensors(self) -> list[torch.Tensor]:
        return [getattr(self, field.name) for field in fields(self)]

    def take(self, index: torch.Tensor) -> Encoded:
        return Encoded(*(t[index] for t in self._tensors()))

    def to(self, device: torch.device | str) -> Encoded:
        return Encoded(*(t.to(device) for t in self._tensors()))


def number_digits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative ints -> ([N, width] most-significant-first digits, right-padded with PAD; [N] counts)."""
    values = np.asarray(values, dtype=np.int64)
    counts = np.ones(len(values), dtype=np.int64)
    for power in range(1, 19):
        counts += values >= 10**power
    width = int(counts.max()) if len(values) else 1
    position = np.arange(width)
    exponent = counts[:, None] - 1 - position  # digit j of a c-digit number is 10**(c-1-j)
    digits = (values[:, None] // 10 ** np.clip(exponent, 0, None)) % 10
    return np.where(exponent >= 0, digits, PAD), counts


def encode(rows: Rows) -> Encoded:
    """Encode all rows at once, with no per-row Python loop."""
    if len(rows) == 0:
        raise DataError("no rows to encode")
    codes = _char_codes(rows.x)
    x_len = (codes > 0).sum(axis=1)
    x_digits = np.where(codes > 0, codes - ord("0"), PAD)
    y_digits, y_len = number_digits(rows.y)
    width = int((x_len + 1 + y_len).max())
    col = np.arange(width)[None, :]
    xl, yl = x_len[:, None], y_len[:, None]

    def gather(table: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.take_along_axis(table, np.clip(index, 0, table.shape[1] - 1), axis=1)

    x_at = gather(x_digits, np.broadcast_to(col, (len(rows), width)))
    y_at = gather(y_digits, col - xl - 1)  # y digit shown as input after EOS
    y_next = gather(y_digits, col - xl)  # y digit predicted at this position
    inputs = np.select([col < xl, col == xl, col <= xl + yl], [x_at, EOS, y_at], PAD)
    targets = np.select([col < xl, col < xl + yl, col == xl + yl], [IGNORE, y_next, EOA], IGNORE)
    a_col = np.arange(int(y_len.max()) + 1)[None, :]
    answers = np.select(
        [a_col < yl, a_col == yl], [gather(y_digits, np.broadcast_to(a_col, (len(rows), a_col.shape[1]))), EOA], PAD
    )
    as_long = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.long)  # noqa: E731
    return Encoded(
        inputs=as_long(inputs),
        targets=as_long(targets),
        answers=as_long(answers),
        input_lengths=as_long(x_len),
        sequence_lengths=as_long(x_len + 1 + y_len),
        sums=as_long(rows.y),
    )


def encode_prompts(sequences: list[str]) -> Encoded:
    """Encode digit strings with unknown answers (for `predict`): answers are left as PAD."""
    if not sequences:
        raise DataError(f"nothing to predict; give digit strings of 1 to {MAX_LENGTH:,} digits, like 1294")
    for text in sequences:
        if re.fullmatch("[0-9]+", text) and len(text) > MAX_LENGTH:
            raise DataError(f"{shown(text, 24)} has {len(text):,} digits; give 1 to {MAX_LENGTH:,} digits, like 1294")
        if not re.fullmatch(f"[0-9]{{1,{MAX_LENGTH}}}", text):
            raise DataError(f"{shown(text, 24)} is not a digit sequence; give 1 to {MAX_LENGTH:,} digits, like 1294")
    x = np.array(sequences)
    return encode(Rows(x, digit_sums(x)))


# ---------------------------------------------------------------------------------------------
# Splitting and batching


def stratified_split(rows: Rows, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split, stratified by (input length, answer), with every group represented in training.

    A plain random split can put a group's only row (``9999``, the only sum of 36) into validation,
    and then 100% validation accuracy is out of reach. Returns (train_index, val_index).
    """
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"train_split_fraction {train_fraction}: must be between 0 and 1 (exclusive)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    group = rows.lengths[order] * (int(rows.y.max()) + 1) + rows.y[order]  # by (length, sum)
    order = order[np.argsort(group, kind="stable")]
    group = np.sort(group, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
    sizes = np.diff(np.r_[starts, len(group)])
    rank = np.arange(len(group)) - np.repeat(starts, sizes)
    n_train = np.maximum(1, np.round(sizes * train_fraction)).astype(np.int64)
    in_train = rank < np.repeat(n_train, sizes)
    return np.sort(order[in_train]), np.sort(order[~in_train])


def epoch_order(
    data: Encoded,
    generator: torch.Generator,
    balance_lengths: bool = False,
    answer_balance: float = 0.0,
    max_length: int | None = None,
) -> torch.Tensor:
    """One epoch's row indices, shuffled with `generator`: its batches are consecutive slices of them.

    With ``balance_lengths`` every input length is drawn equally often, so the few short strings
    weigh as much as the many long ones. ``answer_balance`` in [0, 1] weighs each row by
    ``count(its sum) ** -answer_balance``: at 1 every sum is drawn equally often, so the rare large
    sums (which longer inputs need far more often) are learned as well as the common ones. Either
    draws as many rows as there are, with replacement; with neither, the epoch is a plain permutation.
    ``max_length`` (a curriculum's stage) keeps only the rows of inputs up to that length.
    """
    rows = torch.arange(len(data))
    if max_length is not None:
        rows = torch.nonzero(data.input_lengths.cpu() <= max_length).squeeze(1)
    n = len(rows)
    if not balance_lengths and answer_balance == 0:
        return rows[torch.randperm(n, generator=generator)]
    lengths, sums = data.input_lengths.cpu()[rows], data.sums.cpu()[rows]
    weights = torch.ones(n, dtype=torch.float64)
    if balance_lengths:
        weights /= torch.bincount(lengths)[lengths].double()
    if answer_balance:
        weights *= torch.bincount(sums)[sums].double() ** -answer_balance
    return rows[torch.multinomial(weights, n, replacement=True, generator=generator)]
