"""Running a study: the plan (`plan`), the budget of trials (`budget`), one worker's loop (`worker`),
the processes and the monitor (`launch`), the ledger every check reads (`ledger`), one trial
(`trial`: Optuna's objective), and how a run fails (`failures`)."""

from sweep.run.failures import DiskFull, RunFailed, StorageLost, TrialsKeepFailing, WorkersFailed
from sweep.run.launch import run_study
from sweep.run.ledger import FINISHED, Ledger
from sweep.run.plan import RunPlan, plan_run, prepare_study
from sweep.run.worker import work

__all__ = [
    "FINISHED",
    "DiskFull",
    "Ledger",
    "RunFailed",
    "RunPlan",
    "StorageLost",
    "TrialsKeepFailing",
    "WorkersFailed",
    "plan_run",
    "prepare_study",
    "run_study",
    "work",
]
