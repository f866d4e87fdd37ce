"""Seed reruns: re-train chosen trials with other seeds (`jobs`), and the statistics that compare
configurations over seeds (`stats`: mean and spread, the bootstrap interval of a difference)."""

from sweep.reruns.jobs import Job, choose_trials, pending, plan_reruns, run_jobs, summary
from sweep.reruns.stats import Difference, Spread, bootstrap_difference, verdict

__all__ = [
    "Difference",
    "Job",
    "Spread",
    "bootstrap_difference",
    "choose_trials",
    "pending",
    "plan_reruns",
    "run_jobs",
    "summary",
    "verdict",
]
