"""Batched greedy (unrolled, autoregressive) decoding, exact-match accuracy and the teacher-forced
loss, for K stacked models at once (`digitsum.stacked`), each on its own rows; one model is K = 1.

Decoding: all rows at once: the prompts (x, EOS) of each prompt length run as one forward pass, their
states are merged, and then every row takes greedy steps in lockstep. The Python loops run over prompt
lengths and answer positions (a handful), never over rows. Model k's rows are sorted by length, so K
row sets decode together where each holds as many prompts of each length as the others (seeded splits
of one data setting do: the split is stratified by length and sum).

Scoring (`scores`): one teacher-forced pass gives both the loss and the exact match of greedy decoding.
A row is decoded exactly iff the argmax at every answer position of the teacher-forced pass is its
target: until the first wrong token, greedy decoding feeds the model exactly the tokens teacher forcing
feeds it, so both compute the same logits, and greedy decoding's first wrong token is teacher forcing's
first wrong argmax. (The tutorial's teacher-forced accuracy counted tokens, not rows, and no such
identity holds for it.) `accuracies` is checked against a naive one-row-at-a-time greedy decoder
(tests/test_decode.py); one pass instead of a decoding plus a loss pass halves scoring's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn import functional as F

from digitsum.data import EOA, IGNORE, N_OUTPUT_TOKENS, PAD, Encoded, Rows, encode
from digitsum.model import DigitSumModel
from digitsum.stacked import StackedModel, StackedState, stack

# Rows decoded together: bounds memory, and keeps each step's activations in the CPU's caches.
# Measured on 2 cores (100,000 five-digit rows): LSTM 64 took 1.1 s in chunks of 2,048 rows and
# 1.3 s in chunks of 16,384; LSTM 128 2.5 s in chunks of 1,024-2,048 and 4.3 s in 16,384.
CHUNK_FLOATS = 2**17  # rows x hidden_size x models per chunk (of decoding, and of scoring's one pass)
SHORT_WIDTH = 32  # tokens per row up to which the chunk is CHUNK_FLOATS alone; longer rows get fewer
BLOCK_TOKENS = 2**21  # rows x tokens encoded at once by `score_models`: memory bounded on long inputs


def chunk_rows(hidden_size: int, models: int = 1, width: int = 0, head_size: int = 0) -> int:
    """Rows per chunk; with rows of ``width`` tokens past SHORT_WIDTH, proportionally fewer (at least
    16), so a chunk's activations [rows, width, units] (units: the wider of the recurrent layer and the
    head) stay near what a chunk holds on short inputs."""
    if width <= SHORT_WIDTH:
        return max(256, CHUNK_FLOATS // (hidden_size * models))
    return max(16, CHUNK_FLOATS * SHORT_WIDTH // (max(hidden_size, head_size) * models * width))


def max_answer_tokens(input_length: int) -> int:
    """Digits of the largest possible sum (9 * length), plus EOA."""
    return len(str(9 * input_length)) + 1


def _stacked(model: DigitSumModel | StackedModel) -> StackedModel:
    return model if isinstance(model, StackedModel) else stack([model])


@torch.inference_mode()
def decode(stacked: StackedModel, datas: Sequence[Encoded], steps: int | None = None) -> list[torch.Tensor]:
    """Each model's decoded tokens [N, steps] on its own rows ``datas[k]``, in their order (after a row's
    EOA: PAD). ``steps`` defaults to the longest possible answer for the longest input, plus EOA."""
    was_training = stacked.training
    stacked.eval()
    try:
        steps = steps or max_answer_tokens(max(int(d.input_lengths.max()) for d in datas))
        c = stacked.config
        orders = [torch.argsort(d.input_lengths.cpu(), stable=True) for d in datas]  # lengths line up across K
        chunks = [
            _decode_chunk(stacked, _rows(datas, orders, index), steps)
            for index in torch.arange(len(datas[0])).split(
                chunk_rows(c.hidden_size, stacked.k, max(d.inputs.shape[1] for d in datas) + steps, c.head_size)
            )
        ]
        decoded = torch.cat(chunks, dim=1).cpu()  # [K, N, steps] in sorted order
        results = []
        for tokens, order in zip(decoded, orders, strict=True):
            unsorted = torch.empty_like(tokens)
            unsorted[order] = tokens
            results.append(unsorted)
        return results
    finally:
        stacked.train(was_training)


def _rows(datas: Sequence[Encoded], orders: list[torch.Tensor], index: torch.Tensor) -> list[Encoded]:
    """Each model's rows at these places of its length-sorted order."""
    return [d.take(order[index].to(d.inputs.device)) for d, order in zip(datas, orders, strict=True)]


def greedy_decode(model: DigitSumModel | StackedModel, data: Encoded, steps: int | None = None) -> torch.Tensor:
    """One model's decoded tokens [N, steps] for every row (`decode` with K = 1)."""
    return decode(_stacked(model), [data.to(next(model.parameters()).device)], steps)[0]


def _read_prompts(stacked: StackedModel, datas: list[Encoded]) -> tuple[torch.Tensor, StackedState]:
    """One stacked pass per prompt length over rows sorted by it; the last logits [K, N, V] and the state."""
    prompt_lengths = datas[0].input_lengths + 1
    logits_parts, h_parts, c_parts = [], [], []
    for length in torch.unique_consecutive(prompt_lengths).tolist():
        index = torch.nonzero(prompt_lengths == length).squeeze(1)
        tokens = torch.stack([d.inputs[index, :length] for d in datas])
        group_logits, group_state = stacked(tokens)
        logits_parts.append(group_logits[:, :, -1])
        h, c = group_state if isinstance(group_state, tuple) else (group_state, None)
        h_parts.append(h)
        if c is not None:
            c_parts.append(c)
    h_all = torch.cat(h_parts, dim=2)  # [K, layers, N, H]
    state: StackedState = (h_all, torch.cat(c_parts, dim=2)) if c_parts else h_all
    return torch.cat(logits_parts, dim=1), state


def _decode_chunk(stacked: StackedModel, datas: list[Encoded], steps: int) -> torch.Tensor:
    logits, state = _read_prompts(stacked, datas)
    k, batch = logits.shape[:2]
    device = logits.device
    decoded = torch.full((k, batch, steps), PAD, dtype=torch.long, device=device)
    finished = torch.zeros(k, batch, dtype=torch.bool, device=device)
    for step in range(steps):
        token = logits.argmax(dim=-1)
        decoded[:, :, step] = torch.where(finished, PAD, token)
        finished |= token == EOA
        if step + 1 == steps or bool(finished.all()):
            break
        step_logits, state = stacked(token.unsqueeze(2), state)
        logits = step_logits[:, :, 0]
    return decoded


def exact_matches(decoded: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """[N] bool: the decoded digits equal the answer's and EOA follows them (no leniency)."""
    width = max(decoded.shape[1], answers.shape[1])
    decoded = torch.nn.functional.pad(decoded, (0, width - decoded.shape[1]), value=PAD)
    answers = torch.nn.functional.pad(answers, (0, width - answers.shape[1]), value=PAD)
    scored = answers != PAD  # answer digits and its EOA
    return ((decoded == answers) | ~scored).all(dim=1)


@dataclass(frozen=True)
class Accuracy:
    exact_match: float
    n_rows: int
    by_length: dict[int, float]  # input length -> exact match
    rows_by_length: dict[int, int]
    # The same over the rows whose answer occurs in training ("in range"): a model that only writes
    # answers it was taught cannot answer the others, so this score has no such ceiling.
    in_range: Accuracy | None = None

    def to_dict(self) -> dict:
        result = {
            "exact_match": self.exact_match,
            "n_rows": self.n_rows,
            "by_length": {str(k): v for k, v in self.by_length.items()},
            "rows_by_length": {str(k): v for k, v in self.rows_by_length.items()},
        }
        if self.in_range is not None:
            result["in_range"] = self.in_range.to_dict()
        return result


@torch.inference_mode()
def scores(
    stacked: StackedModel, datas: Sequence[Encoded], in_ranges: Sequence[np.ndarray | None] | None = None
) -> tuple[list[float], list[Accuracy]]:
    """Each model k on its own rows ``datas[k]``, in one teacher-forced pass: its cross-entropy over every
    answer position, and its unrolled (greedy) exact match, overall and per input length, and with
    ``in_ranges[k]`` (a boolean mask of the rows whose answer occurs in model k's training rows, see
    `answers_in_range`) also over those rows alone."""
    totals, counts, correct = _matches(stacked, datas)
    masks = in_ranges if in_ranges is not None else [None] * len(datas)
    found = [_accuracy(c, d.input_lengths, mask) for c, d, mask in zip(correct, datas, masks, strict=True)]
    return (totals / counts.clamp(min=1)).tolist(), found


@torch.inference_mode()
def _matches(stacked: StackedModel, datas: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher-forced pass: each model's summed loss and scored positions [K], and its exact matches
    [K, N] (row by row, a chunk of rows at a time)."""
    was_training = stacked.training
    stacked.eval()
    try:
        width = max(d.inputs.shape[1] for d in datas)
        totals = torch.zeros(len(datas), dtype=torch.float64)
        counts = torch.zeros(len(datas), dtype=torch.float64)
        matches = []
        c = stacked.config
        for index in torch.arange(len(datas[0])).split(chunk_rows(c.hidden_size, len(datas), width, c.head_size)):
            parts = [d.take(index.to(d.inputs.device)) for d in datas]
            tokens = torch.stack([F.pad(d.inputs, (0, width - d.inputs.shape[1]), value=PAD) for d in parts])
            targets = torch.stack([F.pad(d.targets, (0, width - d.targets.shape[1]), value=IGNORE) for d in parts])
            logits, _ = stacked(tokens)
            each = F.cross_entropy(
                logits.reshape(-1, N_OUTPUT_TOKENS), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
            ).view(len(datas), -1)
            totals += each.sum(1).double().cpu()
            counts += (targets != IGNORE).view(len(datas), -1).sum(1).double().cpu()
            matches.append(((logits.argmax(-1) == targets) | (targets == IGNORE)).all(-1).cpu())  # [K, rows]
    finally:
        stacked.train(was_training)
    return totals, counts, torch.cat(matches, dim=1)


def _accuracy(correct: torch.Tensor, input_lengths: torch.Tensor, in_range: np.ndarray | None) -> Accuracy:
    result = accuracy_from_matches(correct, input_lengths)
    if in_range is None or not in_range.any():
        return result
    inside = torch.from_numpy(np.asarray(in_range, dtype=bool))
    return replace(result, in_range=accuracy_from_matches(correct[inside], input_lengths.cpu()[inside]))


def accuracies(
    stacked: StackedModel, datas: Sequence[Encoded], in_ranges: Sequence[np.ndarray | None] | None = None
) -> list[Accuracy]:
    """Each model's unrolled exact match on its own rows (`scores`)."""
    return scores(stacked, datas, in_ranges)[1]


def losses(stacked: StackedModel, datas: Sequence[Encoded]) -> list[float]:
    """Each model's teacher-forced cross-entropy over all answer positions of its own rows (`scores`)."""
    return scores(stacked, datas)[0]


def accuracy(model: DigitSumModel | StackedModel, data: Encoded, in_range: np.ndarray | None = None) -> Accuracy:
    """One model's accuracy (`accuracies` with K = 1)."""
    return accuracies(_stacked(model), [data.to(next(model.parameters()).device)], [in_range])[0]


def score_models(models: Sequence[DigitSumModel], rows: Rows, in_ranges: Sequence[np.ndarray | None]) -> list[Accuracy]:
    """Each model's accuracy on the same rows (and over its own in-range mask), all scored at once:
    models of one shape (seeds of one config, a run's members). The rows are encoded a block at a time
    (BLOCK_TOKENS), so memory does not grow with their number however long the inputs."""
    stacked = stack(list(models))
    device = next(models[0].parameters()).device
    step = max(1, BLOCK_TOKENS // (int(rows.lengths.max()) + 8))
    correct = []
    for start in range(0, len(rows), step):
        block = encode(rows.take(np.arange(start, min(start + step, len(rows))))).to(device)
        correct.append(_matches(stacked, [block] * len(models))[2])
    lengths = torch.from_numpy(rows.lengths)
    masks = list(in_ranges) if in_ranges is not None else [None] * len(models)
    return [_accuracy(c, lengths, mask) for c, mask in zip(torch.cat(correct, dim=1), masks, strict=True)]


def answers_in_range(answers: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Which `answers` (digit sums) are among the answers `seen` in training: a boolean mask."""
    return np.isin(answers, np.unique(seen))


def accuracy_from_matches(correct: torch.Tensor, input_lengths: torch.Tensor) -> Accuracy:
    lengths = input_lengths.cpu()
    hits = torch.bincount(lengths, weights=correct.double().cpu())
    counts = torch.bincount(lengths)
    present = torch.nonzero(counts).squeeze(1).tolist()
    return Accuracy(
        exact_match=float(correct.double().mean()),
        n_rows=int(correct.numel()),
        by_length={n: float(hits[n] / counts[n]) for n in present},
        rows_by_length={n: int(counts[n]) for n in present},
    )


def answers_to_text(decoded: torch.Tensor) -> list[str | None]:
    """Decoded tokens -> the answer as text; None where there is no EOA, no digit or a non-digit."""
    texts: list[str | None] = []
    for row in decoded.tolist():  # display path: a few rows, not a hot loop
        if EOA not in row:
            texts.append(None)
            continue
        digits = row[: row.index(EOA)]
        well_formed = digits and all(d < 10 for d in digits)
        texts.append("".join(map(str, digits)) if well_formed else None)
    return texts


def answers_to_numbers(decoded: torch.Tensor) -> np.ndarray:
    """Decoded tokens -> int64 answers, -1 where the row has no well-formed answer (vectorized)."""
    tokens = decoded.cpu().numpy()
    is_eoa = tokens == EOA
    has_eoa = is_eoa.any(axis=1)
    end = np.where(has_eoa, is_eoa.argmax(axis=1), tokens.shape[1])
    col = np.arange(tokens.shape[1])[None, :]
    in_answer = col < end[:, None]
    digit = (tokens < 10) & in_answer
    well_formed = has_eoa & (end > 0) & (digit == in_answer).all(axis=1)
    power = np.where(in_answer, end[:, None] - 1 - col, 0)
    value = (np.where(digit, tokens, 0) * (10 ** power.clip(0, 18))).sum(axis=1)
    return np.where(well_formed, value, -1)
