"""Learning curves: validation exact match per epoch, coloured by model type."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from optuna.trial import TrialState

from sweep.report.frame import MAX_CURVES, Section, group_colors, layout


def curves_section(frame: pd.DataFrame, metric: str) -> Section:
    colors = group_colors(frame)
    fig = go.Figure()
    shown = frame[frame.curve.map(len) > 0]
    if len(shown) > MAX_CURVES:  # keep every complete trial's curve first, then the latest pruned ones
        complete_first = shown.state.map(lambda state: state != TrialState.COMPLETE)
        shown = shown.assign(later=complete_first).sort_values(["later", "number"], ascending=[True, False])
        shown = shown.head(MAX_CURVES)
    legend_done: set[str] = set()
    for row in shown.itertuples():
        pruned = row.state == TrialState.PRUNED
        fig.add_trace(
            go.Scatter(
                x=list(row.curve),
                y=list(row.curve.values()),
                mode="lines+markers" if pruned else "lines",
                line=dict(color=colors[row.group], width=1, dash="dot" if pruned else "solid"),
                marker=dict(symbol="x", size=5),
                opacity=0.55 if pruned else 0.9,
                name=row.group,
                legendgroup=row.group,
                showlegend=row.group not in legend_done,
                hovertext=f"trial {row.number} ({TrialState(row.state).name.lower()})",
                hoverinfo="x+y+text",
            )
        )
        legend_done.add(row.group)
    return Section(
        "Learning curves",
        f"{metric} after every epoch (the values reported to the pruner), one line per trial, coloured by "
        "model type. Pruned trials are dotted and end where the pruner stopped them.",
        [layout(fig, f"{metric} per epoch", "epoch", metric)],
    )
