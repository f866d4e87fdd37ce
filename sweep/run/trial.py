"""The Optuna objective: suggest, build the config, train, report every epoch, prune.

One trial (a `TrialRun`) trains its config's members with `digitsum.train.fit`: one model, or with
``train.n_seeds`` K its K seeds at once (the value is then over the seeds: `sweep.run.outcome`); the
per-epoch metric goes to `trial.report`, and `optuna.TrialPruned` ends the trial when the pruner says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna

from digitsum import config as cfg
from digitsum.checkpoint import save_checkpoint
from digitsum.config import Config
from digitsum.data import Rows
from digitsum.datasets import probe_rows
from digitsum.errors import UsageError
from digitsum.fit_state import FitState
from digitsum.members import Member, config_seeds, seed_config, seed_members
from digitsum.runs import free_folder
from digitsum.tensorboard import EventLog, outcome, recording
from digitsum.train import (
    EpochResult,
    Exploit,
    FitResult,
    OnEpoch,
    TrainingDiverged,
    epoch_results,
    fit,
)
from sweep.run.machine import machine
from sweep.run.outcome import epoch_over_seeds, objective_values, record_fit, record_run, score_probe, seed_outcome
from sweep.run.resume import stopped_state, store_stopped
from sweep.spec.model import StudySpec, ValueFrom
from sweep.spec.objectives import epoch_accuracy, objectives_from_stored
from sweep.store.artifacts import checkpoint_name, open_store, upload
from sweep.store.records import StudyMeta, TrialRecord, write_trial

Keep = Callable[[int, tuple[float, ...], bool], bool]  # (trial number, values, feasible) -> store its checkpoint?


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """What every trial of a worker shares: the spec, where checkpoints and TensorBoard runs go, the
    probe, its threads, and the event that stops it (the first Ctrl-C, a SIGTERM)."""

    spec: StudySpec
    store: Any  # the artifact store (sweep.store.artifacts)
    stop: threading.Event
    num_threads: int = 0
    keep: Keep | None = None  # store a trial's checkpoint? None: always
    tensorboard: str | None = None  # a folder: a TensorBoard run per trial (and seed)
    probe: Rows | None = None
    device: str | None = None  # where its trials train, over the spec's train.device (--devices)

    @property
    def probe_each_epoch(self) -> bool:
        return any(metric.uses_probe for metric in self.spec.measured)


class TrialRun:
    """One trial as it trains: its parameters, config and members (its seeds), the epochs it reported,
    and how it ends. The objective trains one; a stack trains several at once (`sweep.run.stack`)."""

    def __init__(self, trial: optuna.Trial, context: TrialContext) -> None:
        self.trial, self.context, spec = trial, context, context.spec
        self.params = spec.suggest(trial)
        config = spec.config_for(self.params)
        train = dataclasses.replace(config.train, num_threads=context.num_threads)
        if context.device is not None:
            train = dataclasses.replace(train, device=context.device)
        self.config = dataclasses.replace(config, train=train)
        write_trial(
            trial,
            model_type=self.config.model.model_type,
            worker=worker_id(),
            num_threads=context.num_threads,
            **machine(self.config.train.device),
        )
        self.seeds = config_seeds(self.config.train)
        self.members = seed_members(self.config)
        self.epochs: list[EpochResult] = []  # the trial's, over its seeds (`epoch_over_seeds`)
        self.ending: str | None = None  # how its TensorBoard runs close where no exception says so
        self.hear = _reporter(trial, spec, self.epochs)
        self.last_state: FitState | None = None  # at its last finished epoch, for a retry (sweep.run.resume)

    def keep_state(self, state: FitState) -> None:
        self.last_state = state

    def resume(self) -> FitState | None:
        """Where this trial retries a stopped one that stored its state: that state, with the curve so far
        reported again; None otherwise."""
        found = stopped_state(self.trial, self.context.store)
        if found is None:
            return None
        state, failed = found
        for epoch, value in sorted(failed.intermediate_values.items()):
            if epoch <= state.epoch:
                self.trial.report(value, epoch)
        over = self.context.spec.seed_aggregate
        histories = [epoch_results(best) for best in state.bests]
        self.epochs.extend(epoch_over_seeds(list(row), over) for row in zip(*histories, strict=True))
        write_trial(self.trial, resumed_from=state.epoch)
        return state

    @contextlib.contextmanager
    def events(self) -> Iterator[list[EventLog | None]]:
        """Its TensorBoard runs (one per seed), closed with its state."""
        with seed_events(
            self.context.tensorboard, self.trial, self.params, self.config.model.model_type, self.seeds, self._state
        ) as logs:
            yield logs

    def _state(self, error: BaseException | None) -> str:
        return self.ending or _state(error)

    def scored_probe(self, events: list[EventLog | None]) -> Rows | None:
        """The probe rows to score every epoch: where an objective or a TensorBoard run reads it."""
        wanted = self.context.probe_each_epoch or any(log is not None for log in events)
        return self.context.probe if wanted else None

    def interrupted(self) -> None:
        """Ctrl-C or SIGTERM stopped it: keep how far it got, and its state for its retry; the worker queues
        it again (sweep.run.worker)."""
        record_run(self.trial, self.epochs, self.context.spec.target)
        write_trial(self.trial, interrupted=True)
        store_stopped(self.trial, self.context.store, self.last_state)

    def diverged(self, error: TrainingDiverged) -> optuna.TrialPruned:
        """Its training loss became NaN or infinite: recorded, and the trial ends as pruned."""
        record_run(self.trial, self.epochs, self.context.spec.target)
        write_trial(self.trial, pruned_reason=f"diverged: {error}")
        self.ending = "pruned"
        return optuna.TrialPruned(f"diverged: {error}")

    def finish(self, fits: list[FitResult]) -> tuple[float, ...]:
        """Record what it trained and measured; its value per objective, and its checkpoint stored (the
        first seed's) where it may be the best: once, at the end (a trial that dies is retried anyway)."""
        spec, context = self.context.spec, self.context
        cost = record_run(self.trial, self.epochs, spec.target)
        record_fit(self.trial, spec, fits, self.seeds, context.probe, [m.train for m in self.members])
        values, is_feasible = objective_values(self.trial, spec, fits, cost)
        if context.keep is None or context.keep(self.trial.number, values, is_feasible):
            _store_checkpoint(self.trial, context.store, fits[0], seed_config(self.config, self.seeds[0]))
        return values


def worker_id(pid: int | None = None) -> str:
    """How a trial records the worker that ran it: host:pid."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def trial_context(
    spec: StudySpec,
    artifacts: str,
    stop: threading.Event,
    num_threads: int = 0,
    keep: Keep | None = None,
    tensorboard: str | None = None,
    device: str | None = None,
) -> TrialContext:
    """What a worker's trials share. ``stop`` set (the first Ctrl-C, a SIGTERM) ends a trial before its
    next step; a trial's checkpoint goes to the artifact store at `artifacts` when ``keep`` says so
    (None: always); with ``tensorboard`` (a folder), each trial writes its TensorBoard run there
    (`trial_events`), the probe scored every epoch; ``device``: where they train, whatever the spec says."""
    store = open_store(artifacts, create=True)
    probe = probe_rows(spec.probe, spec.base.train)
    return TrialContext(spec, store, stop, num_threads, keep, tensorboard, probe, device)


def make_objective(context: TrialContext) -> Callable[[optuna.Trial], float | tuple[float, ...]]:
    """The objective of one trial at a time: one value per objective (a float for one objective, a
    tuple for several)."""

    def objective(trial: optuna.Trial) -> float | tuple[float, ...]:
        run = TrialRun(trial, context)
        resume = run.resume()
        with run.events() as events:
            try:
                probe = run.scored_probe(events)
                fits = fit(
                    run.members, run.hear, probe, events, stop=context.stop, resume=resume,
                    on_state=run.keep_state, state_every=1,
                )  # fmt: skip
            except TrainingDiverged as error:
                raise run.diverged(error) from None
            except KeyboardInterrupt:
                run.interrupted()
                raise
        values = run.finish(fits)
        return values[0] if len(values) == 1 else values

    return objective


@contextlib.contextmanager
def seed_events(
    folder: str | None,
    trial: optuna.Trial,
    params: dict[str, Any],
    model_type: str,
    seeds: list[int],
    state_of: Callable[[BaseException | None], str] | None = None,
) -> Iterator[list[EventLog | None]]:
    """The trial's TensorBoard runs (`trial_events`), one per seed: with several seeds, each run's name
    and hparams carry its train.seed (trial-00012-lstm-...-seed=1)."""
    with contextlib.ExitStack() as stack:
        if len(seeds) == 1:
            yield [stack.enter_context(trial_events(folder, trial, params, model_type, state_of))]
            return
        yield [
            stack.enter_context(trial_events(folder, trial, {**params, "train.seed": seed}, model_type, state_of))
            for seed in seeds
        ]


def trial_events(
    folder: str | None,
    trial: optuna.Trial,
    params: dict[str, Any],
    model_type: str,
    state_of: Callable[[BaseException | None], str] | None = None,
) -> contextlib.AbstractContextManager[EventLog | None]:
    """The trial's TensorBoard run in ``folder`` (None: none), named and with hparams by its number,
    model type and parameters, and closed with its state (complete, pruned, interrupted or failed)."""
    if folder is None:
        return recording(None, {})
    hparams = {"trial": trial.number, "study": trial.study.study_name, "model.model_type": model_type, **params}
    folder_of_run = free_folder(Path(folder) / trial_run_name(trial.number, model_type, params))
    return recording(folder_of_run, hparams, state_of or _state)


def trial_run_name(number: int, model_type: str, params: dict[str, Any]) -> str:
    """trial-00012-lstm-hidden_size=128-learning_rate=0.00423: what TensorBoard lists the run as."""
    shown = [f"{key.rsplit('.', 1)[-1]}={f'{v:.3g}' if isinstance(v, float) else v}" for key, v in params.items()]
    name = "-".join([f"trial-{number:05d}", model_type, *(s for s in shown if not s.startswith("model_type="))])
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", name)[:200]  # a file name on every system


def _state(error: BaseException | None) -> str:
    return "pruned" if isinstance(error, optuna.TrialPruned) else outcome(error)


def _store_checkpoint(trial: optuna.Trial, store: Any, fitted: FitResult, config: Config) -> None:
    metrics = {"epoch": fitted.best_epoch, "val_exact_match": fitted.best_exact_match}
    with tempfile.TemporaryDirectory(prefix="sweep-trial-") as folder:
        path = Path(folder) / checkpoint_name(trial.number)
        save_checkpoint(path, fitted.model, config.to_dict(), metrics)
        write_trial(trial, artifact_id=upload(store, trial, path))


def _reporter(trial: optuna.Trial, spec: StudySpec, epochs: list[EpochResult]) -> OnEpoch:
    """The on_epoch of the trial's seeds: report the epoch's value over them and prune when the pruner
    says so (one accuracy objective), or keep the validation curve and apply the spec's early-stop rule
    (several). Ctrl-C and SIGTERM stop the fit itself, before its next step: every epoch that finished
    is reported, and kept in the state a retry goes on from (sweep.run.resume)."""
    early_stop = spec.early_stop
    over = spec.seed_aggregate

    def on_epoch(results: list[EpochResult]) -> None:
        result = epoch_over_seeds(results, over)
        epochs.append(result)
        if spec.reports_per_epoch:
            value = over.of([epoch_accuracy(r, spec.goals[0].metric) for r in results])
            trial.report(value, result.epoch)
            stopping = trial.should_prune()
        else:
            curve = [e.val_exact_match for e in epochs]
            write_trial(trial, val_curve=curve)
            value = result.val_exact_match
            stopping = early_stop is not None and early_stop.should_stop(trial.study, curve, trial.params)
        if stopping:
            record_run(trial, epochs, spec.target)
            raise optuna.TrialPruned(f"pruned at epoch {result.epoch} with {value:.4f}")

    return on_epoch


# ---------------------------------------------------------------------------------------------
# Re-training a stored trial


def retrain(
    study: optuna.Study, number: int, seeds: list[int] | None = None, num_threads: int = 0
) -> list[dict[str, Any]]:
    """Re-train one stored trial's config from scratch with each seed (all at once where several); each
    seed's outcome (`seed_outcome`) with its seed. A reproducibility check, and more seeds for a comparison.
    A pbt member replays its schedule (PBT replay): its hyperparameters change at the epochs they did in
    the population, but it copies no other member's weights."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None:
        raise UsageError(f"study {study.study_name!r} has no trial {number}; see `sweep export {study.study_name}`")
    meta = StudyMeta.read(study)
    if meta.base_config is None:
        raise UsageError(f"study {study.study_name!r} was not made by `sweep run`; it cannot be re-run")
    base = cfg.from_dict(stored_base_config(meta.base_config))
    num_threads = num_threads or TrialRecord.read(trial).num_threads
    probe = probe_rows(meta.probe, base.train)
    seeds = seeds or [base.train.seed]
    config = cfg.apply(
        base, {**trial.params, "train.seed": seeds[0], "train.n_seeds": 1, "train.num_threads": num_threads}
    )
    goals = objectives_from_stored(meta.objectives, meta.metric)
    per_epoch = any(g.metric.uses_probe for g in goals)
    members = [m for seed in seeds for m in seed_members(seed_config(config, seed))]  # any seeds, not only a run
    fits = fit(members, replay(TrialRecord.read(trial).schedule, members), probe if per_epoch else None)
    train_rows = [m.train for m in members]
    probes = score_probe(fits, probe, train_rows) if probe is not None else [None] * len(fits)
    value_from, share = ValueFrom(meta.value_from), 1 / len(fits)  # K seeds at once: each is charged 1/K
    return [
        {"seed": seed, **seed_outcome(fitted, goals, value_from, meta.target, share, measured)}
        for seed, fitted, measured in zip(seeds, fits, probes, strict=True)
    ]


def replay(schedule: list[dict[str, Any]], members: list[Member]) -> OnEpoch | None:
    """The on_epoch that gives every member a pbt schedule's hyperparameters after the epochs they
    changed at; None for a trial without a schedule (or one that never changed)."""
    changes = {entry["epoch"]: entry["params"] for entry in schedule[1:]}
    if not changes:
        return None

    def on_epoch(results: list[EpochResult]) -> Exploit | None:
        params = changes.get(results[0].epoch)
        if params is None:
            return None
        return Exploit(configs={r.member: cfg.apply(members[r.member].config, params) for r in results})

    return on_epoch


def stored_base_config(values: dict[str, Any]) -> dict[str, Any]:
    """A study's stored base config, as the code that made it ran it.

    Studies made before the fused training step (their config has no ``train.fused``) trained
    through torch.nn; a rerun does the same, so it repeats the same computation (the two
    paths differ in float rounding)."""
    train = values.get("train", {})
    return values if "fused" in train else {**values, "train": {**train, "fused": False}}
