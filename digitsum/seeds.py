"""K seeds of one config trained at once (issue 23): `fit_seeds` trains, for each seed, the model that
`fit` would train alone with that seed (its initialization, split and batch order), as one stacked
computation (`digitsum.stacked`): each step is one forward and backward pass over all K models.

The torch.nn path only so far: rnn, lstm and gru without dropout, state noise or the sum-state
loss (those draw randomness or need what the stacked module does not give yet); the fused C++
kernel for K models and the sweep layer's `train.n_seeds` come next.
Scoring is stacked too (`digitsum.stacked_decode`): each model decodes its own validation rows.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from digitsum.checkpoint import save_checkpoint
from digitsum.config import Config
from digitsum.data import IGNORE, N_OUTPUT_TOKENS, PAD, Encoded, encode, epoch_batches
from digitsum.datasets import data_split
from digitsum.decode import Accuracy, accuracy
from digitsum.device import resolve_device
from digitsum.errors import ConfigError
from digitsum.model import DigitSumModel, count_parameters
from digitsum.stacked import StackedModel, stack
from digitsum.stacked_decode import same_shape, stacked_accuracy, stacked_losses
from digitsum.train import (
    HISTORY_COLUMNS,
    EpochResult,
    FitResult,
    TrainingDiverged,
    _rows_up_to,
    _schedule,
    curriculum_length,
    evaluate_loss,
    history_row,
)


def check_stackable(config: Config) -> None:
    """What `fit_seeds` cannot train yet, as one ValueError line."""
    tc, model = config.train, config.model
    if model.model_type not in ("rnn", "lstm", "gru") or model.dropout or tc.state_noise or tc.sum_state_weight:
        raise ValueError(
            "training seeds together takes rnn, lstm or gru without model.dropout, train.state_noise or "
            "train.sum_state_weight for now"
        )


def fit_seeds(
    config: Config, seeds: list[int], on_epoch: Callable[[list[EpochResult]], None] | None = None
) -> list[FitResult]:
    """One FitResult per seed, each what `fit(config with train.seed=seed)` returns on the torch.nn path;
    ``on_epoch`` hears each epoch's results, one per seed."""
    check_stackable(config)
    tc = config.train
    torch.set_flush_denormal(True)
    if tc.num_threads > 0:
        torch.set_num_threads(tc.num_threads)
    device = resolve_device(tc.device)
    models = []
    for seed in seeds:  # each built right after its own seed, as its run would build it
        torch.manual_seed(seed)
        models.append(DigitSumModel(config.model).to(device))
    splits = [data_split(dataclasses.replace(tc, seed=seed)) for seed in seeds]
    trains = [encode(rows).to(device) for rows, _ in splits]
    vals = [encode(rows).to(device) for _, rows in splits]
    stacked = stack(models)
    optimizer = torch.optim.AdamW(
        stacked.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay, fused=device.type in ("cpu", "cuda")
    )
    total_steps = sum(
        math.ceil(_rows_up_to(trains[0], curriculum_length(trains[0], epoch, tc)) / tc.batch_size)
        for epoch in range(1, tc.n_epochs + 1)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(tc.lr_schedule, total_steps))
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    runs = [_SeedRun() for _ in seeds]
    for epoch in range(1, tc.n_epochs + 1):
        start = time.perf_counter()
        learning_rate = optimizer.param_groups[0]["lr"]
        losses = _train_epoch(stacked, trains, optimizer, scheduler, config, generators, epoch)
        train_seconds = time.perf_counter() - start
        for k, loss in enumerate(losses):
            if not math.isfinite(loss):
                raise TrainingDiverged(f"seed {seeds[k]}: training loss is {loss} at epoch {epoch}")
        val_losses, scores = _score(stacked, vals)
        seconds = time.perf_counter() - start  # each seed is charged the shared pass whole, as its own run would be
        for k, run in enumerate(runs):
            result = EpochResult(
                epoch, losses[k], val_losses[k], scores[k].exact_match, seconds, learning_rate, train_seconds
            )
            run.add(result, scores[k], functools.partial(stacked.unstack, k))
        if on_epoch is not None:
            on_epoch([run.history[-1] for run in runs])
    return [run.result() for run in runs]


def train_seeds_run(
    config: Config, on_epoch: Callable[[list[EpochResult]], None] | None = None
) -> tuple[list[FitResult], Path]:
    """`train_run` for ``train.n_seeds`` seeds: ``<log_path>/<run_name>/config.json``, and for each seed S
    ``seed-S/history.csv`` and ``seed-S/best.pt`` (its config says train.seed=S, so evaluate and predict
    read it as any run's checkpoint)."""
    try:
        check_stackable(config)
    except ValueError as error:
        raise ConfigError(f"train.n_seeds={config.train.n_seeds}: {error}") from None
    tc = config.train
    seeds = [tc.seed + i for i in range(tc.n_seeds)]
    run_dir = Path(tc.log_path) / tc.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    results = fit_seeds(config, seeds, on_epoch)
    for seed, result in zip(seeds, results, strict=True):
        folder = run_dir / f"seed-{seed}"
        folder.mkdir(exist_ok=True)
        (folder / "history.csv").write_text(
            ",".join(HISTORY_COLUMNS) + "\n" + "".join(map(history_row, result.history))
        )
        alone = dataclasses.replace(config, train=dataclasses.replace(tc, seed=seed, n_seeds=1))
        metrics = {"epoch": result.best_epoch, "val_exact_match": result.best_exact_match}
        save_checkpoint(folder / "best.pt", result.model, alone.to_dict(), metrics)
    return results, run_dir


def _score(stacked: StackedModel, vals: list[Encoded]) -> tuple[list[float], list[Accuracy]]:
    """Each model's validation loss and unrolled accuracy on its own rows, all K at once where they line up."""
    if same_shape(vals):
        return stacked_losses(stacked, vals), stacked_accuracy(stacked, vals)
    models = [stacked.unstack(k) for k in range(len(vals))]
    return [evaluate_loss(m, v) for m, v in zip(models, vals, strict=True)], [
        accuracy(m, v) for m, v in zip(models, vals, strict=True)
    ]


@dataclasses.dataclass
class _SeedRun:
    """One seed's history and best epoch, as `fit` keeps them."""

    history: list[EpochResult] = dataclasses.field(default_factory=list)
    best_epoch: int = 0
    best_exact: float = -1.0
    best_model: DigitSumModel | None = None
    best_accuracy: Accuracy | None = None

    def add(self, result: EpochResult, val_accuracy: Accuracy, model: Callable[[], DigitSumModel]) -> None:
        """An epoch's scores; ``model`` gives this seed's model, copied only when the epoch is its best."""
        self.history.append(result)
        if val_accuracy.exact_match > self.best_exact:  # the earliest on ties, as fit keeps it
            self.best_epoch, self.best_exact, self.best_accuracy = result.epoch, val_accuracy.exact_match, val_accuracy
            self.best_model = model()

    def result(self) -> FitResult:
        assert self.best_model is not None, "the first epoch is always the best so far"
        model = self.best_model
        return FitResult(
            model, self.history, self.best_epoch, self.best_exact, count_parameters(model), self.best_accuracy
        )


def _train_epoch(
    stacked: StackedModel,
    trains: list[Encoded],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: Config,
    generators: list[torch.Generator],
    epoch: int,
) -> list[float]:
    """One epoch of all K models, step by step: each model's batch is its own run's batch. Mean loss per model."""
    tc = config.train
    stacked.train()
    max_length = curriculum_length(trains[0], epoch, tc)
    batches = [
        epoch_batches(data, tc.batch_size, generator, tc.balance_lengths, tc.answer_balance, max_length)
        for data, generator in zip(trains, generators, strict=True)
    ]
    width = max(data.inputs.shape[1] for data in trains)
    loss_sums = torch.zeros(len(trains), device=trains[0].inputs.device)
    for indices in zip(*batches, strict=True):
        tokens, targets = _batch(trains, indices, width)
        logits, _ = stacked(tokens)
        losses = _mean_losses(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # model k's weights get model k's gradient alone
        if tc.grad_clip > 0:
            _clip_each(stacked, tc.grad_clip)
        optimizer.step()
        scheduler.step()
        loss_sums += losses.detach() * torch.tensor([len(i) for i in indices], device=losses.device)
    rows = [_rows_up_to(data, max_length) for data in trains]
    return [float(total) / n for total, n in zip(loss_sums.tolist(), rows, strict=True)]


def _batch(trains: list[Encoded], indices: tuple[torch.Tensor, ...], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Model k's rows of this step, all K as [K, B, width]: tokens and targets."""
    rows = [data.take(index.to(data.inputs.device)) for data, index in zip(trains, indices, strict=True)]
    tokens = torch.stack([_padded(r.inputs, width, PAD) for r in rows])
    return tokens, torch.stack([_padded(r.targets, width, IGNORE) for r in rows])


def _padded(tensor: torch.Tensor, width: int, value: int) -> torch.Tensor:
    """[B, T] -> [B, width]: splits padded to different widths stack as one."""
    return F.pad(tensor, (0, width - tensor.shape[1]), value=value)


def _mean_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over each model's scored positions: [K], each as F.cross_entropy's mean."""
    k = logits.shape[0]
    each = F.cross_entropy(
        logits.reshape(-1, N_OUTPUT_TOKENS), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(k, -1)
    return each.sum(1) / (targets != IGNORE).view(k, -1).sum(1)


def _clip_each(stacked: StackedModel, max_norm: float) -> None:
    """clip_grad_norm_ of each model over its own gradients (the slices k of every stacked weight)."""
    grads = [p.grad for p in stacked.parameters() if p.grad is not None]
    norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # [K]
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.view(-1, *([1] * (grad.dim() - 1))))
