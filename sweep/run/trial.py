"""The Optuna objective: suggest, build the config, train, report every epoch, prune.

One trial trains its config's members with `digitsum.train.fit`: one model, or with ``train.n_seeds``
K its K seeds at once (the value is then over the seeds: `sweep.run.outcome`); the per-epoch metric
goes to `trial.report`, and `optuna.TrialPruned` ends the trial when the pruner says so.
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
from digitsum.decode import Accuracy
from digitsum.errors import UsageError
from digitsum.members import config_seeds, seed_config, seed_members
from digitsum.runs import free_folder
from digitsum.tensorboard import EventLog, outcome, recording
from digitsum.train import EpochResult, FitResult, OnEpoch, TrainingDiverged, fit, time_to_target
from sweep.run.outcome import epoch_over_seeds, score_probe, seed_outcome, trial_accuracies
from sweep.spec.model import SeedAggregate, StudySpec, ValueFrom
from sweep.spec.objectives import epoch_accuracy, measures, objectives_from_stored
from sweep.store.artifacts import checkpoint_name, open_store, upload
from sweep.store.records import StudyMeta, TrialRecord, write_trial

Keep = Callable[[int, tuple[float, ...], bool], bool]  # (trial number, values, feasible) -> store its checkpoint?


def make_objective(
    spec: StudySpec,
    artifacts: str,
    stop: threading.Event,
    num_threads: int = 0,
    keep: Keep | None = None,
    tensorboard: str | None = None,
) -> Callable[[optuna.Trial], float | tuple[float, ...]]:
    """The objective of the spec's trials; ``stop`` set (the first Ctrl-C) ends a trial at its next epoch.

    One value per objective: a float for one objective, a tuple for several. A trial's checkpoint
    goes to the artifact store at `artifacts` when ``keep`` says so (None: always). With ``tensorboard``
    (a folder), each trial writes its TensorBoard run there (`trial_events`), the probe scored every epoch."""
    probe = probe_rows(spec.probe)
    per_epoch_probe = any(metric.uses_probe for metric in spec.measured)
    store = open_store(artifacts, create=True)

    def objective(trial: optuna.Trial) -> float | tuple[float, ...]:
        params = spec.suggest(trial)
        config = spec.config_for(params)
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, num_threads=num_threads))
        write_trial(
            trial,
            model_type=config.model.model_type,
            worker=f"{socket.gethostname()}:{os.getpid()}",
            num_threads=num_threads,
        )
        epochs: list[EpochResult] = []  # the trial's, over its seeds (`epoch_over_seeds`)
        on_epoch = _reporter(trial, spec, epochs, stop)
        seeds = config_seeds(config.train)
        with seed_events(tensorboard, trial, params, config.model.model_type, seeds) as events:
            scored = probe if per_epoch_probe or any(log is not None for log in events) else None
            try:
                fits, train_rows = _fit(config, on_epoch, scored, events)
            except TrainingDiverged as error:
                _record_run(trial, epochs, spec.target)
                write_trial(trial, pruned_reason=f"diverged: {error}")
                raise optuna.TrialPruned(f"diverged: {error}") from None
        cost = _record_run(trial, epochs, spec.target)
        _record_fit(trial, spec, fits, seeds, probe, train_rows)
        values, is_feasible = _objective_values(trial, spec, fits, cost)
        # Stored once at the end, not at every better epoch (a trial that dies is retried anyway),
        # and only if it may be the best: a trial that is not never uploads. Of K seeds, the first's.
        if keep is None or keep(trial.number, values, is_feasible):
            _store_checkpoint(trial, store, fits[0], seed_config(config, seeds[0]))
        return values[0] if len(values) == 1 else values

    return objective


def _fit(
    config: Config, on_epoch: OnEpoch, probe: Rows | None, events: list[EventLog | None]
) -> tuple[list[FitResult], list[Rows]]:
    """The trial's fits, one per seed (its K seeds trained at once), and each one's training rows."""
    members = seed_members(config)
    return fit(members, on_epoch, probe, events), [m.train for m in members]


@contextlib.contextmanager
def seed_events(
    folder: str | None, trial: optuna.Trial, params: dict[str, Any], model_type: str, seeds: list[int]
) -> Iterator[list[EventLog | None]]:
    """The trial's TensorBoard runs (`trial_events`), one per seed: with several seeds, each run's name
    and hparams carry its train.seed (trial-00012-lstm-...-seed=1)."""
    with contextlib.ExitStack() as stack:
        if len(seeds) == 1:
            yield [stack.enter_context(trial_events(folder, trial, params, model_type))]
            return
        yield [
            stack.enter_context(trial_events(folder, trial, {**params, "train.seed": seed}, model_type))
            for seed in seeds
        ]


def trial_events(
    folder: str | None, trial: optuna.Trial, params: dict[str, Any], model_type: str
) -> contextlib.AbstractContextManager[EventLog | None]:
    """The trial's TensorBoard run in ``folder`` (None: none), named and with hparams by its number,
    model type and parameters, and closed with its state (complete, pruned, interrupted or failed)."""
    if folder is None:
        return recording(None, {})
    hparams = {"trial": trial.number, "study": trial.study.study_name, "model.model_type": model_type, **params}
    return recording(free_folder(Path(folder) / trial_run_name(trial.number, model_type, params)), hparams, _state)


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


def _objective_values(
    trial: optuna.Trial, spec: StudySpec, fits: list[FitResult], cost: dict[str, Any]
) -> tuple[tuple[float, ...], bool]:
    """The trial's value per objective (over its seeds) and whether it is feasible; its constraints
    are set on the trial (Optuna's set_constraint)."""
    accuracies = trial_accuracies(fits, spec.measured, spec.value_from, spec.seed_aggregate)
    values = measures({"n_parameters": fits[0].n_parameters, **cost}, accuracies)
    violations = [constraint.violation(values[constraint.metric]) for constraint in spec.constraints]
    for constraint, violation in zip(spec.constraints, violations, strict=True):
        trial.set_constraint(constraint.name, violation)
    return tuple(values[goal.metric] for goal in spec.goals), all(v <= 0 for v in violations)


def _reporter(trial: optuna.Trial, spec: StudySpec, epochs: list[EpochResult], stop: threading.Event) -> OnEpoch:
    """The on_epoch of the trial's seeds: report the epoch's value over them and prune when the pruner
    says so (one accuracy objective), or keep the validation curve and apply the spec's early-stop rule
    (several); stop on Ctrl-C."""
    early_stop = spec.early_stop
    over = spec.seed_aggregate

    def on_epoch(results: list[EpochResult]) -> None:
        result = epoch_over_seeds(results, over)
        epochs.append(result)
        if stop.is_set():  # Ctrl-C: keep how far it got; the worker queues it again (sweep.run.worker)
            _record_run(trial, epochs, spec.target)
            write_trial(trial, interrupted=True)
            raise KeyboardInterrupt
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
            _record_run(trial, epochs, spec.target)
            raise optuna.TrialPruned(f"pruned at epoch {result.epoch} with {value:.4f}")

    return on_epoch


def _by_length(per_seed: list[dict[int, float]], over: SeedAggregate) -> dict[str, float]:
    """Accuracy per input length, over the seeds that scored that length."""
    lengths = sorted({length for values in per_seed for length in values})
    return {str(n): round(over.of([v[n] for v in per_seed if n in v]), 5) for n in lengths}


def _record_run(trial: optuna.Trial, epochs: list[EpochResult], target: float) -> dict[str, Any]:
    """How far the trial trained and what it cost, whether it completed or was pruned; returns what it wrote."""
    if not epochs:
        write_trial(trial, epochs_run=0)
        return {"epochs_run": 0, "train_seconds": 0.0, "seconds_to_target": None}
    reached = time_to_target(epochs, target)
    cost = {
        "epochs_run": len(epochs),
        "seconds_per_epoch": round(sum(e.seconds for e in epochs) / len(epochs), 4),
        "train_seconds": round(sum(e.train_seconds for e in epochs), 4),
        "epoch_to_target": reached[0] if reached else None,
        "seconds_to_target": round(reached[1], 4) if reached else None,
    }
    write_trial(trial, **cost)
    return cost


def _record_fit(
    trial: optuna.Trial,
    spec: StudySpec,
    fits: list[FitResult],
    seeds: list[int],
    probe: Rows | None,
    train_rows: list[Rows],
) -> None:
    """The trial's best-epoch scores and probe (over several seeds: their aggregate), and with several
    seeds each one's outcome under ``per_seed``."""
    over = spec.seed_aggregate
    probes: list[Accuracy | None] = [*score_probe(fits, probe, train_rows)] if probe is not None else [None] * len(fits)
    write_trial(
        trial,
        n_parameters=fits[0].n_parameters,
        best_epoch=fits[0].best_epoch,
        val_exact_match=over.of([f.best_exact_match for f in fits]),
        val_by_length=_by_length([f.best_val_accuracy.by_length for f in fits if f.best_val_accuracy], over),
    )
    if len(fits) > 1:
        outcomes = [
            seed_outcome(f, spec.goals, spec.value_from, spec.target, 1 / len(fits), p)
            for f, p in zip(fits, probes, strict=True)
        ]
        write_trial(trial, per_seed={str(seed): o for seed, o in zip(seeds, outcomes, strict=True)})
    measured = [p for p in probes if p is not None]
    if not measured:
        return
    write_trial(
        trial,
        probe_exact_match=over.of([m.exact_match for m in measured]),
        probe_by_length=_by_length([m.by_length for m in measured], over),
    )
    inside = [m.in_range for m in measured if m.in_range is not None]
    if inside and len(inside) == len(measured):
        write_trial(
            trial,
            probe_in_range_exact_match=over.of([m.exact_match for m in inside]),
            probe_in_range_by_length=_by_length([m.by_length for m in inside], over),
        )


# ---------------------------------------------------------------------------------------------
# Re-training a stored trial


def retrain(
    study: optuna.Study, number: int, seeds: list[int] | None = None, num_threads: int = 0
) -> list[dict[str, Any]]:
    """Re-train one stored trial's config from scratch with each seed (all at once where several); each
    seed's outcome (`seed_outcome`) with its seed. A reproducibility check, and more seeds for a comparison."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None:
        raise UsageError(f"study {study.study_name!r} has no trial {number}; see `sweep export {study.study_name}`")
    meta = StudyMeta.read(study)
    if meta.base_config is None:
        raise UsageError(f"study {study.study_name!r} was not made by `sweep run`; it cannot be re-run")
    base = cfg.from_dict(stored_base_config(meta.base_config))
    num_threads = num_threads or TrialRecord.read(trial).num_threads
    probe = probe_rows(meta.probe)
    seeds = seeds or [base.train.seed]
    config = cfg.apply(
        base, {**trial.params, "train.seed": seeds[0], "train.n_seeds": 1, "train.num_threads": num_threads}
    )
    goals = objectives_from_stored(meta.objectives, meta.metric)
    per_epoch = any(g.metric.uses_probe for g in goals)
    members = [m for seed in seeds for m in seed_members(seed_config(config, seed))]  # any seeds, not only a run
    fits = fit(members, None, probe if per_epoch else None)
    train_rows = [m.train for m in members]
    probes = score_probe(fits, probe, train_rows) if probe is not None else [None] * len(fits)
    value_from, share = ValueFrom(meta.value_from), 1 / len(fits)  # K seeds at once: each is charged 1/K
    return [
        {"seed": seed, **seed_outcome(fitted, goals, value_from, meta.target, share, measured)}
        for seed, fitted, measured in zip(seeds, fits, probes, strict=True)
    ]


def stored_base_config(values: dict[str, Any]) -> dict[str, Any]:
    """A study's stored base config, as the code that made it ran it.

    Studies made before the fused training step (their config has no ``train.fused``) trained
    through torch.nn; a rerun does the same, so it repeats the same computation (the two
    paths differ in float rounding)."""
    train = values.get("train", {})
    return values if "fused" in train else {**values, "train": {**train, "fused": False}}
