"""Seed reruns: re-train the best trials of each model type once per seed, on several workers, and
keep the results on the study (`RerunRecord`), so reports and `sweep best` can say whether a
difference between model types exceeds the spread over seeds. Reruns already stored are not repeated.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from digitsum import config as cfg
from digitsum.errors import UsageError
from sweep.reruns.stats import Spread
from sweep.run.plan import threads_per_worker
from sweep.run.trial import retrain
from sweep.spec.objectives import feasible, pareto_front, ranked
from sweep.store.records import (
    RerunRecord,
    StudyMeta,
    TrialRecord,
    model_type,
    read_reruns,
    seed_runs,
    write_rerun,
)
from sweep.store.storage import close_storage, open_storage


@dataclass(frozen=True)
class Job:
    """One trial's seeds to train: all at once, in one stacked computation (`digitsum.members`)."""

    trial: int
    seeds: tuple[int, ...]


def choose_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` best trials of each model type, by the one rule for the best trial (`ranked`:
    complete and feasible, ties to the lowest number). With several objectives: from each model type's
    own Pareto front, the ``top`` best by each objective, so that every family's smallest, fastest and
    most accurate trials are re-trained."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    by_type: dict[str, list[FrozenTrial]] = {}
    for trial in complete:
        if feasible(trial):
            by_type.setdefault(model_type(trial), []).append(trial)
    chosen: set[int] = set()
    for trials in by_type.values():
        if len(study.directions) > 1:
            trials = [trials[i] for i in pareto_front([t.values for t in trials], study.directions)]
        for index, direction in enumerate(study.directions):
            best_first = ranked(trials, direction, functools.partial(_objective, index=index))
            chosen |= {t.number for t in best_first[:top]}
    return [t for t in complete if t.number in chosen]


def _objective(trial: FrozenTrial, index: int) -> float:
    return trial.values[index]


def pending(study: optuna.Study, trials: Iterable[int], seeds: list[int], again: bool = False) -> list[Job]:
    """Per trial, the seeds to train: those it has not trained itself nor by a stored rerun (all with ``again``)."""
    reruns = read_reruns(study)
    stored = study.get_trials(deepcopy=False)
    jobs = []
    for number in trials:
        done = set() if again else {r.seed for r in seed_runs(stored[number], reruns)}
        todo = tuple(s for s in seeds if s not in done)
        if todo:
            jobs.append(Job(number, todo))
    return jobs


def run_jobs(
    storage_url: str | None,
    study_name: str,
    jobs: list[Job],
    workers: int,
    threads: int,
    on_result: Callable[[RerunRecord], None] | None = None,
) -> None:
    """Train every job and store its results; ``workers`` processes (spawned) share the jobs."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            for record in rerun_job(storage_url, study_name, job, threads):
                if on_result is not None:
                    on_result(record)
        return
    context = multiprocessing.get_context("spawn")  # not fork: see sweep.run.launch.run_study
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(rerun_job, storage_url, study_name, job, threads) for job in jobs]
        for future in as_completed(futures):
            for record in future.result():
                if on_result is not None:
                    on_result(record)


def rerun_job(storage_url: str | None, study_name: str, job: Job, threads: int) -> list[RerunRecord]:
    """Re-train one trial with its seeds at once; store each seed's result on the study (in any process)."""
    storage = open_storage(storage_url, heartbeat=False)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        trial = study.get_trials(deepcopy=False)[job.trial]  # `study.trials` deep-copies every trial
        num_threads = threads or TrialRecord.read(trial).num_threads
        results = retrain(study, job.trial, [*job.seeds], num_threads)
        records = [_record(job.trial, result, num_threads) for result in results]
        for record in records:
            write_rerun(study, record)
        return records
    finally:
        close_storage(storage)


def _record(trial: int, result: dict[str, Any], num_threads: int) -> RerunRecord:
    return RerunRecord(
        trial=trial,
        seed=result["seed"],
        value=result["value"],
        val_exact_match=result["val_exact_match"],
        probe_exact_match=result["probe_exact_match"],
        n_parameters=result["n_parameters"],
        train_seconds=result["train_seconds"],
        epoch_to_target=result["epoch_to_target"],
        seconds_to_target=result["seconds_to_target"],
        epochs=result["epochs"],
        num_threads=num_threads,
        probe_in_range_by_length=result.get("probe_in_range_by_length"),
    )


def summary(study: optuna.Study, numbers: list[int], seeds: list[int] | None = None) -> list[dict[str, Any]]:
    """Per trial: its stored value and state, its seeds (of ``seeds``, or all: its own and its reruns,
    `seed_runs`), mean and spread."""
    reruns = read_reruns(study)
    trials = study.get_trials(deepcopy=False)
    own_seed = int((StudyMeta.read(study).base_config or {}).get("train", {}).get("seed", 0))
    rows = []
    for number in numbers:
        trial = trials[number]
        runs = [r for r in seed_runs(trial, reruns) if seeds is None or r.seed in seeds]
        spread = Spread(tuple(r.value for r in runs)) if runs else None
        stored = trial.values[0] if trial.values else None
        rows.append(
            {
                "trial": number,
                "model_type": model_type(trial),
                "stored_value": stored,
                "stored_state": trial.state.name,
                "runs": [r.__dict__ for r in runs],
                "mean": spread.mean if spread else None,
                "stdev": spread.stdev if spread else 0.0,
                "replay": _replay(TrialRecord.read(trial), runs, own_seed, stored),
            }
        )
    return rows


def _replay(record: TrialRecord, runs: list[RerunRecord], own_seed: int, stored: float | None) -> dict | None:
    """For a pbt member: its schedule's changes, the epochs it took others' weights at, and whether the
    replay with its own seed gave its stored value (None where that seed was not replayed)."""
    if not record.schedule:
        return None
    own = next((r for r in runs if r.seed == own_seed), None)
    return {
        "changes": len(record.schedule) - 1,
        "copied_at": [entry["epoch"] for entry in record.lineage],
        "reproduces": None if own is None or stored is None else own.value == stored,
    }


def check_trial(study: optuna.Study, number: int) -> None:
    if not 0 <= number < len(study.get_trials(deepcopy=False)):
        raise UsageError(f"study {study.study_name!r} has no trial {number}; see `sweep export {study.study_name}`")


@dataclass(frozen=True)
class Reruns:
    """What `sweep rerun` trains, checked before anything trains."""

    numbers: list[int]  # the trials re-trained
    seeds: list[int]
    jobs: list[Job]  # per trial, the seeds it has not trained yet (each job trains its seeds at once)
    threads: int  # torch threads per rerun; 0: each trial's own

    @property
    def runs(self) -> int:
        """How many (trial, seed) runs the jobs train."""
        return sum(len(job.seeds) for job in self.jobs)


def plan_reruns(
    study: optuna.Study,
    number: int | None,
    top: int | None,
    seeds: list[int] | None,
    workers: int = 1,
    threads: int | None = None,
    again: bool = False,
) -> Reruns:
    """The trials to re-train (``number``, or the ``top`` best of each model type) and the seeds: the
    given ones, else the trial's own (one trial) or 0, 1, 2 (``top``); of those, the seeds each has not
    trained yet (all with ``again``); threads per rerun: ``threads``, else cores / workers."""
    numbers, chosen = _chosen(study, number, top, seeds)
    each = threads or (threads_per_worker(workers) if workers > 1 else 0)
    return Reruns(numbers, chosen, pending(study, numbers, chosen, again), each)


def _chosen(
    study: optuna.Study, number: int | None, top: int | None, seeds: list[int] | None
) -> tuple[list[int], list[int]]:
    if (number is None) == (top is None):
        raise UsageError("give a TRIAL number or --top K (the K best trials of each model type), not both or neither")
    if number is not None:
        check_trial(study, number)
    numbers = [number] if number is not None else [t.number for t in choose_trials(study, top or 1)]
    chosen = seeds or ([_own_seed(study, number)] if number is not None else [0, 1, 2])
    for seed in chosen:
        cfg.check_value("train.seed", seed)
    return numbers, chosen


def _own_seed(study: optuna.Study, number: int) -> int:
    """The seed the trial trained with: its parameter, else its study's base config's."""
    trial = study.get_trials(deepcopy=False)[number]
    base = StudyMeta.read(study).base_config or {}
    return int(trial.params.get("train.seed", base.get("train", {}).get("seed", 0)))
