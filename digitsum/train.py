"""Training: `fit`, the one loop every training in the project goes through. It trains K >= 1 members
(`digitsum.members`: one model, a config's seeds, or models that differ in hyperparameters) as one
stacked computation: teacher-forced steps on each member's own batches (`digitsum.step`), AdamW with
each member's rate, decay and clipping (`digitsum.optim`), and every epoch each member's unrolled
validation accuracy (`digitsum.decode`), its best epoch kept and, when asked, written at once.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from digitsum.checkpoint import save_checkpoint
from digitsum.config import MODEL_TYPES, Config, ModelConfig, TrainConfig
from digitsum.data import IGNORE, PAD, Encoded, Rows, encode, epoch_order
from digitsum.datasets import split_rows
from digitsum.decode import Accuracy, accuracies, answers_in_range, scores
from digitsum.device import resolve_device
from digitsum.fit_state import BestState, FitState, accuracy_dict, accuracy_of
from digitsum.members import Member, check_members
from digitsum.model import DigitSumModel, count_parameters
from digitsum.optim import MemberAdamW
from digitsum.stacked import StackedModel, stack
from digitsum.step import Step, running_sums
from digitsum.tensorboard import EventLog


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
    member: int = 0  # whose epoch: the member's index among those fit was given

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


class Interrupted(KeyboardInterrupt):
    """Training stopped on its stop event (a Ctrl-C, a scheduler's SIGTERM): a KeyboardInterrupt, so that
    what ends a run on Ctrl-C (Optuna failing the running trial, among others) ends it the same way."""


@dataclass(frozen=True)
class Exploit:
    """Population-based training's step between two epochs, by member index: each ``copies`` target
    takes its source's weights and optimizer state (exploit), then goes on with ``configs[target]``,
    its new hyperparameters (explore: only keys members may differ in)."""

    copies: dict[int, int] = field(default_factory=dict)  # target -> source
    configs: dict[int, Config] = field(default_factory=dict)


# Each training member's epoch, in member order; True stops them all, a collection of member indices
# stops those (they leave the computation, the others go on); an Exploit changes members between epochs.
OnEpoch = Callable[[list[EpochResult]], "bool | Collection[int] | Exploit | None"]


def fit(
    members: Sequence[Member],
    on_epoch: OnEpoch | None = None,
    probe_rows: Rows | None = None,
    events: Sequence[EventLog | None] | None = None,
    checkpoints: Sequence[Path | None] | None = None,
    raise_diverged: bool = True,
    stop: threading.Event | None = None,
    resume: FitState | None = None,
    on_state: Callable[[FitState], None] | None = None,
    state_every: int = 0,
) -> list[FitResult]:
    """Train the members as one computation; each member's FitResult, what its own run would give.

    Each epoch trains every member on its own batches, then scores it on its own validation rows (and
    on ``probe_rows``, unseen inputs, never used to pick the best epoch). ``on_epoch`` hears each
    training member's result and may return True to stop all, the indices of those to stop (they leave
    the computation and the others go on, each still what its own run computes), or an Exploit. Each
    member's best epoch (the earliest on ties; its last with train.keep_epoch=last) is kept, and written to
    ``checkpoints[k]`` as it comes.
    ``events[k]`` hears member k's epoch first. A NaN or infinite training loss raises TrainingDiverged
    (without ``raise_diverged``, ``on_epoch`` hears it). ``stop`` set (Ctrl-C, SIGTERM) raises
    Interrupted before the next step. ``on_state`` hears the whole state every ``state_every`` epochs
    (after on_epoch's changes); ``resume`` goes on from one.
    """
    check_members(members)
    run = _Run.start(members, probe_rows, stop)
    first = run.restore(resume) if resume is not None else 1
    logs = list(events or [None] * len(members))
    paths = list(checkpoints or [None] * len(members))
    n_epochs = members[0].config.train.n_epochs
    for epoch in range(first, n_epochs + 1):
        results, scores = run.epoch(epoch)
        for slot, (result, score) in enumerate(zip(results, scores, strict=True)):
            log = logs[result.member]
            if log is not None:
                log.epoch(result, score, run.stacked.unstack(slot), run.vals[slot])
        if raise_diverged:
            _check_finite(members, results)
        run.keep_best(results, scores, paths)
        leaving = run.follow(on_epoch(results) if on_epoch is not None else None)
        if leaving == set(run.indices):
            break
        if leaving:
            run.leave(leaving)
        if on_state is not None and state_every and epoch % state_every == 0 and epoch < n_epochs:
            on_state(run.state(epoch))
    return [best.result() for best in run.bests]


def _check_finite(members: Sequence[Member], results: list[EpochResult]) -> None:
    for result in results:
        if math.isfinite(result.train_loss):
            continue
        text = f"training loss is {result.train_loss} at epoch {result.epoch}"
        if len(members) > 1:
            raise TrainingDiverged(f"seed {members[result.member].seed}: {text}")
        raise TrainingDiverged(f"{text}; lower train.learning_rate")


@dataclass
class _Best:
    """One member's history and best epoch so far."""

    history: list[EpochResult] = field(default_factory=list)
    epoch: int = 0
    exact_match: float = -1.0
    model: DigitSumModel | None = None
    accuracy: Accuracy | None = None

    def see(self, result: EpochResult, score: Accuracy, stacked: StackedModel, k: int, last: bool = False) -> bool:
        """Add an epoch; True (and a copy of the member's model) where it is the best so far, or with
        ``last`` (train.keep_epoch=last) at every epoch."""
        self.history.append(result)
        if score.exact_match <= self.exact_match and not last:
            return False
        self.epoch, self.exact_match, self.accuracy = result.epoch, score.exact_match, score
        self.model = stacked.unstack(k)
        return True

    def to_state(self) -> BestState:
        history = list(self.history)  # EpochResults: turned into dicts only when saved (save_state)
        model = self.model.state_dict() if self.model is not None else None
        return BestState(history, self.epoch, self.exact_match, model, accuracy_dict(self.accuracy))

    @classmethod
    def of_state(cls, state: BestState, config: ModelConfig, device: torch.device) -> _Best:
        history = epoch_results(state)
        model = None
        if state.model is not None:
            model = DigitSumModel(config).to(device)
            model.load_state_dict(state.model)
        return cls(history, state.epoch, state.exact_match, model, accuracy_of(state.accuracy))

    def result(self) -> FitResult:
        assert self.model is not None, "the first epoch is always the best so far"
        return FitResult(
            self.model, self.history, self.epoch, self.exact_match, count_parameters(self.model), self.accuracy
        )


def epoch_results(best: BestState) -> list[EpochResult]:
    """A saved member's history (`digitsum.fit_state.BestState`) as EpochResults."""
    return [
        values if isinstance(values, EpochResult) else EpochResult(**{**values, "probe": accuracy_of(values["probe"])})
        for values in best.history
    ]


@dataclass
class _Run:
    """What the members' training holds between epochs."""

    members: Sequence[Member]
    stacked: StackedModel
    trains: list[Encoded]
    vals: list[Encoded]
    probe: Encoded | None
    probe_in_range: list[np.ndarray | None]  # per member: probe rows whose answer occurs in its training rows
    step: Step
    optimizer: MemberAdamW
    generators: list[torch.Generator]
    sums: list[tuple[torch.Tensor, torch.Tensor]] | None  # per member, where one has the sum-state loss
    indices: list[int]  # each training member's index among those fit was given
    stop: threading.Event | None
    bests: list[_Best]  # every member's, by its index among those fit was given

    @classmethod
    def start(cls, members: Sequence[Member], probe_rows: Rows | None, stop: threading.Event | None) -> _Run:
        tc = members[0].config.train
        torch.set_flush_denormal(True)  # denormals made late LSTM epochs ~3x slower on CPU
        if tc.num_threads > 0:
            torch.set_num_threads(tc.num_threads)
        device = resolve_device(tc.device)
        models = []
        for member in members:  # each built right after its own seed, as its own run builds it
            torch.manual_seed(member.seed)
            models.append(DigitSumModel(member.config.model).to(device))
        # Dropout and state noise draw on from there: one stream for all members (for one member, the
        # stream a run of its model alone draws from)
        stacked = stack(models)
        trains = [encode(m.train).to(device) for m in members]
        configs = [m.config for m in members]
        optimizer = MemberAdamW(list(stacked.parameters()), [c.train for c in configs], total_steps(trains[0], tc))
        probe = encode(probe_rows).to(device) if probe_rows is not None else None
        in_range = [answers_in_range(probe_rows.y, m.train.y) if probe_rows is not None else None for m in members]
        sums = [running_sums(d) for d in trains] if any(c.train.sum_state_weight for c in configs) else None
        generators = [torch.Generator().manual_seed(m.seed) for m in members]
        vals = [encode(m.val).to(device) for m in members]
        step = Step(stacked, configs)
        indices = list(range(len(members)))
        bests = [_Best() for _ in members]
        return cls(
            members, stacked, trains, vals, probe, in_range, step, optimizer, generators, sums, indices, stop, bests
        )

    def epoch(self, epoch: int) -> tuple[list[EpochResult], list[Accuracy]]:
        """Train one epoch of every member, then score each: validation loss and exact match, and the probe."""
        start = time.perf_counter()
        rates = self.optimizer.learning_rates
        train_losses = self._train(epoch)
        train_seconds = time.perf_counter() - start
        val_losses, val_scores = scores(self.stacked, self.vals)
        probes = (
            accuracies(self.stacked, [self.probe] * len(self.vals), self.probe_in_range)
            if self.probe is not None
            else [None] * len(self.vals)
        )
        seconds = time.perf_counter() - start  # each member is charged the shared pass whole, as its own run would be
        results = [
            EpochResult(epoch, loss, val_loss, score.exact_match, seconds, rate, train_seconds, probe, k)
            for loss, val_loss, score, rate, probe, k in zip(
                train_losses, val_losses, val_scores, rates, probes, self.indices, strict=True
            )
        ]
        return results, val_scores

    def leave(self, stopped: set[int]) -> None:
        """The members of indices ``stopped`` leave: the others go on as a stack of their own, each with its
        weights, optimizer state, rows and random streams."""
        slots = [slot for slot, k in enumerate(self.indices) if k not in stopped]
        pick = lambda items: [items[slot] for slot in slots]  # noqa: E731
        self.members, self.indices = pick(self.members), pick(self.indices)
        self.trains, self.vals, self.generators = pick(self.trains), pick(self.vals), pick(self.generators)
        self.probe_in_range = pick(self.probe_in_range)
        self.sums = pick(self.sums) if self.sums is not None else None
        self.stacked = self.stacked.keep(slots)
        self.optimizer.keep(slots, list(self.stacked.parameters()))
        self.step = Step(self.stacked, [m.config for m in self.members])

    def keep_best(self, results: list[EpochResult], scores: list[Accuracy], paths: list[Path | None]) -> None:
        """Each member's best epoch so far, its checkpoint written where it has a path."""
        for slot, (result, score) in enumerate(zip(results, scores, strict=True)):
            best, path = self.bests[result.member], paths[result.member]
            last = self.members[slot].config.train.keep_epoch == "last"
            if best.see(result, score, self.stacked, slot, last) and path is not None and best.model is not None:
                metrics = {"epoch": result.epoch, "val_exact_match": best.exact_match}
                save_checkpoint(path, best.model, self.members[slot].config.to_dict(), metrics)

    def state(self, epoch: int) -> FitState:
        """All that going on from the end of ``epoch`` needs (copies)."""
        clone = lambda tensors: [t.detach().clone() for t in tensors]  # noqa: E731
        return FitState(
            epoch, list(self.indices), [m.config for m in self.members], clone(self.stacked.parameters()),
            self.optimizer.steps, clone(self.optimizer.exp_avgs), clone(self.optimizer.exp_avg_sqs),
            [g.get_state() for g in self.generators], torch.get_rng_state(), [b.to_state() for b in self.bests],
        )  # fmt: skip

    def restore(self, state: FitState) -> int:
        """Go on from ``state`` (`state`); the first epoch to train."""
        gone = set(self.indices) - set(state.indices)
        if gone:
            self.leave(gone)
        self.exploit(Exploit(configs=dict(zip(state.indices, state.configs, strict=True))))
        with torch.no_grad():
            pairs = [(self.stacked.parameters(), state.weights), (self.optimizer.exp_avgs, state.exp_avgs)]
            for mine, saved in [*pairs, (self.optimizer.exp_avg_sqs, state.exp_avg_sqs)]:
                for tensor, value in zip(mine, saved, strict=True):
                    tensor.copy_(value)
        self.optimizer.steps = state.steps
        for generator, stream in zip(self.generators, state.generators, strict=True):
            generator.set_state(stream)
        torch.set_rng_state(state.rng)
        shape, device = self.members[0].config.model, self.stacked.device
        self.bests = [_Best.of_state(best, shape, device) for best in state.bests]
        return state.epoch + 1

    def follow(self, asked: bool | Collection[int] | Exploit | None) -> set[int]:
        """What on_epoch asked: an Exploit is applied; the members that leave are returned."""
        if isinstance(asked, Exploit):
            self.exploit(asked)
            return set()
        return set(self.indices) if asked is True else set(asked) & set(self.indices) if asked else set()

    def exploit(self, change: Exploit) -> None:
        """Copy weights and optimizer state source -> target, then give members their new configs."""
        slot = {k: i for i, k in enumerate(self.indices)}
        with torch.no_grad():
            for target, source in change.copies.items():
                for weight in self.stacked.parameters():
                    weight[slot[target]].copy_(weight[slot[source]])
                self.optimizer.copy(slot[source], slot[target])
        members = list(self.members)
        for k, config in change.configs.items():
            retuned = dataclasses.replace(members[slot[k]], config=config)
            check_members([members[slot[k]], retuned])  # the shapes and the batch plan stay
            members[slot[k]] = retuned
            self.optimizer.retune(slot[k], config.train, total_steps(self.trains[0], config.train))
        self.members = members
        if change.configs:
            self.step = Step(self.stacked, [m.config for m in self.members])

    def _train(self, epoch: int) -> list[float]:
        """One epoch of every member, step by step: member k's batches are its own run's. Mean loss per member."""
        tc = self.members[0].config.train
        self.stacked.train()
        max_length = curriculum_length(self.trains[0], epoch, tc)
        orders = [
            epoch_order(data, generator, m.config.train.balance_lengths, m.config.train.answer_balance, max_length)
            for data, generator, m in zip(self.trains, self.generators, self.members, strict=True)
        ]
        width = max(data.inputs.shape[1] for data in self.trains)
        tokens = _gathered([d.inputs for d in self.trains], orders, width, PAD)
        targets = _gathered([d.targets for d in self.trains], orders, width, IGNORE)
        sums = None
        if self.sums is not None:
            sums = (
                _gathered([s for s, _ in self.sums], orders, width, 0),
                _gathered([m for _, m in self.sums], orders, width, False),
            )
        step_losses, rows = [], []
        for begin in range(0, tokens.shape[1], tc.batch_size):
            if self.stop is not None and self.stop.is_set():
                raise Interrupted("training was stopped")
            batch = slice(begin, begin + tc.batch_size)
            step_sums = (sums[0][:, batch], sums[1][:, batch]) if sums is not None else None
            step_losses.append(self.step(tokens[:, batch], targets[:, batch], step_sums))
            self.optimizer.step()
            rows.append(min(tc.batch_size, tokens.shape[1] - begin))
        weights = torch.tensor(rows, dtype=torch.float32, device=tokens.device)[:, None]
        # one sync per epoch, not one per step
        return ((torch.stack(step_losses) * weights).sum(0) / tokens.shape[1]).tolist()


def _gathered(tensors: list[torch.Tensor], orders: list[torch.Tensor], width: int, value: int | bool) -> torch.Tensor:
    """Each member's rows of its epoch order, padded to one width: [K, rows, width]."""
    return torch.stack(
        [
            F.pad(t[order.to(t.device)], (0, width - t.shape[1]), value=value)
            for t, order in zip(tensors, orders, strict=True)
        ]
    )


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


def total_steps(train: Encoded, tc: TrainConfig) -> int:
    """The steps of the whole run, over which ``train.lr_schedule`` runs (the curriculum's shorter epochs counted)."""
    return sum(
        math.ceil(rows_up_to(train, curriculum_length(train, epoch, tc)) / tc.batch_size)
        for epoch in range(1, tc.n_epochs + 1)
    )


def warm_up(model_types: tuple[str, ...] = MODEL_TYPES, num_threads: int = 0) -> dict[str, FitResult]:
    """Pay a process's one-off costs before any timed training: one tiny epoch per model type loads
    the fused kernel and its scratch buffers and each cell's first-call set-up, so that no trial's
    training seconds include them. Each type's tiny run, by model type."""
    from digitsum.data import make_rows

    rows = make_rows([1, 2])
    trained = {}
    for model_type in model_types:
        config = Config(
            ModelConfig(
                model_type=model_type, hidden_size=8, embedding_dim=4, head_size=8 if model_type == "lrnn" else 0
            ),
            TrainConfig(lengths="1-2", n_epochs=1, batch_size=32, device="cpu", num_threads=num_threads),
        )
        (trained[model_type],) = fit([Member(config, *split_rows(rows, config.train))])
    return trained
