"""The best trial (or, with several objectives, the Pareto set) as values: what `sweep best` shows
and `sweep best --json` prints; and a stored trial's checkpoint by ``STUDY:TRIAL`` (``STUDY:best``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from digitsum.errors import UsageError
from sweep.reruns.stats import Spread
from sweep.spec.objectives import best_trial, objectives_from_stored
from sweep.store.artifacts import fetched, has_checkpoint, store_for
from sweep.store.records import RerunRecord, StudyMeta, TrialRecord, model_type, read_reruns, seed_runs
from sweep.store.storage import load_study, open_existing


def best_summary(study: optuna.Study) -> dict[str, Any]:
    """The best trial of a study with one objective; ValueError when no trial is complete."""
    trial = best_trial(study)
    record = TrialRecord.read(trial)
    return {
        "study": study.study_name,
        "trial": trial.number,
        "value": trial.value,
        "metric": StudyMeta.read(study).metric,
        "params": trial.params,
        "val_exact_match": record.val_exact_match,
        "probe_exact_match": record.probe_exact_match,
        "probe_by_length": record.probe_by_length or None,
        "probe_in_range_exact_match": record.probe_in_range_exact_match,
        "probe_in_range_by_length": record.probe_in_range_by_length or None,
        "epochs": record.epochs_run,
        "n_parameters": record.n_parameters,
        "seconds_per_epoch": record.seconds_per_epoch,
        "checkpoint": checkpoint_text(study, record),
        "checkpoint_exists": has_checkpoint(record),
        "n_complete": len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
        "per_seed": record.per_seed or None,  # with train.n_seeds: each seed's outcome, by seed
        "seed_aggregate": StudyMeta.read(study).seed_aggregate if record.per_seed else None,
        "over_seeds": over_seeds(seed_runs(trial, read_reruns(study))),
        "ran_on": ran_on(record),
        "schedule": record.schedule or None,  # a pbt member's hyperparameters: at the start and at each change
        "lineage": record.lineage or None,  # whose weights it took, at which epoch
    }


def ran_on(record: TrialRecord) -> dict[str, Any] | None:
    """Where the trial ran (sweep.run.machine); None for a trial recorded before it was kept."""
    if record.host is None:
        return None
    threads = record.num_threads or None  # 0: torch's default, not recorded
    return {
        "host": record.host,
        "processor": record.processor,
        "device": record.device,
        "threads": threads,
        "versions": record.versions,
    }


def pareto_summary(study: optuna.Study) -> dict[str, Any]:
    """The Pareto set of a study with several objectives (feasible trials only; empty when none)."""
    meta = StudyMeta.read(study)
    goals = objectives_from_stored(meta.objectives, meta.metric)
    reruns = read_reruns(study)  # one read of the study's attributes, not one per row
    rows = []
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        record = TrialRecord.read(trial)
        rows.append(
            {
                "trial": trial.number,
                "values": {str(goal.metric): value for goal, value in zip(goals, trial.values, strict=True)},
                "model_type": model_type(trial),
                "n_parameters": record.n_parameters,
                "params": trial.params,
                "checkpoint": checkpoint_text(study, record),
                "per_seed": record.per_seed or None,
                "over_seeds": over_seeds(seed_runs(trial, reruns)),
                "ran_on": ran_on(record),
            }
        )
    return {
        "study": study.study_name,
        "objectives": [goal.to_dict() for goal in goals],
        "constraints": meta.constraints,
        "pareto": rows,
    }


def checkpoint_text(study: optuna.Study, record: TrialRecord) -> str | None:
    """Where the trial's checkpoint is: ``artifact ID in LOCATION``, or a path (studies made before artifacts)."""
    if record.artifact_id:
        return f"artifact {record.artifact_id} in {StudyMeta.read(study).artifacts or 'the default store'}"
    return record.checkpoint


def over_seeds(runs: list[RerunRecord]) -> dict[str, Any] | None:
    """A trial's seeds (its own and its reruns, `seed_runs`): validation exact match mean and spread."""
    if not runs:
        return None
    spread = Spread(tuple(r.val_exact_match for r in runs))
    return {"seeds": [r.seed for r in runs], "val_exact_match_mean": spread.mean, "val_exact_match_stdev": spread.stdev}


@contextlib.contextmanager
def trial_checkpoint(reference: str, storage: str | None, artifacts: str | None) -> Iterator[Path]:
    """A checkpoint file's path as given, or ``STUDY:TRIAL`` (``STUDY:best``, by `best_trial`'s rule)
    fetched from the study's artifact store for the block."""
    path = Path(reference)
    study_name, colon, number = reference.rpartition(":")
    if path.exists() or not colon or not study_name or not (number.isdigit() or number == "best"):
        yield path  # load_checkpoint names a missing file
        return
    study = load_study(study_name, open_existing(storage))
    trials = study.get_trials(deepcopy=False)  # `study.trials` would deep-copy every trial
    if number == "best":
        try:
            trial = best_trial(study)
        except ValueError:
            raise UsageError(f"study {study_name!r} has no completed trial yet; run it with `sweep run`") from None
    elif int(number) < len(trials):
        trial = trials[int(number)]
    else:
        raise UsageError(f"study {study_name!r} has no trial {number} (it has {len(trials)}); see `sweep ls`")
    with fetched(store_for(artifacts, study, storage), TrialRecord.read(trial), trial.number) as found:
        yield found
