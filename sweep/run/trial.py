"""The Optuna objective: suggest, build the config, train, report every epoch, prune.

One trial trains one model with `digitsum.train.fit`; the per-epoch metric goes to
`trial.report`, and `optuna.TrialPruned` ends the trial when the pruner says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from digitsum import config as cfg
from digitsum.checkpoint import save_checkpoint
from digitsum.config import Config
from digitsum.data import Rows, encode
from digitsum.datasets import data_split, probe_rows
from digitsum.decode import Accuracy, accuracy, answers_in_range
from digitsum.errors import UsageError
from digitsum.tensorboard import EventLog, outcome, recording
from digitsum.train import EpochResult, FitResult, TrainingDiverged, fit, time_to_target
from sweep.spec.model import StudySpec, ValueFrom
from sweep.spec.objectives import Metric, epoch_accuracy, measures, objectives_from_stored
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
        epochs: list[EpochResult] = []
        on_epoch = _reporter(trial, spec, epochs, stop)
        train_rows, val_rows = data_split(config.train)
        with trial_events(tensorboard, trial, params, config.model.model_type) as events:
            scored = probe if per_epoch_probe or events is not None else None
            try:
                fitted = fit(config, train_rows, val_rows, on_epoch, probe_rows=scored, events=events)
            except TrainingDiverged as error:
                _record_run(trial, epochs, spec.target)
                write_trial(trial, pruned_reason=f"diverged: {error}")
                raise optuna.TrialPruned(f"diverged: {error}") from None
        cost = _record_run(trial, epochs, spec.target)
        _record_fit(trial, fitted, probe, train_rows)
        values, is_feasible = _objective_values(trial, spec, fitted, cost)
        # Stored once at the end, not at every better epoch (a trial that dies is retried anyway),
        # and only if it may be the best: a trial that is not never uploads.
        if keep is None or keep(trial.number, values, is_feasible):
            _store_checkpoint(trial, store, fitted, config)
        return values[0] if len(values) == 1 else values

    return objective


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


def free_folder(folder: Path) -> Path:
    """``folder``, or folder-2, -3, ... where it holds an earlier run (a study deleted and made again)."""
    number, free = 2, folder
    while free.exists() and any(free.iterdir()):
        free, number = folder.with_name(f"{folder.name}-{number}"), number + 1
    return free


def _state(error: BaseException | None) -> str:
    return "pruned" if isinstance(error, optuna.TrialPruned) else outcome(error)


def _store_checkpoint(trial: optuna.Trial, store: Any, fitted: FitResult, config: Config) -> None:
    metrics = {"epoch": fitted.best_epoch, "val_exact_match": fitted.best_exact_match}
    with tempfile.TemporaryDirectory(prefix="sweep-trial-") as folder:
        path = Path(folder) / checkpoint_name(trial.number)
        save_checkpoint(path, fitted.model, config.to_dict(), metrics)
        write_trial(trial, artifact_id=upload(store, trial, path))


def _objective_values(
    trial: optuna.Trial, spec: StudySpec, fitted: FitResult, cost: dict[str, Any]
) -> tuple[tuple[float, ...], bool]:
    """The trial's value per objective and whether it is feasible; its constraints are set on the
    trial (Optuna's set_constraint)."""
    accuracies = trial_accuracies(fitted, spec.measured, spec.value_from)
    values = measures({"n_parameters": fitted.n_parameters, **cost}, accuracies)
    violations = [constraint.violation(values[constraint.metric]) for constraint in spec.constraints]
    for constraint, violation in zip(spec.constraints, violations, strict=True):
        trial.set_constraint(constraint.name, violation)
    return tuple(values[goal.metric] for goal in spec.goals), all(v <= 0 for v in violations)


def _reporter(
    trial: optuna.Trial, spec: StudySpec, epochs: list[EpochResult], stop: threading.Event
) -> Callable[[EpochResult], None]:
    """fit's on_epoch: report the epoch's value and prune when the pruner says so (one accuracy
    objective), or keep the validation curve and apply the spec's early-stop rule (several); stop on Ctrl-C."""
    early_stop = spec.early_stop

    def on_epoch(result: EpochResult) -> None:
        epochs.append(result)
        if stop.is_set():  # Ctrl-C: keep how far it got; the worker queues it again (sweep.run.worker)
            _record_run(trial, epochs, spec.target)
            write_trial(trial, interrupted=True)
            raise KeyboardInterrupt
        if spec.reports_per_epoch:
            value = epoch_accuracy(result, spec.goals[0].metric)
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


def trial_value(fitted: FitResult, metric: Metric, value_from: ValueFrom) -> float:
    """The trial's value: the metric at the best epoch (chosen by validation) or at the last."""
    epoch = fitted.history[fitted.best_epoch - 1] if value_from is ValueFrom.BEST else fitted.history[-1]
    return epoch_accuracy(epoch, metric)


def trial_accuracies(fitted: FitResult, metrics: Sequence[Metric], value_from: ValueFrom) -> dict[Metric, float | None]:
    """The trial's value of validation exact match and of every accuracy among ``metrics``."""
    wanted = {Metric.VAL_EXACT_MATCH, *(m for m in metrics if m.is_accuracy)}
    return {metric: trial_value(fitted, metric, value_from) for metric in wanted}


def measure_probe(fitted: FitResult, probe: Rows, train_rows: Rows | None = None) -> Accuracy:
    """The probe's exact match; with `train_rows`, also over the probe rows whose sum occurs in them."""
    in_range = answers_in_range(probe.y, train_rows.y) if train_rows is not None else None
    return accuracy(fitted.model, encode(probe).to(next(fitted.model.parameters()).device), in_range)


def _by_length(values: dict[int, float]) -> dict[str, float]:
    return {str(length): round(value, 5) for length, value in values.items()}


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


def _record_fit(trial: optuna.Trial, fitted: FitResult, probe: Rows | None, train_rows: Rows) -> None:
    assert fitted.best_val_accuracy is not None, "fit keeps the best epoch's accuracy"
    write_trial(
        trial,
        n_parameters=fitted.n_parameters,
        best_epoch=fitted.best_epoch,
        val_exact_match=fitted.best_exact_match,
        val_by_length=_by_length(fitted.best_val_accuracy.by_length),
    )
    if probe is None:
        return
    measured = measure_probe(fitted, probe, train_rows)
    write_trial(trial, probe_exact_match=measured.exact_match, probe_by_length=_by_length(measured.by_length))
    if measured.in_range is not None:
        write_trial(
            trial,
            probe_in_range_exact_match=measured.in_range.exact_match,
            probe_in_range_by_length=_by_length(measured.in_range.by_length),
        )


# ---------------------------------------------------------------------------------------------
# Re-training a stored trial


def retrain(
    study: optuna.Study, number: int, seeds: list[int] | None = None, num_threads: int = 0
) -> list[dict[str, Any]]:
    """Re-train one stored trial's config from scratch (once per seed); a reproducibility check."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None:
        raise UsageError(f"study {study.study_name!r} has no trial {number}; see `sweep export {study.study_name}`")
    meta = StudyMeta.read(study)
    if meta.base_config is None:
        raise UsageError(f"study {study.study_name!r} was not made by `sweep run`; it cannot be re-run")
    base = cfg.from_dict(stored_base_config(meta.base_config))
    num_threads = num_threads or TrialRecord.read(trial).num_threads
    probe = probe_rows(meta.probe)
    results = []
    for seed in seeds or [base.train.seed]:
        config = cfg.apply(base, {**trial.params, "train.seed": seed, "train.num_threads": num_threads})
        results.append(_rerun_once(config, meta, probe))
    return results


def _rerun_once(config: Config, meta: StudyMeta, probe: Rows | None) -> dict[str, Any]:
    """One re-training: the study's first objective as ``value``, and every measure beside it."""
    goals = objectives_from_stored(meta.objectives, meta.metric)
    value_from = ValueFrom(meta.value_from)
    per_epoch = any(g.metric.uses_probe for g in goals)
    train_rows, val_rows = data_split(config.train)
    fitted = fit(config, train_rows, val_rows, probe_rows=probe if per_epoch else None)
    reached = time_to_target(fitted.history, meta.target)
    accuracy = trial_accuracies(fitted, [g.metric for g in goals], value_from)
    cost = {
        "n_parameters": fitted.n_parameters,
        "train_seconds": round(sum(e.train_seconds for e in fitted.history), 4),
        "seconds_to_target": round(reached[1], 4) if reached else None,
    }
    values = measures(cost, dict(accuracy))
    return {
        "seed": config.train.seed,
        "value": values[goals[0].metric],
        "values": [values[g.metric] for g in goals],
        "val_exact_match": fitted.best_exact_match,
        "probe_exact_match": measure_probe(fitted, probe).exact_match if probe is not None else None,
        "epochs": len(fitted.history),
        "epoch_to_target": reached[0] if reached else None,
        **cost,
    }


def stored_base_config(values: dict[str, Any]) -> dict[str, Any]:
    """A study's stored base config, as the code that made it ran it.

    Studies made before the fused training step (their config has no ``train.fused``) trained
    through torch.nn; a rerun does the same, so it repeats the same computation (the two
    paths differ in float rounding)."""
    train = values.get("train", {})
    return values if "fused" in train else {**values, "train": {**train, "fused": False}}
