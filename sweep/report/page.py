"""Study (or studies) -> one self-contained Plotly HTML report that opens offline.

`optuna.visualization` draws what it already can (importances, parallel coordinates, slices);
our own figures cover what it lacks: comparisons by model type, learning curves coloured by model
type, accuracy by input length, and an error analysis of the best model.
"""

from __future__ import annotations

import hashlib
import html
import math
import random
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from digitsum.errors import UsageError
from digitsum.files import atomic_path
from digitsum.lengths import parse_lengths
from sweep.spec.objectives import ACCURACY_METRICS, Direction, pareto_front
from sweep.store.records import StudyMeta, TrialRecord, model_type
from sweep.store.storage import read_trials

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
    """Each study's trials, read once for the whole report (sweep.store.storage.read_trials)."""
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
                    "trained_lengths": _trained_lengths(base_train, t.params),
                    "record": record,
                    "start": t.datetime_start,
                    "complete": t.datetime_complete,
                }
            )
    return pd.DataFrame(rows)


def _trained_lengths(base_train: dict[str, Any], params: dict[str, Any]) -> tuple[int, ...]:
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


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
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


def _complete(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame.state == TrialState.COMPLETE]


# ---------------------------------------------------------------------------------------------
# Sections


def summary_section(frame: pd.DataFrame, metric: str) -> Section:
    rows, configs = [], []
    for group, trials in frame.groupby("group", sort=True):
        complete = _complete(trials)
        best = complete.loc[complete.value.idxmax()] if len(complete) else None
        rows.append(_summary_row(str(group), trials, complete, best, metric))
        if best is not None:
            configs.append(
                f"<li><b>{html.escape(str(group))}</b> (trial {int(best.number)}): "
                f"{html.escape(_params_text(best.params))}</li>"
            )
    table = pd.DataFrame(rows).to_html(index=False, escape=True, classes="summary", border=0)
    table += "<h3>Best configuration per model type</h3><ul class='configs'>" + "".join(configs) + "</ul>"
    return Section(
        "Summary",
        f"Per model type: trials by state; best and median {metric} of completed trials (unrolled greedy "
        "decoding, exact match); then the best trial's own probe accuracy (input lengths never seen in "
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
        f"best {metric}": _pct(best.value) if best is not None else "-",
        f"median {metric}": _pct(complete.value.median()) if len(complete) else "-",
        "best trial": int(best.number) if best is not None else "-",
        "its probe": _pct(probe) if probe is not None else "-",
        "its probe, in range": _pct(record.probe_in_range_exact_match)
        if record is not None and record.probe_in_range_exact_match is not None
        else "-",
        "its parameters": f"{record.n_parameters or 0:,}" if record is not None else "-",
        "its training s (one run)": f"{train:.1f}" if train is not None else "-",
        "its s to target (one run)": f"{to_target:.1f}" if to_target is not None else "not reached",
    }


def comparison_section(frame: pd.DataFrame, metric: str) -> Section:
    colors = group_colors(frame)
    by_number, by_time, spread = go.Figure(), go.Figure(), go.Figure()
    origin = frame.start.dropna().min()
    # Accuracies near 100% are drawn as error rates on a log axis, so 99.9% and 99.99% stay apart.
    as_error = metric in ACCURACY_METRICS
    y = f"error rate (1 - {metric})" if as_error else metric
    frame = (
        frame.assign(value=_error_rate(frame.value), last_value=_error_rate(frame.last_value)) if as_error else frame
    )
    for group, color in colors.items():
        trials = frame[(frame.group == group) & frame.complete.notna()].sort_values("complete")
        values = trials.value.where(trials.state == TrialState.COMPLETE).ffill()
        best = values.cummin() if as_error else values.cummax()
        line = dict(color=color, shape="hv")
        by_number.add_trace(go.Scatter(x=trials.number, y=best, mode="lines+markers", name=group, line=line))
        minutes = [(c - origin).total_seconds() / 60 for c in trials.complete]
        by_time.add_trace(go.Scatter(x=minutes, y=best, mode="lines+markers", name=group, line=line))
        _add_spread(spread, group, color, trials)
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
            _log_y(_layout(by_number, f"Best {metric} so far, by trial number", "trial number", y), as_error),
            _log_y(
                _layout(by_time, f"Best {metric} so far, by wall-clock time", "minutes since the first trial", y),
                as_error,
            ),
            _log_y(_layout(spread, f"Final {metric} per model type", "", y), as_error),
        ],
    )


def _log_y(fig: go.Figure, log: bool) -> go.Figure:
    return fig.update_yaxes(type="log") if log else fig


def _add_spread(fig: go.Figure, group: str, color: str, trials: pd.DataFrame) -> None:
    complete = _complete(trials)
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


def _error_rate(accuracy: pd.Series) -> pd.Series:
    return (1.0 - accuracy.astype(float)).clip(lower=ERROR_FLOOR)


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
    complete = _complete(frame)
    for group, color in group_colors(frame).items():
        trials = complete[complete.group == group]
        cost = [getattr(r, name) for r in trials.record]
        keep = [i for i, c in enumerate(cost) if c is not None]
        costs = [float(cost[i]) for i in keep]
        errors = list(_error_rate(trials.value).iloc[keep])
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
    fig.update_yaxes(type="log")
    if log_x:
        fig.update_xaxes(type="log")
    return _layout(fig, f"Validation error rate against {label}", label, "error rate (1 - exact match)")


def target_section(studies: list[optuna.Study], frame: pd.DataFrame, target: float) -> Section:
    """Per model type: the smallest and the fastest-to-train trial that reached the target, with
    their seed reruns where stored (the answer to "which cell is cheapest at this accuracy?")."""
    reruns = _reruns_by_trial(studies)
    complete = _complete(frame)
    rows = []
    for group in group_colors(frame):
        reached = complete[(complete.group == group) & complete.record.map(lambda r: r.epoch_to_target is not None)]
        if not len(reached):
            n = int((complete.group == group).sum())
            rows.append({"group": group, "which": f"none of its {n} completed trials reached {100 * target:g}%"})
            continue
        smallest = reached.loc[reached.record.map(lambda r: r.n_parameters).idxmin()]
        fastest = reached.loc[reached.record.map(lambda r: r.seconds_to_target).idxmin()]
        for which, row in (("smallest", smallest), ("fastest", fastest)):
            rows.append(_target_row(group, which, row, reruns.get((row.study, int(row.number)), []), target))
    table = pd.DataFrame(rows).fillna("").to_html(index=False, escape=True, classes="summary", border=0)
    return Section(
        "At the target",
        f"For each model type, the smallest trial and the fastest-to-train trial among those whose validation "
        f"exact match reached {100 * target:g}%: its parameters and training seconds to the target (one run), "
        "then, where seed reruns are stored, the mean +- standard deviation over seeds and how many seeds "
        "reached the target.",
        [],
        table,
        table_first=True,
    )


def _target_row(group: str, which: str, row: pd.Series, runs: list[Any], target: float) -> dict[str, Any]:
    from sweep.reruns.stats import Spread

    record: TrialRecord = row.record
    cells: dict[str, Any] = {
        "group": group,
        "which": which,
        "trial": str(int(row.number)),  # text: a row without a trial would make pandas print 11.0
        "parameters": f"{record.n_parameters:,}",
        "s to target (one run)": f"{record.seconds_to_target:.1f}",
    }
    if runs:
        reached = [r.seconds_to_target for r in runs if r.seconds_to_target is not None]
        cells["val exact match over seeds"] = Spread(tuple(r.val_exact_match for r in runs)).text()
        cells["seeds at target"] = f"{len(reached)} of {len(runs)}"
        cells["s to target over seeds"] = Spread(tuple(reached)).text(percent=False) if reached else "-"
    return cells


def _reruns_by_trial(studies: list[optuna.Study]) -> dict[tuple[str, int], list[Any]]:
    from sweep.store.records import read_reruns

    found: dict[tuple[str, int], list[Any]] = {}
    for study in studies:
        for record in read_reruns(study):
            found.setdefault((study.study_name, record.trial), []).append(record)
    return found


def seeds_section(studies: list[optuna.Study], frame: pd.DataFrame) -> Section:
    """Reruns over seeds: mean and spread per trial, and whether the two best types differ beyond noise."""
    from sweep.reruns.stats import verdict

    spreads = _seed_spreads(studies, frame)
    if not spreads:
        return Section(
            "Seed spread",
            "No seed reruns stored yet: `sweep rerun NAME --top 1 --seeds 0,1,2` "
            "re-trains the best trial of each model type once per seed, and this section then says "
            "whether the difference between model types exceeds the spread over seeds.",
            [],
        )
    best = {group: max(items, key=lambda item: item[1].mean) for group, items in spreads.items()}
    ranked = sorted(best.items(), key=lambda kv: kv[1][1].mean, reverse=True)
    # The best type against each other one: the first sentence answers "which is better, beyond noise?"
    name_a, (_, a, _) = ranked[0]
    sentence = "".join(" " + verdict(name_a, a, name_b, b) for name_b, (_, b, _) in ranked[1:])
    rows = [
        {"group": g, "trial": n, "seeds": ", ".join(map(str, sorted(s))), "validation exact match": sp.text()}
        for g, (n, sp, s) in ranked
    ]
    table = pd.DataFrame(rows).to_html(index=False, escape=True, classes="summary", border=0)
    colors = group_colors(frame)
    fig = go.Figure()
    for group, items in spreads.items():
        for number, spread, _ in items:
            fig.add_trace(
                go.Box(
                    y=list(_error_rate(pd.Series(spread.values))),
                    name=f"{group} trial {number}",
                    boxpoints="all",
                    marker_color=colors.get(group, "#7f7f7f"),
                )
            )
    fig.update_yaxes(type="log")
    intro = (
        "The best re-trained trial of each model type, trained once per seed (another initialization, "
        "split and batch order each): mean and standard deviation of validation exact match." + sentence
    )
    return Section(
        "Seed spread",
        intro,
        [_layout(fig, "Validation error rate over seeds", "", "error rate")],
        table,
        table_first=True,
    )


def _seed_spreads(studies: list[optuna.Study], frame: pd.DataFrame) -> dict[str, list[tuple[int, Any, list[int]]]]:
    """Per group: (trial, its validation exact match over seeds as a Spread, the seeds) for every rerun trial."""
    from sweep.reruns.stats import Spread

    groups = {(r.study, r.number): r.group for r in frame.itertuples()}
    spreads: dict[str, list[tuple[int, Any, list[int]]]] = {}
    for (study_name, number), runs in _reruns_by_trial(studies).items():
        group = groups.get((study_name, number), "?")
        spread = Spread(tuple(r.val_exact_match for r in runs))
        spreads.setdefault(group, []).append((number, spread, [r.seed for r in runs]))
    return spreads


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
        [_layout(fig, f"{metric} per epoch", "epoch", metric)],
    )


def hyperparameter_section(
    studies: list[optuna.Study], metric: str, loaded: dict[str, list[FrozenTrial]] | None = None
) -> Section:
    figures: list[go.Figure] = []
    notes: list[str] = []
    for study in studies:
        prefix = f"{study.study_name}: " if len(studies) > 1 else ""
        with warnings.catch_warnings():  # PED-ANOVA warns that it ranks low values: _first_objective negates
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes the importances")
            trials = (loaded or {}).get(study.study_name) or study.get_trials(deepcopy=False)
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            figures += _study_hyperparameter_figures(study, complete, prefix, metric, notes)
    intro = (
        "Which hyperparameters mattered (Optuna's default importance evaluator, PED-ANOVA in Optuna 5), every "
        "completed trial across its parameters, and the value against the most important ones."
    )
    if notes:
        intro += " " + " ".join(notes)
    return Section("Hyperparameters", intro, figures)


MAX_PLOTTED = 2_000  # completed trials Optuna's importance and per-trial figures are given, at most


def _plotted(study: optuna.Study, complete: list[FrozenTrial], notes: list[str]) -> optuna.Study:
    """The study itself, or above MAX_PLOTTED completed trials an in-memory one with the best half of
    MAX_PLOTTED and a seeded sample of the rest: Optuna's figures draw one line per trial and copy
    the whole study (30 s at 10,000 trials here), and the ranking of parameters needs no more."""
    if len(complete) <= MAX_PLOTTED:
        return study
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    ranked = sorted(complete, key=lambda t: (sign * t.values[0], t.number))
    half = MAX_PLOTTED // 2
    rest = random.Random(0).sample(ranked[half:], MAX_PLOTTED - half)
    sample = optuna.create_study(directions=study.directions)
    sample.add_trials(sorted(ranked[:half] + rest, key=lambda t: t.number))
    notes.append(
        f"{study.study_name}: of its {len(complete):,} completed trials, these figures show {MAX_PLOTTED:,}: "
        f"the best {half:,} and a seeded sample of {MAX_PLOTTED - half:,} others."
    )
    return sample


def _study_hyperparameter_figures(
    study: optuna.Study, complete: list[FrozenTrial], prefix: str, metric: str, notes: list[str]
) -> list[go.Figure]:
    if len(complete) < 2 or not any(t.params for t in complete):
        notes.append(f"{study.study_name}: fewer than two completed trials, nothing to compare yet.")
        return []
    study = _plotted(study, complete, notes)
    if len(complete) < FEW_TRIALS:
        notes.append(
            f"{study.study_name}: importances rest on {len(complete)} completed trials only; read them as a hint."
        )
    target, ranked = _first_objective(study)
    figures = []
    with warnings.catch_warnings(record=True) as said:  # PED-ANOVA's caveats go in the report, not on stderr
        warnings.simplefilter("always", UserWarning)
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes the importances")
        try:
            importances = optuna.importance.get_param_importances(study, target=ranked)
        except (RuntimeError, ValueError) as error:  # e.g. every trial has the same parameters
            notes.append(f"{study.study_name}: importances unavailable ({error}).")
            importances = {}
        if importances:
            fig = optuna.visualization.plot_param_importances(study, target=ranked, target_name=metric)
            title = f"{prefix}hyperparameter importances (Optuna default evaluator)"
            figures.append(fig.update_layout(title=title, height=420))
    notes += sorted({f"{study.study_name}: {w.message}" for w in said if issubclass(w.category, UserWarning)})
    # Conditional parameters leave gaps; the parallel plot takes the unconditional ones.
    always = [p for p in complete[0].params if all(p in t.params for t in complete)]
    if len(always) >= 2:
        fig = optuna.visualization.plot_parallel_coordinate(study, params=always, target=target, target_name=metric)
        figures.append(fig.update_layout(title=f"{prefix}parallel coordinates (completed trials)", height=460))
    top = list(importances)[:3] or always[:3]
    if top:
        fig = optuna.visualization.plot_slice(study, params=top, target=target, target_name=metric)
        figures.append(fig.update_layout(title=f"{prefix}{metric} against the most important parameters", height=420))
    return figures


Target = Callable[[FrozenTrial], float] | None


def _first_objective(study: optuna.Study) -> tuple[Target, Target]:
    """Optuna's figures take one target: with several objectives, the first. Returns (what to plot,
    what to rank importances by: PED-ANOVA ranks low values, so a maximized objective is negated)."""
    if len(study.directions) == 1:
        return None, None
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return (lambda t: t.values[0]), (lambda t: sign * t.values[0])


def lengths_section(frame: pd.DataFrame) -> Section:
    colors = group_colors(frame)
    fig = go.Figure()
    complete = _complete(frame)
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
        [_layout(fig, "Exact match by input length", "input length (digits)", "exact match").update_xaxes(dtick=1)],
    )


def _length_curves(record: TrialRecord) -> list[tuple[str, dict[int, float], str]]:
    """(what is scored, exact match by length, line dash): all rows, and in-range rows where recorded."""
    val = {int(k): v for k, v in record.val_by_length.items()}
    curves = [("all rows", {**val, **{int(k): v for k, v in record.probe_by_length.items()}}, "solid")]
    if record.probe_in_range_by_length:
        in_range = {int(k): v for k, v in record.probe_in_range_by_length.items()}
        curves.append(("in range", {**val, **in_range}, "dot"))
    return [curve for curve in curves if curve[1]]


ERROR_TITLE = "Error analysis of the best model"


def error_section(studies: list[optuna.Study], frame: pd.DataFrame, stores: dict[str, Any]) -> Section:
    """The best trial's checkpoint (fetched from its study's artifact store in `stores`) decoded."""
    from digitsum.checkpoint import CheckpointError, load_checkpoint
    from sweep.store.artifacts import ArtifactError, fetched

    complete = _complete(frame)
    if not len(complete):
        return Section(ERROR_TITLE, "No completed trial yet.", [])
    best = complete.loc[complete.value.idxmax()]
    try:
        with fetched(stores.get(best.study), best.record, int(best.number)) as path:
            model, payload = load_checkpoint(path)
    except (ArtifactError, CheckpointError) as error:
        return Section(
            ERROR_TITLE, f"Trial {best.number} of {best.study}: its checkpoint is not available here ({error}).", []
        )
    study = next(s for s in studies if s.study_name == best.study)
    try:
        table = _decoded_rows(model, payload["config"], StudyMeta.read(study))
    except UsageError as error:  # a training CSV not on this machine, a config this version refuses
        return Section(
            ERROR_TITLE, f"Trial {best.number} of {best.study}: its rows cannot be rebuilt here ({error}).", []
        )
    wrong = table[~table.correct]
    counts = "; ".join(
        f"{int((~part.correct).sum()):,} wrong of {len(part):,} {name} rows"
        for name, part in table.groupby("part", sort=False)
    )
    intro = (
        f"The best trial, {best.number} of {best.study} ({best.model_type}), decoded on its validation rows"
        + (" and on the probe" if table.part.nunique() > 1 else "")
        + f": {counts}. "
        "Sums that never occur in training (above 36 for lengths up to 4) cannot be answered by a model that "
        "never wrote them."
    )
    return Section(ERROR_TITLE, intro, _error_figures(table), _wrong_answers_html(wrong))


def _decoded_rows(model: Any, config_values: dict[str, Any], meta: StudyMeta) -> pd.DataFrame:
    """Every validation (and probe) row of the trial with its decoded answer and whether it is right."""
    from digitsum import config as cfg
    from digitsum.data import encode
    from digitsum.datasets import data_split, probe_rows
    from digitsum.decode import answers_to_numbers, exact_matches, greedy_decode

    _, val_rows = data_split(cfg.from_dict(config_values).train)
    parts = [("validation", val_rows)]
    probe = probe_rows(meta.probe)
    if probe is not None:
        parts.append(("probe", probe))
    records = []
    for name, rows in parts:
        data = encode(rows)
        decoded = greedy_decode(model, data)
        records.append(
            pd.DataFrame(
                {
                    "part": name,
                    "x": rows.x,
                    "y": rows.y,
                    "length": rows.lengths,
                    "predicted": answers_to_numbers(decoded),
                    "correct": exact_matches(decoded, data.answers).numpy(),
                }
            )
        )
    return pd.concat(records, ignore_index=True)


def _error_figures(table: pd.DataFrame) -> list[go.Figure]:
    by_sum, by_length = go.Figure(), go.Figure()
    for name, part in table.groupby("part", sort=False):
        per_sum = part.groupby("y").correct.agg(["mean", "size"]).reset_index()
        by_sum.add_trace(
            go.Bar(
                x=per_sum.y,
                y=per_sum["mean"],
                name=str(name),
                text=per_sum["size"],
                hovertemplate="sum %{x}: %{y:.3f} of %{text} rows",
            )
        )
        per_length = part.groupby("length").correct.mean().reset_index()
        by_length.add_trace(go.Bar(x=per_length.length, y=per_length.correct, name=str(name)))
    return [
        _layout(by_sum, "Exact match by true sum", "digit sum", "exact match").update_layout(barmode="group"),
        _layout(by_length, "Exact match by input length", "input length", "exact match")
        .update_layout(barmode="group")
        .update_xaxes(dtick=1),
    ]


def _wrong_answers_html(wrong: pd.DataFrame) -> str:
    common = Counter(zip(wrong.part, wrong.y, wrong.predicted, strict=True)).most_common(12)
    table = pd.DataFrame(
        [
            {
                "rows": n,
                "part": p,
                "true sum": y,
                "answered": ("no answer" if a < 0 else a),
                "example input": wrong[(wrong.part == p) & (wrong.y == y) & (wrong.predicted == a)].x.iloc[0],
            }
            for (p, y, a), n in common
        ]
    )
    html_table = (
        table.to_html(index=False, border=0, classes="summary") if len(table) else "<p>None: every row is right.</p>"
    )
    return "<h3>Most frequent wrong answers</h3>" + html_table


# ---------------------------------------------------------------------------------------------
# Assembly

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; padding-bottom: 0.3rem; }
p.intro { color: #444; max-width: 60rem; } .meta { color: #666; font-size: 0.9rem; }
table.summary { border-collapse: collapse; font-size: 0.85rem; margin: 1rem 0; }
table.summary th, table.summary td { padding: 0.35rem 0.6rem; border-bottom: 1px solid #e5e5e5; text-align: left;
                                     vertical-align: top; }
table.summary th { background: #f6f6f6; }
ul.configs { font-size: 0.85rem; }
"""


def build_report(
    studies: list[optuna.Study], storage_text: str, stores: dict[str, Any] | None = None
) -> tuple[str, int]:
    """The whole HTML page, and its number of figures; `stores`: each study's artifact store, by name."""
    metric = _shown_metric(studies[0])
    loaded = read_all(studies)
    frame = trials_frame(studies, loaded)
    if frame.empty:
        raise UsageError("the studies have no trials yet; run them with `sweep run` first")
    sections = [
        summary_section(frame, metric),
        seeds_section(studies, frame),
        target_section(studies, frame, StudyMeta.read(studies[0]).target),
        comparison_section(frame, metric),
        cost_section(frame, StudyMeta.read(studies[0]).target),
        curves_section(frame, metric),
        hyperparameter_section(studies, metric, loaded),
        lengths_section(frame),
        error_section(studies, frame, stores or {}),
    ]
    page = _page_head(studies, len(frame), storage_text)
    n_figures = 0
    for section in sections:
        page.append(_section_html(section, include_plotlyjs=n_figures == 0))
        n_figures += len(section.figures)
    page.append("</body></html>")
    return "\n".join(page), n_figures


def _page_head(studies: list[optuna.Study], n_trials: int, storage_text: str) -> list[str]:
    names = ", ".join(s.study_name for s in studies)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>digitsum-sweep report: {html.escape(names)}</title><style>{CSS}</style></head><body>",
        f"<h1>Sweep report: {html.escape(names)}</h1>",
        f"<p class='meta'>{n_trials} trials from {html.escape(storage_text)}; "
        f"written {time.strftime('%Y-%m-%d %H:%M')}. "
        "Accuracy is exact match of the whole answer under greedy, token-by-token decoding.</p>",
    ]
    for study in studies:
        meta = StudyMeta.read(study)
        parts.append(
            f"<p class='meta'><b>{html.escape(study.study_name)}</b>: spec {html.escape(meta.spec_path)}. "
            f"{html.escape(meta.description)}</p>"
        )
    return parts


def _section_html(section: Section, include_plotlyjs: bool) -> str:
    """The section's heading, intro, table and figures; plotly.js goes into the page once, with the
    first figure, so the file opens offline."""
    parts = [f"<h2>{html.escape(section.title)}</h2><p class='intro'>{html.escape(section.intro)}</p>"]
    figures = []
    for fig in section.figures:
        figures.append(fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs, config={"displaylogo": False}))
        include_plotlyjs = False
    parts += [section.table_html, *figures] if section.table_first else [*figures, section.table_html]
    return "\n".join(p for p in parts if p)


def write_report(
    studies: list[optuna.Study], out: Path, storage_text: str, stores: dict[str, Any] | None = None
) -> int:
    page, n_figures = build_report(studies, storage_text, stores)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return n_figures


def figures_for_dashboard(studies: list[optuna.Study]) -> list[go.Figure]:
    """Our comparison figures, to attach to a study for optuna-dashboard."""
    metric = _shown_metric(studies[0])
    frame = trials_frame(studies)
    if frame.empty:
        return []
    return (
        comparison_section(frame, metric).figures
        + curves_section(frame, metric).figures
        + lengths_section(frame).figures
    )


def _shown_metric(study: optuna.Study) -> str:
    """What the frame's value column holds: the study's metric, or validation exact match where a
    study has several objectives (see trials_frame)."""
    return "val_exact_match" if len(study.directions) > 1 else StudyMeta.read(study).metric


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


def _params_text(params: dict[str, Any]) -> str:
    def short(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k.split('.', 1)[-1]}={short(v)}" for k, v in params.items())


def report_file_name(names: list[str]) -> str:
    """reports/A-vs-B.html's name: each study's name with anything but letters, digits, '.', '_' and '-'
    as '_' (studies named before names were checked), cut to what a file system takes."""
    stem = "-vs-".join(re.sub(r"[^A-Za-z0-9._-]", "_", name) for name in names).lstrip(".") or "_"
    if len(stem) > 200:
        stem = f"{stem[:180]}-{hashlib.sha256(stem.encode()).hexdigest()[:8]}"
    return f"{stem}.html"
