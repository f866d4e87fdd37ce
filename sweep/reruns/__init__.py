"""Seed reruns: re-train chosen trials with other seeds (`jobs`), and the statistics that compare
configurations over seeds (`stats`: mean and spread, the bootstrap interval of a difference)."""

from sweep.lazy import exports

# public name -> its module: imported on first use, so that reading one light module loads no heavy one
_EXPORTS = {
    "Difference": "stats",
    "Job": "jobs",
    "Reruns": "jobs",
    "Spread": "stats",
    "bootstrap_difference": "stats",
    "choose_trials": "jobs",
    "pending": "jobs",
    "plan_reruns": "jobs",
    "run_jobs": "jobs",
    "summary": "jobs",
    "verdict": "stats",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
