"""How a run fails: the errors `run_study` raises (each a `RunFailed`, said in one line), and the
count of trials failing in a row that stops a run whose spec or machine is broken."""

from __future__ import annotations

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from sweep.store.records import TrialRecord
from sweep.store.storage import MAX_RETRY, is_full


class RunFailed(RuntimeError):
    """A run stopped for a reason the user can act on; what it stored stays stored."""


MAX_CONSECUTIVE_FAILURES = 5


class TrialsKeepFailing(RunFailed):
    """Several trials in a row failed: something is wrong with the spec or the machine."""


class DiskFull(RunFailed):
    """A trial could not store its checkpoint: the disk is full. Waiting will not mend it, and every
    next trial would fail the same way, so the run stops; the trial is queued again for the resume."""

    def __init__(self, trial: FrozenTrial) -> None:
        self.trial = trial
        reason = TrialRecord.read(trial).fail_reason
        again = " (the trial runs again first)" if _retries_left(trial) else ""
        super().__init__(
            f"trial {trial.number} could not store its checkpoint ({reason}); free some space, then run the same "
            f"command again to resume{again}"
        )


def _retries_left(trial: FrozenTrial) -> bool:
    """Would Optuna's retry callback queue this trial again (it stops after MAX_RETRY retries)?"""
    return len(RetryHeartbeatStaleTrialCallback.retry_history(trial)) < MAX_RETRY


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial again with its parameters, as a killed worker's is (Optuna's retry)."""
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


class FailureCount:
    """Counts a worker's trials failing in a row (surplus trials aside)."""

    def __init__(self) -> None:
        self.failures: list[FrozenTrial] = []

    def add(self, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL and not TrialRecord.read(trial).surplus:
            self.failures.append(trial)
        else:
            self.failures.clear()

    def check(self) -> None:
        if len(self.failures) < MAX_CONSECUTIVE_FAILURES:
            return
        last = self.failures[-1]
        reason = TrialRecord.read(last).fail_reason or "see the trials' fail_reason"
        raise TrialsKeepFailing(
            f"{len(self.failures)} trials in a row failed (last: trial {last.number}, {reason}); "
            "fix the spec or the machine, then run again"
        )


class StorageLost(RunFailed):
    """The storage stopped answering during a run; what it stored stays stored."""


class WorkersFailed(RunFailed):
    """Worker processes exited with an error (each said why on stderr)."""


def lost_message(error: Exception) -> str:
    reason = " ".join(str(getattr(error, "orig", None) or error).split())[:160]
    if is_full(error):
        return f"the storage's disk is full ({reason}); free some space, then run the same command again to resume"
    return f"lost the storage ({reason}); finished trials stay stored; run the same command again to resume"
