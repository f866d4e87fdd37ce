"""Running a study: the plan (`plan`), the budget of trials (`budget`), one worker's loop (`worker`),
the processes and the monitor (`launch`), the ledger every check reads (`ledger`), one trial
(`trial`: Optuna's objective), and how a run fails (`failures`)."""

from sweep.lazy import exports

# public name -> its module: imported on first use, so that reading one light module loads no heavy one
_EXPORTS = {
    "DiskFull": "failures",
    "FINISHED": "ledger",
    "Ledger": "ledger",
    "RunFailed": "failures",
    "RunPlan": "plan",
    "StorageLost": "failures",
    "TrialsKeepFailing": "failures",
    "WorkersFailed": "failures",
    "plan_run": "plan",
    "prepare_study": "plan",
    "run_study": "launch",
    "work": "worker",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
