"""The report's one table of trials (a pandas frame over every study), the colours per model type,
and the helpers every section draws with."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from digitsum.lengths import parse_lengths
from sweep.spec.objectives import best_of, sign
from sweep.store.queries import read_trials
from sweep.store.records import StudyMeta, TrialRecord, model_type

COLORS = {"rnn": "#d62728", "lstm": "#1f77b4", "gru": "#2ca02c", "lrnn": "#ff7f0e"}


EXTRA_COLORS = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


FEW_TRIALS = 10  # fewer completed trials than this, and importances get a caveat


MAX_CURVES = 400  # learning curves drawn; more only slow the browser down


@dataclass(frozen=True)
class Section:
    title: str
    intro: str
    figures: list[go.Figure]
    table_html: str = ""
    table_first: bool = False  # the table before the figures (a summary), or after them (details)


def read_all(studies: list[optuna.Study]) -> dict[str, list[FrozenTrial]]:
    """Each study's trials, read once for the whole report (sweep.store.queries.read_trials)."""
    return {study.study_name: read_trials(study) for study in studies}


def trials_frame(studies: list[optuna.Study], loaded: dict[str, list[FrozenTrial]] | None = None) -> pd.DataFrame:
    """One row per trial of every study: group, state, value, params, the trial's record, curve."""
    rows = []
    several = len(studies) > 1
    loaded = loaded or read_all(studies)
    for study in studies:
        several_objectives = len(study.directions) > 1
        base_train = (StudyMeta.read(study).base_config or {}).get("train", {})
        for t in loaded[study.study_name]:
            record = TrialRecord.read(t)
            if record.surplus:
                continue
            kind = model_type(t)
            # With several objectives Optuna keeps no curve and no single value: the record's
            # validation curve and best-epoch accuracy stand in, so every figure compares accuracy.
            curve = dict(sorted(t.intermediate_values.items())) or dict(enumerate(record.val_curve, start=1))
            value = record.val_exact_match if several_objectives else t.value
            # what ranks trials (sweep.spec.objectives.ranked): the value, signed by its study's direction
            score = value if several_objectives or value is None else sign(study.direction) * value
            rows.append(
                {
                    "study": study.study_name,
                    "group": f"{study.study_name}: {kind}" if several else kind,
                    "model_type": kind,
                    "number": t.number,
                    "state": t.state,  # an IntEnum: pandas may keep it as a plain int
                    "value": value,
                    "last_value": curve[max(curve)] if curve else None,
                    "curve": curve,
                    "params": t.params,
                    "trained_lengths": trained_lengths(base_train, t.params),
                    "record": record,
                    "trial": t,
                    "score": score,
                    "start": t.datetime_start,
                    "complete": t.datetime_complete,
                }
            )
    return pd.DataFrame(rows)


def trained_lengths(base_train: dict[str, Any], params: dict[str, Any]) -> tuple[int, ...]:
    """The input lengths a trial generated its training rows from; () for a CSV dataset."""
    if params.get("train.dataset_path", base_train.get("dataset_path")):
        return ()
    lengths = params.get("train.lengths", base_train.get("lengths"))
    return tuple(parse_lengths(str(lengths))) if lengths else ()


def group_colors(frame: pd.DataFrame) -> dict[str, str]:
    """A colour per group: its model type's where each group is one model type, else one per group."""
    groups = frame[["group", "model_type"]].drop_duplicates().sort_values("group")
    palette = list(COLORS.values()) + EXTRA_COLORS
    one_per_type = groups.model_type.is_unique and groups.model_type.isin(list(COLORS)).all()
    return {
        row.group: COLORS[row.model_type] if one_per_type else palette[index % len(palette)]
        for index, row in enumerate(groups.itertuples())
    }


def layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        template="plotly_white",
        height=420,
        margin=dict(l=60, r=20, t=50, b=50),
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def completed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame.state == TrialState.COMPLETE]


def best_row(rows: pd.DataFrame) -> pd.Series | None:
    """The best of these rows by the one rule for the best trial (`sweep.spec.objectives.ranked`: complete,
    feasible, the best score, ties to the lowest number), as `sweep best` picks it; None when none can be."""
    if rows.empty:
        return None
    scores = {id(t): score for t, score in zip(rows.trial, rows.score, strict=True)}
    best = best_of(list(rows.trial), value=lambda trial: scores[id(trial)])
    return None if best is None else rows[rows.trial.map(id) == id(best)].iloc[0]


def length_axis(fig: go.Figure) -> go.Figure:
    """A tick at every length up to 20 digits; past that, a log axis ticked at the lengths drawn (a probe
    at 20, 50 and 100 digits would otherwise squeeze the training lengths into a corner)."""
    lengths = sorted({int(x) for trace in fig.data for x in trace.x})
    if not lengths or lengths[-1] <= 20:
        return fig.update_xaxes(dtick=1)
    return fig.update_xaxes(type="log", tickvals=lengths, ticktext=[str(n) for n in lengths])


ERROR_TICKS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def error_axis(fig: go.Figure, log: bool = True, **where: Any) -> go.Figure:
    """An error-rate axis on a log scale, labelled only at 0.01%, 0.1%, 1%, 10% and 100% error: Plotly's own
    log ticks label the minor ones "2" and "5", which read as error rates of 2 and 5."""
    if not log:
        return fig
    text = [f"{tick * 100:g}%" for tick in ERROR_TICKS]
    return fig.update_yaxes(type="log", tickvals=ERROR_TICKS, ticktext=text, **where)


def values_axis(fig: go.Figure, values: list[float], **where: Any) -> go.Figure:
    """A log axis ticked at the values drawn (a hyperparameter's schedule), each labelled in full."""
    ticks = sorted({v for v in values if v > 0})  # a log axis has no 0
    if len(ticks) > 6:  # too many to read: the decades between them
        ticks = [10.0**e for e in range(math.floor(math.log10(ticks[0])), math.ceil(math.log10(ticks[-1])) + 1)]
    return fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{v:.3g}" for v in ticks], **where)


def add_spread(fig: go.Figure, group: str, color: str, trials: pd.DataFrame) -> None:
    complete = completed(trials)
    pruned = trials[trials.state == TrialState.PRUNED]
    fig.add_trace(
        go.Box(
            y=complete.value,
            name=group,
            boxpoints="all",
            jitter=0.4,
            marker_color=color,
            text=[f"trial {n}" for n in complete.number],
            legendgroup=group,
        )
    )
    if len(pruned):
        fig.add_trace(
            go.Box(
                y=pruned.last_value,
                name=f"{group} (pruned, last report)",
                boxpoints="all",
                jitter=0.4,
                marker_color=color,
                opacity=0.45,
                fillcolor="rgba(0,0,0,0)",
                text=[f"trial {n}" for n in pruned.number],
            )
        )


ERROR_FLOOR = 1e-4  # error rates of 0 are drawn here: a log axis has no 0


def error_rate(accuracy: pd.Series) -> pd.Series:
    return (1.0 - accuracy.astype(float)).clip(lower=ERROR_FLOOR)


def shown_metric(study: optuna.Study) -> str:
    """What the frame's value column holds: the study's metric, or validation exact match where a
    study has several objectives (see trials_frame)."""
    return "val_exact_match" if len(study.directions) > 1 else StudyMeta.read(study).metric


def pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


def params_text(params: dict[str, Any]) -> str:
    def short(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k.split('.', 1)[-1]}={short(v)}" for k, v in params.items())
