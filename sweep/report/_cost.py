"""Error rate against cost (parameters, training seconds), with each model type's Pareto front."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from sweep.report.frame import ERROR_FLOOR, Section, completed, error_axis, error_rate, group_colors, layout
from sweep.spec.objectives import Direction, pareto_front


def _pareto_front(costs: list[float], errors: list[float]) -> list[int]:
    """Indices of the points no other point beats on both cost and error, by increasing cost."""
    return pareto_front(list(zip(costs, errors, strict=True)), (Direction.MINIMIZE, Direction.MINIMIZE))


def cost_section(frame: pd.DataFrame, target: float) -> Section:
    """Validation error rate (log scale: 99.9% and 99.99% stay apart) against each trial's cost."""
    to_target = f"training seconds to {100 * target:g}% validation exact match"
    figures = [
        _cost_figure(frame, "n_parameters", "parameters", log_x=True),
        _cost_figure(frame, "seconds_to_target", to_target, log_x=False),
    ]
    return Section(
        "Cost",
        f"Each completed trial's validation error rate (log scale; 0 errors drawn at {ERROR_FLOOR:g}) against its "
        f"size and against the training seconds it took to first reach {100 * target:g}% validation exact match "
        "(trials that never reached it are left out); lines join each model type's Pareto front. Times are the "
        "training passes alone, one measurement per trial unless seed reruns say more (see Seed spread).",
        figures,
    )


def _cost_figure(frame: pd.DataFrame, name: str, label: str, log_x: bool) -> go.Figure:
    fig = go.Figure()
    complete = completed(frame)
    for group, color in group_colors(frame).items():
        trials = complete[complete.group == group]
        cost = [getattr(r, name) for r in trials.record]
        keep = [i for i, c in enumerate(cost) if c is not None]
        costs = [float(cost[i]) for i in keep]
        errors = list(error_rate(trials.value).iloc[keep])
        front = _pareto_front(costs, errors)
        text = [f"trial {n}" for n in trials.number.iloc[keep]]
        fig.add_trace(
            go.Scatter(
                x=costs,
                y=errors,
                mode="markers",
                name=group,
                marker=dict(color=color, size=7),
                text=text,
                legendgroup=group,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[costs[i] for i in front],
                y=[errors[i] for i in front],
                mode="lines",
                line=dict(color=color, shape="hv"),
                legendgroup=group,
                showlegend=False,
            )
        )
    error_axis(fig)
    if log_x:
        fig.update_xaxes(type="log")
    return layout(fig, f"Validation error rate against {label}", label, "error rate (1 - exact match)")
