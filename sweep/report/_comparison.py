"""Model types compared: each trial's value by model type."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from optuna.trial import TrialState

from sweep.report.frame import ERROR_FLOOR, Section, add_spread, error_axis, error_rate, group_colors, layout
from sweep.spec.objectives import ACCURACY_METRICS


def comparison_section(frame: pd.DataFrame, metric: str) -> Section:
    colors = group_colors(frame)
    by_number, by_time, spread = go.Figure(), go.Figure(), go.Figure()
    origin = frame.start.dropna().min()
    # Accuracies near 100% are drawn as error rates on a log axis, so 99.9% and 99.99% stay apart.
    as_error = metric in ACCURACY_METRICS
    y = f"error rate (1 - {metric})" if as_error else metric
    frame = frame.assign(value=error_rate(frame.value), last_value=error_rate(frame.last_value)) if as_error else frame
    for group, color in colors.items():
        trials = frame[(frame.group == group) & frame.complete.notna()].sort_values("complete")
        values = trials.value.where(trials.state == TrialState.COMPLETE).ffill()
        best = values.cummin() if as_error else values.cummax()
        line = dict(color=color, shape="hv")
        by_number.add_trace(go.Scatter(x=trials.number, y=best, mode="lines+markers", name=group, line=line))
        minutes = [(c - origin).total_seconds() / 60 for c in trials.complete]
        by_time.add_trace(go.Scatter(x=minutes, y=best, mode="lines+markers", name=group, line=line))
        add_spread(spread, group, color, trials)
    return Section(
        "Model types compared",
        "Best value so far of each model type against trial number and against wall-clock time since the "
        "first trial; then the distribution of final values of completed trials, with pruned trials "
        "(their last reported value) shown beside them, faded."
        + (
            f" Accuracies are drawn as error rates (1 - accuracy, log scale, 0 drawn at {ERROR_FLOOR:g})."
            if as_error
            else ""
        ),
        [
            error_axis(layout(by_number, f"Best {metric} so far, by trial number", "trial number", y), as_error),
            error_axis(
                layout(by_time, f"Best {metric} so far, by wall-clock time", "minutes since the first trial", y),
                as_error,
            ),
            error_axis(layout(spread, f"Final {metric} per model type", "", y), as_error),
        ],
    )
