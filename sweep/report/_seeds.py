"""Seed noise: the time to the target per model type, and the spread of seed reruns with the
confidence interval of each difference."""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go

from sweep.report.frame import Section, completed, error_axis, error_rate, group_colors, layout
from sweep.store.records import TrialRecord


def target_section(studies: list[optuna.Study], frame: pd.DataFrame, target: float) -> Section:
    """Per model type: the smallest and the fastest-to-train trial that reached the target, with
    their seed reruns where stored (the answer to "which cell is cheapest at this accuracy?")."""
    reruns = _reruns_by_trial(studies, frame)
    complete = completed(frame)
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


def _reruns_by_trial(studies: list[optuna.Study], frame: pd.DataFrame) -> dict[tuple[str, int], list[Any]]:
    """Every trial's seeds: those it trained itself (train.n_seeds) and its seed reruns."""
    from sweep.store.records import merged_seeds, own_seeds, read_reruns

    reruns: dict[tuple[str, int], list[Any]] = {}
    for study in studies:
        for record in read_reruns(study):
            reruns.setdefault((study.study_name, record.trial), []).append(record)
    found = {}
    for row in frame.itertuples():
        key = (str(row.study), int(row.number))
        runs = merged_seeds(own_seeds(key[1], row.record), reruns.get(key, []))
        if runs:
            found[key] = runs
    return found


def seeds_section(studies: list[optuna.Study], frame: pd.DataFrame) -> Section:
    """Reruns over seeds: mean and spread per trial, and whether the two best types differ beyond noise."""
    from sweep.reruns.stats import verdict

    spreads = _seed_spreads(studies, frame)
    if not spreads:
        return Section(
            "Seed spread",
            "No seed reruns stored yet: `sweep rerun NAME --top 1 --seeds 0,1,2` "
            "re-trains the best trial of each model type once per seed (or give the study "
            "fixed: {train.n_seeds: 3}, and every trial trains 3 seeds at once), and this section then "
            "says whether the difference between model types exceeds the spread over seeds.",
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
                    y=list(error_rate(pd.Series(spread.values))),
                    name=f"{group} trial {number}",
                    boxpoints="all",
                    marker_color=colors.get(group, "#7f7f7f"),
                )
            )
    error_axis(fig)
    intro = (
        "The best trial over seeds of each model type, trained once per seed (another initialization, "
        "split and batch order each; by the trial itself with train.n_seeds, or by sweep rerun): mean and "
        "standard deviation of validation exact match; the figure shows every such trial." + sentence
    )
    return Section(
        "Seed spread",
        intro,
        [layout(fig, "Validation error rate over seeds", "", "error rate")],
        table,
        table_first=True,
    )


def _seed_spreads(studies: list[optuna.Study], frame: pd.DataFrame) -> dict[str, list[tuple[int, Any, list[int]]]]:
    """Per group: (trial, its validation exact match over seeds as a Spread, the seeds) for every rerun trial."""
    from sweep.reruns.stats import Spread

    groups = {(r.study, r.number): r.group for r in frame.itertuples()}
    spreads: dict[str, list[tuple[int, Any, list[int]]]] = {}
    for (study_name, number), runs in _reruns_by_trial(studies, frame).items():
        group = groups.get((study_name, number), "?")
        spread = Spread(tuple(r.val_exact_match for r in runs))
        spreads.setdefault(group, []).append((number, spread, [r.seed for r in runs]))
    return spreads
