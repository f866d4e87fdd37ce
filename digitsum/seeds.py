"""K seeds of one config trained at once (issue 23's ``train.n_seeds``): `fit_seeds` trains, for each
seed, the model that `fit` would train alone with that seed (its initialization, split and batch
order), as one stacked computation (`digitsum.stacked`): each step is one forward and backward pass
over all K models, and scoring decodes all K at once (`digitsum.stacked_decode`).

Where `fit` would take the fused C++ step (one-layer LSTM or GRU, no head, `train.fused`), the K
models take it too, in one call per step (`digitsum.fused.FusedSteps`), and a seed computes exactly
what its own run computes on one thread; everything else goes through the stacked torch.nn path,
where a seed matches its separate run (``train.fused=false``) within float rounding, and in
distribution only where dropout or state noise draw randomness (`digitsum.stacked`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from digitsum.checkpoint import save_checkpoint
from digitsum.config import Config, TrainConfig, flatten
from digitsum.data import IGNORE, N_OUTPUT_TOKENS, PAD, Encoded, Rows, encode, epoch_batches
from digitsum.datasets import data_split, load_rows
from digitsum.decode import Accuracy, accuracy, answers_in_range
from digitsum.device import resolve_device
from digitsum.fused import FusedSteps, make_steps
from digitsum.lengths import Probe
from digitsum.model import DigitSumModel, count_parameters
from digitsum.stacked import StackedModel, stack
from digitsum.stacked_decode import same_shape, stacked_accuracy, stacked_losses
from digitsum.tensorboard import EventLog, recording
from digitsum.train import (
    HISTORY_COLUMNS,
    EpochResult,
    FitResult,
    TrainingDiverged,
    curriculum_length,
    evaluate_loss,
    history_row,
    make_optimizer,
    make_scheduler,
    rows_up_to,
    running_sums,
    unseen_probe,
)

OnSeedsEpoch = Callable[[list[EpochResult]], "bool | None"]


def config_seeds(train: TrainConfig) -> list[int]:
    """The seeds a config trains: train.seed, train.seed + 1, ..., train.seed + n_seeds - 1."""
    return [train.seed + i for i in range(train.n_seeds)]


def seed_config(config: Config, seed: int) -> Config:
    """The config of one of its seeds alone: what that seed's checkpoint records."""
    return dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed, n_seeds=1))


def fit_seeds(
    config: Config,
    seeds: list[int],
    on_epoch: OnSeedsEpoch | None = None,
    probe_rows: Rows | None = None,
    events: list[EventLog | None] | None = None,
) -> list[FitResult]:
    """One FitResult per seed, each what `fit(config with train.seed=seed)` returns.

    ``on_epoch`` hears each epoch's results, one per seed, and may return True to stop (all seeds).
    ``probe_rows`` are scored every epoch, for each seed also over the rows whose sum occurs in its
    own training rows, as `fit` scores them. ``events`` (one per seed, TensorBoard's event files)
    hear each seed's epoch as `fit`'s events do."""
    run = _SeedsRun.start(config, seeds, probe_rows, events or [None] * len(seeds))
    for epoch in range(1, config.train.n_epochs + 1):
        results = run.epoch(epoch)
        if on_epoch is not None and on_epoch(results):
            break
    return [seed_run.result() for seed_run in run.seed_runs]


@dataclasses.dataclass
class _SeedsRun:
    """What K seeds' training holds between epochs (`fit`'s _Run, for K models)."""

    config: Config
    seeds: list[int]
    stacked: StackedModel
    trains: list[Encoded]
    vals: list[Encoded]
    probe: Encoded | None
    probe_in_range: list[np.ndarray | None]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generators: list[torch.Generator]
    seed_runs: list[_SeedRun]
    events: list[EventLog | None]
    fused_steps: FusedSteps | None = None

    @classmethod
    def start(
        cls, config: Config, seeds: list[int], probe_rows: Rows | None, events: list[EventLog | None]
    ) -> _SeedsRun:
        tc = config.train
        torch.set_flush_denormal(True)
        if tc.num_threads > 0:
            torch.set_num_threads(tc.num_threads)
        device = resolve_device(tc.device)
        models = []
        for seed in seeds:  # each built right after its own seed, as its run would build it
            torch.manual_seed(seed)
            models.append(DigitSumModel(config.model).to(device))
        torch.manual_seed(seeds[0])  # dropout and state noise draw from here (one stream for all K)
        splits = [data_split(dataclasses.replace(tc, seed=seed)) for seed in seeds]
        trains = [encode(rows).to(device) for rows, _ in splits]
        stacked = stack(models)
        # as `fit` decides it: noise between steps needs the steps one at a time
        fused_steps = make_steps(stacked, device, tc.sum_state_weight) if tc.fused and not tc.state_noise else None
        optimizer = make_optimizer(stacked, tc, device, fused_steps is not None)
        return cls(
            config,
            seeds,
            stacked,
            trains,
            [encode(rows).to(device) for _, rows in splits],
            encode(probe_rows).to(device) if probe_rows is not None else None,
            [answers_in_range(probe_rows.y, rows.y) if probe_rows is not None else None for rows, _ in splits],
            optimizer,
            make_scheduler(optimizer, trains[0], tc),
            [torch.Generator().manual_seed(seed) for seed in seeds],
            [_SeedRun() for _ in seeds],
            events,
            fused_steps,
        )

    def epoch(self, epoch: int) -> list[EpochResult]:
        """Train one epoch of all K, then score each: validation loss and exact match, and the probe."""
        start = time.perf_counter()
        learning_rate = self.optimizer.param_groups[0]["lr"]
        losses = _train_epoch(self, epoch)
        train_seconds = time.perf_counter() - start
        for seed, loss in zip(self.seeds, losses, strict=True):
            if not math.isfinite(loss):
                raise TrainingDiverged(f"seed {seed}: training loss is {loss} at epoch {epoch}")
        val_losses, scores = _score(self.stacked, self.vals)
        probes = _score_probe(self.stacked, self.probe, self.probe_in_range)
        seconds = time.perf_counter() - start  # each seed is charged the shared pass whole, as its own run would be
        for k, seed_run in enumerate(self.seed_runs):
            result = EpochResult(
                epoch, losses[k], val_losses[k], scores[k].exact_match, seconds, learning_rate, train_seconds, probes[k]
            )
            seed_run.add(result, scores[k], functools.partial(self.stacked.unstack, k))
            log = self.events[k]
            if log is not None:  # this seed's model, copied out (8 rows decoded as examples)
                log.epoch(result, scores[k], self.stacked.unstack(k), self.vals[k])
        return [seed_run.history[-1] for seed_run in self.seed_runs]


def train_seeds_run(
    config: Config, on_epoch: OnSeedsEpoch | None = None, probe: Probe | None = None, tensorboard: bool = False
) -> tuple[list[FitResult], Path]:
    """`train_run` for ``train.n_seeds`` seeds: ``<log_path>/<run_name>/config.json``, and for each seed S
    ``seed-S/history.csv`` and ``seed-S/best.pt`` (its config says train.seed=S, so evaluate and predict
    read it as any run's checkpoint), and with ``tensorboard`` its event files in ``seed-S/`` (a run
    each in TensorBoard, where the package is installed). ``probe``'s lengths, unseen in training, are
    scored every epoch."""
    tc = config.train
    probe_rows = unseen_probe(load_rows(tc), probe or Probe())
    seeds = config_seeds(tc)
    run_dir = Path(tc.log_path) / tc.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    alone = [seed_config(config, seed) for seed in seeds]
    folders = [run_dir / f"seed-{seed}" for seed in seeds]
    for folder in folders:
        folder.mkdir(exist_ok=True)
        for stale in folder.glob("events.out.tfevents.*"):  # an overwritten run's curves are not this run's
            stale.unlink()
    with contextlib.ExitStack() as stack:
        events = [
            stack.enter_context(recording(folder if tensorboard else None, flatten(c.to_dict())))
            for folder, c in zip(folders, alone, strict=True)
        ]
        results = fit_seeds(config, seeds, on_epoch, probe_rows, events)
    for folder, result, own in zip(folders, results, alone, strict=True):
        (folder / "history.csv").write_text(
            ",".join(HISTORY_COLUMNS) + "\n" + "".join(map(history_row, result.history))
        )
        metrics = {"epoch": result.best_epoch, "val_exact_match": result.best_exact_match}
        save_checkpoint(folder / "best.pt", result.model, own.to_dict(), metrics)
    return results, run_dir


def _score_probe(
    stacked: StackedModel, probe: Encoded | None, in_ranges: list[np.ndarray | None]
) -> list[Accuracy | None]:
    """Each model's accuracy on the probe rows (one set for all K), and over its own in-range rows."""
    if probe is None:
        return [None] * len(in_ranges)
    return list(stacked_accuracy(stacked, [probe] * len(in_ranges), in_ranges))


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


def _train_epoch(run: _SeedsRun, epoch: int) -> list[float]:
    """One epoch of all K models, step by step: each model's batch is its own run's batch. Mean loss per model."""
    tc, stacked, trains = run.config.train, run.stacked, run.trains
    stacked.train()
    max_length = curriculum_length(trains[0], epoch, tc)
    batches = [
        epoch_batches(data, tc.batch_size, generator, tc.balance_lengths, tc.answer_balance, max_length)
        for data, generator in zip(trains, run.generators, strict=True)
    ]
    width = max(data.inputs.shape[1] for data in trains)
    sums = [running_sums(data) for data in trains] if tc.sum_state_weight > 0 else None
    loss_sums = torch.zeros(len(trains), device=trains[0].inputs.device)
    for indices in zip(*batches, strict=True):
        indices = tuple(index.to(data.inputs.device) for index, data in zip(indices, trains, strict=True))
        if run.fused_steps is not None:  # time-major, as the kernel reads them
            tokens, targets = _batch(trains, indices, width)
            losses = run.fused_steps(
                tokens.transpose(1, 2).contiguous(), targets.transpose(1, 2).contiguous(), tc.grad_clip
            )
        else:
            losses = _backward(run, indices, width, sums)
        run.optimizer.step()
        run.scheduler.step()
        loss_sums += losses.detach() * torch.tensor([len(i) for i in indices], device=losses.device)
    rows = [rows_up_to(data, max_length) for data in trains]
    return [float(total) / n for total, n in zip(loss_sums.tolist(), rows, strict=True)]


def _backward(
    run: _SeedsRun, indices: tuple[torch.Tensor, ...], width: int, sums: list[tuple[torch.Tensor, torch.Tensor]] | None
) -> torch.Tensor:
    """The torch.nn path of a step: each model's loss [K], its gradients (each model's clipped on its own)."""
    tc, stacked = run.config.train, run.stacked
    losses, outputs = _losses(stacked, *_batch(run.trains, indices, width), tc.state_noise)
    if sums is not None:
        losses = losses + tc.sum_state_weight * stacked_sum_state_spread(outputs, *_sum_batch(sums, indices, width))
    run.optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()  # model k's weights get model k's gradient alone
    if tc.grad_clip > 0:
        _clip_each(stacked, tc.grad_clip)
    return losses


def _batch(trains: list[Encoded], indices: tuple[torch.Tensor, ...], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Model k's rows of this step, all K as [K, B, width]: tokens and targets."""
    rows = [data.take(index) for data, index in zip(trains, indices, strict=True)]
    tokens = torch.stack([_padded(r.inputs, width, PAD) for r in rows])
    return tokens, torch.stack([_padded(r.targets, width, IGNORE) for r in rows])


def _losses(
    stacked: StackedModel, tokens: torch.Tensor, targets: torch.Tensor, noise: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each model's cross-entropy over its own batch ([K], each as F.cross_entropy's mean), and the
    last layer's outputs [K, B, T, H] (what the sum-state loss reads)."""
    outputs, _ = stacked.hidden(tokens, state_noise=noise)
    logits = stacked.read_out(outputs)
    k = logits.shape[0]
    each = F.cross_entropy(
        logits.reshape(-1, N_OUTPUT_TOKENS), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(k, -1)
    return each.sum(1) / (targets != IGNORE).view(k, -1).sum(1), outputs


def _sum_batch(
    sums: list[tuple[torch.Tensor, torch.Tensor]], indices: tuple[torch.Tensor, ...], width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each model's running sums and digit mask (`running_sums`) of its batch, as [K, B, width]."""
    pairs = [(running[index], mask[index]) for (running, mask), index in zip(sums, indices, strict=True)]
    return (
        torch.stack([_padded(running, width, 0) for running, _ in pairs]),
        torch.stack([_padded(mask, width, False) for _, mask in pairs]),
    )


def stacked_sum_state_spread(outputs: torch.Tensor, sums: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`sum_state_spread` of each of K models at once: outputs [K, B, T, H], sums and mask [K, B, T] -> [K]."""
    k = outputs.shape[0]
    states = outputs[mask]
    model = torch.arange(k, device=outputs.device).view(k, 1, 1).expand_as(mask)[mask]
    n_groups = 9 * outputs.shape[2] + 1  # every possible running sum, per model
    groups = model * n_groups + sums[mask]
    ones = torch.ones_like(groups, dtype=states.dtype)
    counts = torch.zeros(k * n_groups, device=states.device, dtype=states.dtype).index_add_(0, groups, ones)
    means = states.new_zeros(k * n_groups, states.shape[1]).index_add_(0, groups, states) / counts.clamp(min=1)[:, None]
    per_model = states.new_zeros(k).index_add_(0, model, ones)
    centres = states.new_zeros(k, states.shape[1]).index_add_(0, model, states) / per_model[:, None]
    within = states.new_zeros(k).index_add_(0, model, ((states - means[groups]) ** 2).sum(1)) / per_model
    overall = states.new_zeros(k).index_add_(0, model, ((states - centres[model]) ** 2).sum(1)) / per_model
    return within / (overall + 1e-6)


def _padded(tensor: torch.Tensor, width: int, value: int | bool) -> torch.Tensor:
    """[B, T] -> [B, width]: splits padded to different widths stack as one."""
    return F.pad(tensor, (0, width - tensor.shape[1]), value=value)


def _clip_each(stacked: StackedModel, max_norm: float) -> None:
    """clip_grad_norm_ of each model over its own gradients (the slices k of every stacked weight)."""
    grads = [p.grad for p in stacked.parameters() if p.grad is not None]
    norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # [K]
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.view(-1, *([1] * (grad.dim() - 1))))


def score_each(models: list[DigitSumModel], rows: Encoded, in_ranges: list[np.ndarray | None]) -> list[Accuracy]:
    """Each model's accuracy on the same rows (and over its own in-range mask, `answers_in_range`),
    all decoded at once where there are several (models of one config)."""
    if len(models) == 1:
        return [accuracy(models[0], rows, in_ranges[0])]
    return stacked_accuracy(stack(models), [rows] * len(models), in_ranges)
