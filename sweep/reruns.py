"""Seed reruns: re-train the best trials of each model type once per seed, on several workers, and
keep the results on the study (`RerunRecord`), so reports and `sweep best` can say whether a
difference between model types exceeds the spread over seeds. Reruns already stored are not repeated.
"""

from __future__ import annotations

import multiprocessing
import statistics
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from digitsum.errors import UsageError
from sweep.objective import rerun
from sweep.records import RerunRecord, TrialRecord, model_type, read_reruns, write_rerun
from sweep.storage import close_storage, open_storage


@dataclass(frozen=True)
class Job:
    trial: int
    seed: int


def choose_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` best completed trials of each model type. With several objectives: from each
    model type's own Pareto front (feasible trials only), the ``top`` best by each objective, so
    that every family's smallest, fastest and most accurate trials are re-trained."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    by_type: dict[str, list[FrozenTrial]] = {}
    for trial in complete:
        by_type.setdefault(model_type(trial), []).append(trial)
    signs = [-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0 for d in study.directions]
    chosen: set[int] = set()
    for trials in by_type.values():
        if len(signs) > 1:  # a type with no feasible trial still shows its best: its whole front
            feasible = [t for t in trials if all(c <= 0 for c in t.constraints.values())]
            trials = pareto_front(feasible or trials, signs)
        for index, sign in enumerate(signs):
            ranked = sorted(trials, key=lambda t: (sign * t.values[index], t.number))
            chosen |= {t.number for t in ranked[:top]}
    return [t for t in complete if t.number in chosen]


def pareto_front(trials: list[FrozenTrial], signs: list[float]) -> list[FrozenTrial]:
    """The trials no other trial dominates (``signs``: -1 for a maximized objective, +1 minimized)."""

    def costs(trial: FrozenTrial) -> list[float]:
        return [s * v for s, v in zip(signs, trial.values, strict=True)]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return [t for t in trials if not any(dominates(costs(o), costs(t)) for o in trials if o is not t)]


def pending(study: optuna.Study, trials: Iterable[int], seeds: list[int], again: bool = False) -> list[Job]:
    """The (trial, seed) pairs to train: those not stored yet (all of them with ``again``)."""
    done = {(r.trial, r.seed) for r in read_reruns(study)}
    return [Job(t, s) for t in trials for s in seeds if again or (t, s) not in done]


def run_jobs(
    storage_url: str | None,
    study_name: str,
    jobs: list[Job],
    workers: int,
    threads: int,
    on_result: Callable[[RerunRecord], None] | None = None,
) -> None:
    """Train every job and store its result; ``workers`` processes (spawned) share the work."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            record = rerun_job(storage_url, study_name, job, threads)
            if on_result is not None:
                on_result(record)
        return
    context = multiprocessing.get_context("spawn")  # not fork: see sweep.run.run_study
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(rerun_job, storage_url, study_name, job, threads) for job in jobs]
        for future in as_completed(futures):
            record = future.result()
            if on_result is not None:
                on_result(record)


def rerun_job(storage_url: str | None, study_name: str, job: Job, threads: int) -> RerunRecord:
    """Re-train one trial with one seed and store the result on the study (in any process)."""
    storage = open_storage(storage_url, heartbeat=False)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        trial = study.trials[job.trial]
        num_threads = threads or TrialRecord.read(trial).num_threads
        (result,) = rerun(study, job.trial, [job.seed], num_threads)
        record = _record(job, result, num_threads)
        write_rerun(study, record)
        return record
    finally:
        close_storage(storage)


def _record(job: Job, result: dict[str, Any], num_threads: int) -> RerunRecord:
    return RerunRecord(
        trial=job.trial,
        seed=job.seed,
        value=result["value"],
        val_exact_match=result["val_exact_match"],
        probe_exact_match=result["probe_exact_match"],
        n_parameters=result["n_parameters"],
        train_seconds=result["train_seconds"],
        epoch_to_target=result["epoch_to_target"],
        seconds_to_target=result["seconds_to_target"],
        epochs=result["epochs"],
        num_threads=num_threads,
    )


def summary(study: optuna.Study, numbers: list[int], seeds: list[int] | None = None) -> list[dict[str, Any]]:
    """Per trial: its stored value and state, the stored reruns (of ``seeds``, or all), mean and spread."""
    by_trial: dict[int, list[RerunRecord]] = {}
    for record in read_reruns(study):
        if seeds is None or record.seed in seeds:
            by_trial.setdefault(record.trial, []).append(record)
    rows = []
    for number in numbers:
        trial = study.trials[number]
        runs = by_trial.get(number, [])
        values = [r.value for r in runs]
        rows.append(
            {
                "trial": number,
                "model_type": model_type(trial),
                "stored_value": trial.values[0] if trial.values else None,
                "stored_state": trial.state.name,
                "runs": [r.__dict__ for r in runs],
                "mean": statistics.fmean(values) if values else None,
                "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            }
        )
    return rows


def check_trial(study: optuna.Study, number: int) -> None:
    if not 0 <= number < len(study.trials):
        raise UsageError(f"study {study.study_name!r} has no trial {number}; see `sweep export {study.study_name}`")
