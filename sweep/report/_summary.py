"""The summary table: each model type's trials, best value and cost."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
from optuna.trial import TrialState

from sweep.report.frame import Section, best_row, completed, params_text, pct
from sweep.store.records import TrialRecord


def summary_section(frame: pd.DataFrame, metric: str) -> Section:
    rows, configs = [], []
    for group, trials in frame.groupby("group", sort=True):
        complete = completed(trials)
        best = best_row(trials)
        rows.append(_summary_row(str(group), trials, complete, best, metric))
        if best is not None:
            configs.append(
                f"<li><b>{html.escape(str(group))}</b> (trial {int(best.number)}): "
                f"{html.escape(params_text(best.params))}</li>"
            )
    table = pd.DataFrame(rows).to_html(index=False, escape=True, classes="summary", border=0)
    table += "<h3>Best configuration per model type</h3><ul class='configs'>" + "".join(configs) + "</ul>"
    return Section(
        "Summary",
        f"Per model type: trials by state; best and median {metric} of completed trials (unrolled greedy "
        "decoding, exact match; the best among those that meet the study's constraints, as `sweep best` "
        "picks it); then the best trial's own probe accuracy (input lengths never seen in "
        "training), size, training seconds and seconds to the target accuracy, and its configuration. "
        "Timings are one measurement each (training passes only, after the worker's warm-up); the Seed "
        "spread section gives means over seeds where reruns exist.",
        [],
        table,
        table_first=True,
    )


def _summary_row(
    group: str, trials: pd.DataFrame, complete: pd.DataFrame, best: pd.Series | None, metric: str
) -> dict[str, Any]:
    record: TrialRecord | None = best.record if best is not None else None
    probe = record.probe_exact_match if record is not None else None
    train = record.train_seconds if record is not None else None
    to_target = record.seconds_to_target if record is not None else None
    return {
        "group": group,
        "trials": len(trials),
        "complete": len(complete),
        "pruned": int((trials.state == TrialState.PRUNED).sum()),
        "failed": int((trials.state == TrialState.FAIL).sum()),
        f"best {metric}": pct(best.value) if best is not None else "-",
        f"median {metric}": pct(complete.value.median()) if len(complete) else "-",
        "best trial": int(best.number) if best is not None else "-",
        "its probe": pct(probe) if probe is not None else "-",
        "its probe, in range": pct(record.probe_in_range_exact_match)
        if record is not None and record.probe_in_range_exact_match is not None
        else "-",
        "its parameters": f"{record.n_parameters or 0:,}" if record is not None else "-",
        "its training s (one run)": f"{train:.1f}" if train is not None else "-",
        "its s to target (one run)": f"{to_target:.1f}" if to_target is not None else "not reached",
        "its seeds' values": _over_seeds(record),
    }


def _over_seeds(record: TrialRecord | None) -> str:
    """The trial's value over the seeds it trained itself (train.n_seeds), as mean +- sd."""
    from sweep.reruns.stats import Spread

    if record is None or not record.per_seed:
        return "-"
    return Spread(tuple(float(run["value"]) for run in record.per_seed.values())).text()
