"""Accuracy by input length, on the training lengths and the probe's unseen ones."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from sweep.report.frame import Section, completed, group_colors, layout, length_axis
from sweep.store.records import TrialRecord


def lengths_section(frame: pd.DataFrame) -> Section:
    colors = group_colors(frame)
    fig = go.Figure()
    complete = completed(frame)
    trained: set[int] = set()
    for group, color in colors.items():
        trials = complete[complete.group == group].sort_values("value", ascending=False).head(3)
        for rank, row in enumerate(trials.itertuples()):
            record: TrialRecord = row.record
            # the config's lengths too: a length can have no validation row (the ten 1-digit strings,
            # one per sum, all kept for training)
            trained |= {int(k) for k in record.val_by_length} | set(row.trained_lengths)
            name = f"{group} #{rank + 1} (trial {row.number})"
            for scored, by_length, dash in _length_curves(record):
                lengths = sorted(by_length)
                fig.add_trace(
                    go.Scatter(
                        x=lengths,
                        y=[by_length[n] for n in lengths],
                        mode="lines+markers",
                        name=f"{name}, {scored}",
                        legendgroup=name,
                        opacity=[1.0, 0.7, 0.45][rank],
                        marker=dict(symbol=["circle", "square", "diamond"][rank]),
                        line=dict(color=color, dash=dash),
                    )
                )
    if trained:
        fig.add_vrect(
            x0=min(trained) - 0.5,
            x1=max(trained) + 0.5,
            fillcolor="#eeeeee",
            opacity=0.5,
            line_width=0,
            annotation_text="lengths in training",
            annotation_position="top left",
        )
    return Section(
        "Length generalization",
        "Exact match by input length for the three best trials of each model type: validation rows of the "
        "lengths trained on (shaded), then the probe of longer inputs that no model saw in training. Solid: "
        "all rows; dotted: the in-range rows alone, whose sum occurs in the training rows (every validation "
        "row is), so a model that writes only answers it was taught is not capped there.",
        [length_axis(layout(fig, "Exact match by input length", "input length (digits)", "exact match"))],
    )


def _length_curves(record: TrialRecord) -> list[tuple[str, dict[int, float], str]]:
    """(what is scored, exact match by length, line dash): all rows, and in-range rows where recorded."""
    val = {int(k): v for k, v in record.val_by_length.items()}
    curves = [("all rows", {**val, **{int(k): v for k, v in record.probe_by_length.items()}}, "solid")]
    if record.probe_in_range_by_length:
        in_range = {int(k): v for k, v in record.probe_in_range_by_length.items()}
        curves.append(("in range", {**val, **in_range}, "dot"))
    return [curve for curve in curves if curve[1]]
