"""The error analysis of the best model: its wrong answers on the validation rows, by length and digit."""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go

from digitsum.errors import UsageError
from sweep.report.frame import Section, best_row, layout
from sweep.store.records import StudyMeta

ERROR_TITLE = "Error analysis of the best model"


def error_section(studies: list[optuna.Study], frame: pd.DataFrame, stores: dict[str, Any]) -> Section:
    """The best trial's checkpoint (fetched from its study's artifact store in `stores`) decoded."""
    from digitsum.checkpoint import CheckpointError, load_checkpoint
    from sweep.store.artifacts import ArtifactError, fetched

    best = best_row(frame)
    if best is None:
        return Section(ERROR_TITLE, "No completed trial (that meets the study's constraints) yet.", [])
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

    train = cfg.from_dict(config_values).train
    _, val_rows = data_split(train)
    parts = [("validation", val_rows)]
    probe = probe_rows(meta.probe, train)
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
        layout(by_sum, "Exact match by true sum", "digit sum", "exact match").update_layout(barmode="group"),
        layout(by_length, "Exact match by input length", "input length", "exact match")
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
