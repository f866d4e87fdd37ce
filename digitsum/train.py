"""Training: `fit`, the epoch loop (teacher-forced loss, unrolled accuracy every epoch), and `train_run`."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from digitsum.checkpoint import save_checkpoint
from digitsum.config import LR_SCHEDULES, MODEL_TYPES, Config, ModelConfig, TrainConfig, flatten
from digitsum.data import IGNORE, N_OUTPUT_TOKENS, Encoded, Rows, encode, epoch_batches
from digitsum.datasets import load_rows, probe_rows, split_rows
from digitsum.decode import Accuracy, accuracy, answers_in_range
from digitsum.device import resolve_device
from digitsum.errors import ConfigError
from digitsum.fused import FusedAdamW, FusedStep, make_step
from digitsum.lengths import Probe, lengths_text
from digitsum.model import DigitSumModel, count_parameters
from digitsum.tensorboard import EventLog, recording


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val_exact_match: float
    seconds: float
    learning_rate: float
    train_seconds: float = 0.0  # the training pass alone (no scoring); what "time to train" means
    probe: Accuracy | None = None  # the probe's accuracy per length, and over its in-range rows, when given

    @property
    def probe_exact_match(self) -> float | None:
        """Unrolled exact match on the probe rows, when given."""
        return self.probe.exact_match if self.probe is not None else None


def time_to_target(history: list[EpochResult], target: float) -> tuple[int, float] | None:
    """(epoch, training seconds up to and including it) where validation exact match first reached
    ``target``; None if it never did."""
    seconds = 0.0
    for result in history:
        seconds += result.train_seconds
        if result.val_exact_match >= target:
            return result.epoch, seconds
    return None


@dataclass
class FitResult:
    model: DigitSumModel  # holds the best epoch's weights
    history: list[EpochResult]
    best_epoch: int
    best_exact_match: float
    n_parameters: int
    best_val_accuracy: Accuracy | None = None  # the best epoch's validation accuracy, per input length too

    @property
    def seconds_per_epoch(self) -> float:
        return sum(e.seconds for e in self.history) / max(len(self.history), 1)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


OnEpoch = Callable[[EpochResult], "bool | None"]


def fit(
    config: Config,
    train_rows: Rows,
    val_rows: Rows,
    on_epoch: OnEpoch | None = None,
    checkpoint_path: str | Path | None = None,
    probe_rows: Rows | None = None,
    events: EventLog | None = None,
) -> FitResult:
    """Train with teacher forcing on the answer positions; score unrolled exact match every epoch.

    ``on_epoch`` runs after each epoch and may return True to stop. The best epoch by validation
    exact match (the earliest on ties) is kept: written to ``checkpoint_path`` when given, and
    loaded back into the returned model. ``probe_rows`` (e.g. longer, unseen inputs) are scored
    every epoch too, but never used to choose the best epoch: the probe stays a held-out test.
    ``events`` (TensorBoard's event files) hears every epoch before ``on_epoch`` does.
    """
    run = _Run.start(config, train_rows, val_rows, probe_rows)
    history: list[EpochResult] = []
    best_epoch, best_exact, best_state, best_val_accuracy = 0, -1.0, None, None
    for epoch in range(1, config.train.n_epochs + 1):
        result, val_accuracy = run.epoch(epoch)
        history.append(result)
        if events is not None:
            events.epoch(result, val_accuracy, run.model, run.val)
        if not math.isfinite(result.train_loss):
            raise TrainingDiverged(f"training loss is {result.train_loss} at epoch {epoch}; lower train.learning_rate")
        if result.val_exact_match > best_exact:
            best_epoch, best_exact, best_val_accuracy = epoch, result.val_exact_match, val_accuracy
            best_state = copy.deepcopy(run.model.state_dict())
            if checkpoint_path is not None:
                metrics = {"epoch": epoch, "val_exact_match": best_exact}
                save_checkpoint(checkpoint_path, run.model, config.to_dict(), metrics)
        if on_epoch is not None and on_epoch(result):
            break
    assert best_state is not None, "the first epoch is always the best so far"
    run.model.load_state_dict(best_state)
    return FitResult(run.model, history, best_epoch, best_exact, count_parameters(run.model), best_val_accuracy)


@dataclass
class _Run:
    """What one training run holds between epochs."""

    config: TrainConfig
    model: DigitSumModel
    train: Encoded
    val: Encoded
    probe: Encoded | None
    probe_in_range: np.ndarray | None  # probe rows whose answer occurs in the training rows
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator
    fused_step: FusedStep | None

    @classmethod
    def start(cls, config: Config, train_rows: Rows, val_rows: Rows, probe_rows: Rows | None) -> _Run:
        tc = config.train
        torch.set_flush_denormal(True)  # denormals made late LSTM epochs ~3x slower on CPU
        if tc.num_threads > 0:
            torch.set_num_threads(tc.num_threads)
        device = resolve_device(tc.device)
        torch.manual_seed(tc.seed)
        model = DigitSumModel(config.model).to(device)
        train, val = encode(train_rows).to(device), encode(val_rows).to(device)
        probe = encode(probe_rows).to(device) if probe_rows is not None else None
        probe_in_range = answers_in_range(probe_rows.y, train_rows.y) if probe_rows is not None else None
        generator = torch.Generator().manual_seed(tc.seed)
        # noise between steps needs the steps one at a time, which the fused kernel does not expose
        fused_step = make_step(model, device, tc.sum_state_weight) if tc.fused and not tc.state_noise else None
        optimizer = make_optimizer(model, tc, device, fused_step is not None)
        scheduler = make_scheduler(optimizer, train, tc)
        return cls(tc, model, train, val, probe, probe_in_range, optimizer, scheduler, generator, fused_step)

    def epoch(self, epoch: int) -> tuple[EpochResult, Accuracy]:
        """Train one epoch, then score it: validation loss and unrolled exact match, and the probe."""
        start = time.perf_counter()
        learning_rate = self.optimizer.param_groups[0]["lr"]
        train_loss = _train_epoch(
            self.model,
            self.train,
            self.optimizer,
            self.scheduler,
            self.config,
            self.generator,
            self.fused_step,
            curriculum_length(self.train, epoch, self.config),
        )
        train_seconds = time.perf_counter() - start
        val_loss = evaluate_loss(self.model, self.val)
        val_accuracy = accuracy(self.model, self.val)
        probe = accuracy(self.model, self.probe, self.probe_in_range) if self.probe is not None else None
        seconds = time.perf_counter() - start
        result = EpochResult(
            epoch,
            train_loss,
            val_loss,
            val_accuracy.exact_match,
            seconds,
            learning_rate,
            train_seconds,
            probe,
        )
        return result, val_accuracy


def curriculum_length(data: Encoded, epoch: int, tc: TrainConfig) -> int | None:
    """The longest input length trained on at this (1-based) epoch; None: all of them.

    ``train.curriculum`` c spreads the lengths over the first c of the epochs: with lengths 1-4,
    40 epochs and c = 0.4, epochs 1-4 train on length 1, 5-8 on lengths 1-2, ..., and 13-40 on all."""
    ramp = math.ceil(round(tc.curriculum * tc.n_epochs, 6))  # any curriculum > 0 lasts an epoch at least
    if ramp == 0 or epoch > ramp:
        return None
    lengths = torch.unique(data.input_lengths).tolist()
    return lengths[min(len(lengths) - 1, (epoch - 1) * len(lengths) // ramp)]


def rows_up_to(data: Encoded, max_length: int | None) -> int:
    """How many rows an epoch trains on with the curriculum at ``max_length``."""
    return len(data) if max_length is None else int((data.input_lengths <= max_length).sum())


def make_optimizer(
    model: torch.nn.Module, tc: TrainConfig, device: torch.device, fused: bool = False
) -> torch.optim.Optimizer:
    """AdamW; on the fused path its update is one C++ call too (FusedAdamW)."""
    if fused:
        return FusedAdamW(model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
    # The fused kernel runs one op per step instead of a handful per parameter tensor; with ~1 ms
    # per step of fixed overhead on tiny models that is a large share of the time.
    fast = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay, fused=fast or None)


def make_scheduler(
    optimizer: torch.optim.Optimizer, train: Encoded, tc: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """``train.lr_schedule`` over every step of the run (the curriculum's shorter epochs counted)."""
    total_steps = sum(
        math.ceil(rows_up_to(train, curriculum_length(train, epoch, tc)) / tc.batch_size)
        for epoch in range(1, tc.n_epochs + 1)
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(tc.lr_schedule, total_steps))


def _schedule(name: str, total_steps: int) -> Callable[[int], float]:
    if name == "constant":
        return lambda step: 1.0
    if name == "cosine":
        return lambda step: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    raise ConfigError(f"lr_schedule {name!r}: choose one of {', '.join(LR_SCHEDULES)}")


def _train_epoch(
    model: DigitSumModel,
    data: Encoded,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    tc: TrainConfig,
    generator: torch.Generator,
    fused_step: FusedStep | None = None,
    max_length: int | None = None,
) -> float:
    model.train()
    sums = running_sums(data) if tc.sum_state_weight > 0 else None
    if fused_step is not None:  # time-major, as the kernel reads them
        tokens, targets = data.inputs.T.contiguous(), data.targets.T.contiguous()
    loss_sum = torch.zeros((), device=data.inputs.device)
    batches = epoch_batches(data, tc.batch_size, generator, tc.balance_lengths, tc.answer_balance, max_length)
    for index in batches:
        index = index.to(data.inputs.device)
        if fused_step is not None:
            loss = fused_step(tokens.index_select(1, index), targets.index_select(1, index), tc.grad_clip)
        else:
            loss = _eager_loss(model, data, index, tc, sums)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * len(index)
    return float(loss_sum) / rows_up_to(data, max_length)  # one sync per epoch, not one per step


def _eager_loss(
    model: DigitSumModel,
    data: Encoded,
    index: torch.Tensor,
    tc: TrainConfig,
    sums: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    outputs, _ = model.hidden(data.inputs[index], state_noise=tc.state_noise)
    logits = model.head(model.dropout(outputs))
    loss = F.cross_entropy(logits.reshape(-1, N_OUTPUT_TOKENS), data.targets[index].reshape(-1), ignore_index=IGNORE)
    if sums is not None:
        loss = loss + tc.sum_state_weight * sum_state_spread(outputs, sums[0][index], sums[1][index])
    return loss


def running_sums(data: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, T] sum of the digits up to and including each position, and the [N, T] bool mask of
    digit positions (EOS, answer and padding are False)."""
    positions = torch.arange(data.inputs.shape[1], device=data.inputs.device)
    mask = positions[None, :] < data.input_lengths[:, None]
    return torch.where(mask, data.inputs, 0).cumsum(1), mask


def sum_state_spread(outputs: torch.Tensor, sums: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Spread of the hidden states within equal running sums, over their spread overall.

    0 means the state after a digit is a function of the sum so far alone, whatever the position:
    the counter a longer input needs. Without it the sweep's best models were position-dependent,
    and 5-digit inputs with large sums came out ~2 too small.
    """
    states, groups = outputs[mask], sums[mask]
    n_groups = 9 * outputs.shape[1] + 1  # every possible running sum; no device sync for the max
    counts = torch.zeros(n_groups, device=states.device).index_add_(
        0, groups, torch.ones_like(groups, dtype=states.dtype)
    )
    means = (
        torch.zeros(n_groups, states.shape[1], device=states.device).index_add_(0, groups, states)
        / counts.clamp(min=1)[:, None]
    )
    within = ((states - means[groups]) ** 2).sum(1).mean()
    overall = ((states - states.mean(0)) ** 2).sum(1).mean()
    return within / (overall + 1e-6)


@torch.inference_mode()
def evaluate_loss(model: DigitSumModel, data: Encoded, chunk_rows: int = 16_384) -> float:
    """Teacher-forced cross-entropy over all answer positions."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for index in torch.arange(len(data), device=data.inputs.device).split(chunk_rows):
            logits, _ = model(data.inputs[index])
            targets = data.targets[index].reshape(-1)
            loss = F.cross_entropy(logits.reshape(-1, N_OUTPUT_TOKENS), targets, ignore_index=IGNORE, reduction="sum")
            total += float(loss)
            count += int((targets != IGNORE).sum())
    finally:
        model.train(was_training)
    return total / max(count, 1)


HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_exact_match", "seconds", "train_seconds", "learning_rate")


def history_row(result: EpochResult) -> str:
    """One line of history.csv."""
    return ",".join(f"{getattr(result, c):.6g}" if c != "epoch" else str(result.epoch) for c in HISTORY_COLUMNS) + "\n"


def warm_up(model_types: tuple[str, ...] = MODEL_TYPES, num_threads: int = 0) -> None:
    """Pay a process's one-off costs before any timed training: one tiny epoch per model type loads
    the fused kernel and its scratch buffers, torch.optim's imports and each cell's first-call set-up,
    so that no trial's training seconds include them."""
    from digitsum.data import make_rows

    rows = make_rows([1, 2])
    for model_type in model_types:
        config = Config(
            ModelConfig(
                model_type=model_type, hidden_size=8, embedding_dim=4, head_size=8 if model_type == "lrnn" else 0
            ),
            TrainConfig(lengths="1-2", n_epochs=1, batch_size=32, device="cpu", num_threads=num_threads),
        )
        fit(config, *split_rows(rows, config.train))


def train_run(
    config: Config, on_epoch: OnEpoch | None = None, tensorboard: bool = False, probe: Probe | None = None
) -> tuple[FitResult, Path]:
    """The tutorial's train.py: fit and write ``<log_path>/<run_name>/`` (config, history, best.pt;
    with ``tensorboard``, TensorBoard's event files where the package is installed). ``probe``'s
    lengths, unseen in training, are scored every epoch.

    ``config.json`` is written first and ``history.csv`` after every epoch, so a stopped run
    still shows how far it got.
    """
    tc = config.train
    run_dir = Path(tc.log_path) / tc.run_name
    rows = load_rows(tc)
    probed = unseen_probe(rows, probe or Probe())
    train_rows, val_rows = split_rows(rows, tc)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    history_path = run_dir / "history.csv"
    history_path.write_text(",".join(HISTORY_COLUMNS) + "\n")

    def record(result: EpochResult) -> bool | None:
        with history_path.open("a") as handle:
            handle.write(history_row(result))
        return on_epoch(result) if on_epoch is not None else None

    for stale in run_dir.glob("events.out.tfevents.*"):  # an overwritten run's curves are not this run's
        stale.unlink()
    hparams = flatten(config.to_dict())
    with recording(run_dir if tensorboard else None, hparams) as events:
        result = fit(config, train_rows, val_rows, record, run_dir / "best.pt", probe_rows=probed, events=events)
    return result, run_dir


def unseen_probe(rows: Rows, probe: Probe) -> Rows | None:
    """The probe's rows (None: no probe lengths); ConfigError where a probe length is trained on."""
    trained = sorted(set(np.unique(rows.lengths).tolist()) & set(probe.lengths))
    if trained:
        raise ConfigError(f"probe length(s) {lengths_text(trained)} are trained on: a probe takes unseen lengths")
    return probe_rows(probe)
