"""Scoring K stacked models at once, each on its own rows: greedy decoding and exact match, and the
teacher-forced validation loss (what `digitsum.decode` and `evaluate_loss` do for one model).

Decoding reads the prompts of one length as one stacked pass, then takes greedy steps in lockstep,
as `digitsum.decode` does; it needs each model's rows to hold as many prompts of each length as
the others' (seeded splits of one data setting do: the split is stratified by length and sum).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.nn import functional as F

from digitsum.data import EOA, IGNORE, N_OUTPUT_TOKENS, PAD, Encoded
from digitsum.decode import Accuracy, accuracy_from_matches, exact_matches, max_answer_tokens
from digitsum.stacked import StackedModel, StackedState


def same_shape(datas: list[Encoded]) -> bool:
    """Whether the K row sets can be decoded together: equal counts of each prompt length."""
    counts = [torch.bincount(d.input_lengths.cpu(), minlength=64) for d in datas]
    return all(torch.equal(counts[0], c) for c in counts[1:])


@torch.inference_mode()
def stacked_accuracy(
    stacked: StackedModel, datas: list[Encoded], in_ranges: list[np.ndarray | None] | None = None
) -> list[Accuracy]:
    """Unrolled exact match of model k on rows ``datas[k]``, for every k, in one decoding; with
    ``in_ranges`` (a mask per model, see `answers_in_range`) also over those rows, as `accuracy` does."""
    was_training = stacked.training
    stacked.eval()
    try:
        decoded = _decode(stacked, datas)
    finally:
        stacked.train(was_training)
    results = []
    for k, (tokens, data) in enumerate(zip(decoded, datas, strict=True)):
        correct = exact_matches(tokens, data.answers.cpu())
        result = accuracy_from_matches(correct, data.input_lengths)
        mask = in_ranges[k] if in_ranges is not None else None
        if mask is not None and mask.any():
            inside = torch.from_numpy(np.asarray(mask, dtype=bool))
            result = replace(result, in_range=accuracy_from_matches(correct[inside], data.input_lengths[inside]))
        results.append(result)
    return results


def _decode(stacked: StackedModel, datas: list[Encoded]) -> list[torch.Tensor]:
    """Each model's decoded tokens [N, steps] in its rows' order (after EOA: PAD)."""
    steps = max_answer_tokens(max(int(d.input_lengths.max()) for d in datas))
    orders = [torch.argsort(d.input_lengths, stable=True) for d in datas]  # equal lengths line up across K
    sorted_datas = [d.take(order) for d, order in zip(datas, orders, strict=True)]
    logits, state = _read_prompts(stacked, sorted_datas)
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
    results = []
    for tokens, order in zip(decoded.cpu(), orders, strict=True):
        unsorted = torch.empty_like(tokens)
        unsorted[order.cpu()] = tokens
        results.append(unsorted)
    return results


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


@torch.inference_mode()
def stacked_losses(stacked: StackedModel, datas: list[Encoded]) -> list[float]:
    """Teacher-forced cross-entropy of model k over rows ``datas[k]`` (rows counted alike: one pass)."""
    was_training = stacked.training
    stacked.eval()
    try:
        width = max(d.inputs.shape[1] for d in datas)
        tokens = torch.stack([F.pad(d.inputs, (0, width - d.inputs.shape[1]), value=PAD) for d in datas])
        targets = torch.stack([F.pad(d.targets, (0, width - d.targets.shape[1]), value=IGNORE) for d in datas])
        logits, _ = stacked(tokens)
        each = F.cross_entropy(
            logits.reshape(-1, N_OUTPUT_TOKENS), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
        ).view(len(datas), -1)
        return (each.sum(1) / (targets != IGNORE).view(len(datas), -1).sum(1).clamp(min=1)).tolist()
    finally:
        stacked.train(was_training)
