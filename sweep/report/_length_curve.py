"""How far the best trial counts: in-range exact match against probe length, one line per seed (the
trial's own train.n_seeds seeds and its seed reruns), and the longest length each seed holds at 99%."""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go

from digitsum.lengths import HOLD_LEVEL, holds_up_to
from sweep.report.frame import Section, best_row, completed, layout, length_axis
from sweep.store.records import TrialRecord, merged_seeds, own_seeds, read_reruns


def length_curve_section(studies: list[optuna.Study], frame: pd.DataFrame) -> Section | None:
    """None where no study's best trial scored its probe's in-range rows at two lengths or more."""
    fig = go.Figure()
    rows = []
    for study in studies:
        best = best_row(completed(frame[frame.study == study.study_name]))
        if best is None:
            continue
        name = f"{study.study_name} trial {int(best.number)}" if len(studies) > 1 else f"trial {int(best.number)}"
        for seed, curve in _seed_curves(study, int(best.number), best.record).items():
            lengths = sorted(int(n) for n in curve)
            if len(lengths) < 2:  # one probe length is a point, not a curve (the lengths section shows it)
                continue
            values = [curve[str(n)] for n in lengths]
            label = f"{name}, {seed}"
            fig.add_trace(go.Scatter(x=lengths, y=values, mode="lines+markers", name=label))
            held = holds_up_to(lengths, values)
            cells = {f"{n} digits": f"{v:.2%}" for n, v in zip(lengths, values, strict=True)}
            holds = f"{held} digits" if held else f"not at {lengths[0]}"
            rows.append({"run": label, **cells, f"holds >= {HOLD_LEVEL:.0%} up to": holds})
    if not rows:
        return None
    fig.add_hline(y=HOLD_LEVEL, line_dash="dot", line_color="#888888", annotation_text=f"{HOLD_LEVEL:.0%}")
    table = pd.DataFrame(rows).fillna("-").to_html(index=False, escape=True, classes="summary", border=0)
    return Section(
        "How far the best trial counts",
        "In-range exact match of the best trial against input length, on the probe's rows whose sum occurs in "
        "training, one line per seed (the trial's own seeds and its seed reruns), each seed's model at the epoch "
        "its run keeps (train.keep_epoch); the table gives the longest length up to which each seed stays at or "
        f"above {HOLD_LEVEL:.0%}. `sweep evaluate CHECKPOINT --lengths 5,10,20,50,100` draws such a curve for any "
        "checkpoint.",
        [length_axis(layout(fig, "In-range exact match by input length", "input length (digits)", "exact match"))],
        table,
    )


def _seed_curves(study: optuna.Study, number: int, record: TrialRecord) -> dict[str, dict[str, float]]:
    """Each seed's in-range exact match per probe length; the trial's own where it trained one seed."""
    runs = merged_seeds(own_seeds(number, record), [r for r in read_reruns(study) if r.trial == number])
    per_seed = record.per_seed
    curves: dict[str, dict[str, Any]] = {}
    for run in runs:
        own = per_seed.get(str(run.seed), {}).get("probe_in_range_by_length")
        curve = own or run.probe_in_range_by_length
        if curve:
            curves[f"seed {run.seed}"] = curve
    if not curves and record.probe_in_range_by_length:
        curves["its one seed"] = record.probe_in_range_by_length
    return curves
