"""A stopped trial goes on where it stopped: Ctrl-C or SIGTERM (a scheduler's time limit, a
preemption) fails a trial and queues it again (sweep.run.signals); its whole training state at its
last finished epoch (`digitsum.fit_state`) goes to the artifact store with it, and its retry, on any
machine that reaches the store, resumes from there instead of from epoch 1: its curve so far is
reported again, and its record says ``resumed_from``. A trial killed outright (SIGKILL, a lost
machine) has no time to store it, and its retry starts over.

One trial's members at a time (its ``train.n_seeds`` seeds); a stack of trials (``stack``) and a pbt
population (which stores its own state at each interval: sweep.run.pbt) do not use this.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from digitsum.fit_state import FitState, load_state, save_state
from sweep.store.artifacts import download_state, remove_id, upload
from sweep.store.records import TrialRecord, write_trial


def store_stopped(trial: optuna.Trial, store: Any, state: FitState | None) -> None:
    """Keep a stopped trial's state for its retry (nothing where it finished no epoch)."""
    if state is None:
        return
    with tempfile.TemporaryDirectory(prefix="sweep-stopped-") as folder:
        path = Path(folder) / f"trial-{trial.number:05d}-epoch-{state.epoch:05d}.state.pt"
        save_state(state, path)
        write_trial(trial, resume_id=upload(store, trial, path))


def stopped_state(trial: optuna.Trial, store: Any) -> tuple[FitState, FrozenTrial] | None:
    """The state the trial this one retries stored when it was stopped, and that trial; None for a
    trial that retries none, or one killed without a state. Two reads by id: O(1) in the study's size."""
    storage = trial.study._storage
    history = RetryHeartbeatStaleTrialCallback.retry_history(storage.get_trial(trial._trial_id))
    if not history:
        return None
    failed = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(trial.study._study_id, history[-1]))
    resume_id = TrialRecord.read(failed).resume_id
    if not resume_id:
        return None
    with tempfile.TemporaryDirectory(prefix="sweep-stopped-") as folder:
        path = Path(folder) / "state.pt"
        download_state(store, resume_id, path)
        state = load_state(path)
    remove_id(store, resume_id)  # the retry owns it now; it stores its own if it is stopped in turn
    return state, failed
