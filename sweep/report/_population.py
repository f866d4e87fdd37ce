"""A pbt population over time: each member's validation accuracy per epoch, its exploits marked, and
the best member's hyperparameter schedule (sweep.run.pbt). Empty for studies without pbt."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sweep.report.frame import COLORS, EXTRA_COLORS, Section, layout, values_axis


def population_section(frame: pd.DataFrame, metric: str) -> Section | None:
    """None where no study of the report trained a population."""
    members = frame[frame.record.map(lambda record: bool(record.schedule))] if not frame.empty else frame
    if members.empty:
        return None
    palette = list(COLORS.values()) + EXTRA_COLORS
    fig = go.Figure()
    for index, row in enumerate(members.sort_values("number").itertuples()):
        color = palette[index % len(palette)]
        curve = row.curve
        fig.add_trace(
            go.Scatter(
                x=list(curve), y=list(curve.values()), mode="lines", line=dict(color=color, width=1.5),
                name=f"trial {row.number}", legendgroup=str(row.number),
            )
        )  # fmt: skip
        took = [e for e in row.record.lineage if e["epoch"] in curve]
        if took:
            fig.add_trace(
                go.Scatter(
                    x=[e["epoch"] for e in took], y=[curve[e["epoch"]] for e in took], mode="markers",
                    marker=dict(symbol="triangle-up", size=11, color=color, line=dict(color="black", width=1)),
                    hovertext=[f"trial {row.number} took trial {e['from_trial']}'s weights" for e in took],
                    hoverinfo="text", legendgroup=str(row.number), showlegend=False,
                )
            )  # fmt: skip
    figures = [layout(fig, f"{metric} per epoch, each member; a triangle: it copied a better member", "epoch", metric)]
    best = members.sort_values("score", ascending=False, na_position="last").iloc[0]
    figures.append(_schedule_figure(best.record.schedule, int(best.number), int(max(best.curve) if best.curve else 0)))
    return Section(
        "Population (pbt)",
        "Each member of the population is a trial. Every interval its worst members copy the weights and "
        "optimizer state of one of its best (a triangle marks each copy) and go on with perturbed or "
        "resampled hyperparameters. Below: the hyperparameters the best member trained with, epoch by epoch.",
        figures,
    )


def _schedule_figure(schedule: list[dict], number: int, last_epoch: int) -> go.Figure:
    """One step line per hyperparameter: its value from each change to the next (log axes)."""
    keys = list(schedule[0]["params"])
    fig = make_subplots(rows=len(keys), cols=1, shared_xaxes=True, subplot_titles=keys)
    epochs = [entry["epoch"] for entry in schedule] + [max(last_epoch, schedule[-1]["epoch"])]
    for row, key in enumerate(keys, start=1):
        values = [entry["params"][key] for entry in schedule]
        fig.add_trace(
            go.Scatter(x=epochs, y=[*values, values[-1]], mode="lines+markers", line=dict(shape="hv"), name=key),
            row=row, col=1,
        )  # fmt: skip
        values_axis(fig, values, row=row, col=1)
    return layout(fig, f"the best member's (trial {number}) hyperparameters", "epoch", "value")
