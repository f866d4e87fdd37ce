"""The Optuna objective: suggest, build the config, train, report every epoch, prune.

One trial trains one model with `digitsum.train.fit`; the per-epoch metric goes to
`trial.report`, and `optuna.TrialPruned` ends the trial when the pruner says so.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import threading
from pathlib import Path
from typing import Callable

import optuna

from digitsum import config as cfg
from digitsum.checkpoint import save_checkpoint
from digitsum.data import Rows, encode, make_rows
from digitsum.decode import Accuracy, accuracy
from digitsum.errors import UsageError
from digitsum.train import EpochResult, FitResult, TrainConfig, TrainingDiverged, fit, load_rows, split_rows
from sweep.spec import StudySpec


def data_split(train_config: TrainConfig) -> tuple[Rows, Rows]:
    """The (train, validation) rows of a config; made once per process for each distinct data setting."""
    return _split(_data_only(train_config))


@functools.lru_cache(maxsize=4)
def _split(train_config: TrainConfig) -> tuple[Rows, Rows]:
    return split_rows(load_rows(train_config), train_config)


@functools.lru_cache(maxsize=4)
def probe_rows(lengths: tuple[int, ...], sample: int) -> Rows | None:
    """Unseen lengths for the generalization probe: all strings, or a seeded sample per length."""
    if not lengths:
        return None
    return make_rows(list(lengths), sample=sample if any(10**n > sample for n in lengths) else None, seed=1234)


# Set by the first Ctrl-C (see sweep.run.work): the running trial stops at its next epoch boundary.
# Raising from a signal handler can land inside library callbacks that swallow it.
STOP = threading.Event()


def checkpoint_path(directory: Path, study_name: str, trial_number: int) -> Path:
    return directory / study_name / f"trial-{trial_number:05d}.pt"


def make_objective(spec: StudySpec, checkpoint_dir: Path, num_threads: int = 0) -> Callable[[optuna.Trial], float]:
    probe = probe_rows(spec.probe.lengths, spec.probe.sample)
    per_epoch_probe = spec.metric == "probe_exact_match"

    def objective(trial: optuna.Trial) -> float:
        params = spec.suggest(trial)
        config = spec.config_for(params)
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, num_threads=num_threads))
        train_rows, val_rows = data_split(config.train)
        path = checkpoint_path(checkpoint_dir, trial.study.study_name, trial.number)
        trial.set_user_attr("model_type", config.model.model_type)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("checkpoint", str(path))
        trial.set_user_attr("num_threads", num_threads)  # results depend on it; `sweep rerun` reuses it
        epochs: list[EpochResult] = []

        def on_epoch(result: EpochResult) -> None:
            if STOP.is_set():
                raise KeyboardInterrupt
            epochs.append(result)
            value = result.probe_exact_match if per_epoch_probe else result.val_exact_match
            trial.report(value, result.epoch)
            if trial.should_prune():
                _record_run(trial, epochs)
                raise optuna.TrialPruned(f"pruned at epoch {result.epoch} with {value:.4f}")

        try:
            # Saved once at the end, not at every better epoch: a trial that dies is retried anyway.
            fitted = fit(config, train_rows, val_rows, on_epoch, probe_rows=probe if per_epoch_probe else None)
        except TrainingDiverged as error:
            _record_run(trial, epochs)
            trial.set_user_attr("pruned_reason", f"diverged: {error}")
            raise optuna.TrialPruned(f"diverged: {error}") from None
        _record_run(trial, epochs)
        save_checkpoint(path, fitted.model, config.to_dict(),
                        {"epoch": fitted.best_epoch, "val_exact_match": fitted.best_exact_match})
        trial.set_user_attr("n_parameters", fitted.n_parameters)
        trial.set_user_attr("best_epoch", fitted.best_epoch)
        trial.set_user_attr("val_exact_match", fitted.best_exact_match)
        by_length = fitted.best_val_accuracy.by_length
        trial.set_user_attr("val_by_length", {str(k): round(v, 5) for k, v in by_length.items()})
        if probe is not None:
            measured = measure_probe(fitted, probe)
            trial.set_user_attr("probe_exact_match", measured.exact_match)
            trial.set_user_attr("probe_by_length", {str(k): round(v, 5) for k, v in measured.by_length.items()})
        return trial_value(fitted, spec.metric, spec.value_from)

    return objective


def trial_value(fitted: FitResult, metric: str, value_from: str) -> float:
    """The trial's value: the metric at the best epoch (chosen by validation) or at the last."""
    epoch = fitted.history[fitted.best_epoch - 1] if value_from == "best" else fitted.history[-1]
    return epoch.probe_exact_match if metric == "probe_exact_match" else epoch.val_exact_match


def measure_probe(fitted: FitResult, probe: Rows) -> Accuracy:
    return accuracy(fitted.model, encode(probe).to(next(fitted.model.parameters()).device))


def rerun(study: optuna.Study, number: int, seeds: list[int] | None = None, num_threads: int = 0) -> list[dict]:
    """Re-train one stored trial's config from scratch (once per seed); a reproducibility check."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None:
        raise UsageError(f"study {study.study_name!r} has no trial {number}; see `sweep export {study.study_name}`")
    attrs = study.user_attrs
    if "base_config" not in attrs:
        raise UsageError(f"study {study.study_name!r} was not made by `sweep run`; it cannot be re-run")
    base = cfg.from_dict(stored_base_config(attrs["base_config"]))
    metric, value_from = attrs.get("metric", "val_exact_match"), attrs.get("value_from", "best")
    probe_spec = attrs.get("probe", {})
    probe = probe_rows(tuple(probe_spec.get("lengths", [])), int(probe_spec.get("sample", 10_000)))
    results = []
    num_threads = num_threads or int(trial.user_attrs.get("num_threads", 0))
    for seed in seeds or [base.train.seed]:
        config = cfg.apply(base, {**trial.params, "train.seed": seed, "train.num_threads": num_threads})
        train_rows, val_rows = data_split(config.train)
        per_epoch_probe = probe if metric == "probe_exact_match" else None
        fitted = fit(config, train_rows, val_rows, probe_rows=per_epoch_probe)
        results.append({
            "seed": seed,
            "value": trial_value(fitted, metric, value_from),
            "val_exact_match": fitted.best_exact_match,
            "probe_exact_match": measure_probe(fitted, probe).exact_match if probe is not None else None,
            "epochs": len(fitted.history),
        })
    return results


def stored_base_config(values: dict) -> dict:
    """A study's stored base config, as the code that made it ran it.

    Studies made before the fused training step (their config has no ``train.fused``) trained
    through torch.nn; a rerun does the same, so it repeats the same computation (the two
    paths differ in float rounding)."""
    train = values.get("train", {})
    return values if "fused" in train else {**values, "train": {**train, "fused": False}}


def _data_only(train_config: TrainConfig) -> TrainConfig:
    """Keep only the keys that decide the rows and the split, so trials share the cache."""
    return TrainConfig(
        dataset_path=train_config.dataset_path,
        lengths=train_config.lengths,
        train_split_fraction=train_config.train_split_fraction,
        seed=train_config.seed,
    )


def _record_run(trial: optuna.Trial, epochs: list[EpochResult]) -> None:
    trial.set_user_attr("epochs_run", len(epochs))
    if epochs:
        trial.set_user_attr("seconds_per_epoch", round(sum(e.seconds for e in epochs) / len(epochs), 4))
