"""Study (or studies) -> one self-contained Plotly HTML report that opens offline.

`optuna.visualization` draws what it already can (importances, parallel coordinates, slices);
our own figures cover what it lacks: comparisons by model type, learning curves coloured by model
type, accuracy by input length, and an error analysis of the best model.
"""

from __future__ import annotations

import hashlib
import html
import re
import time
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go

from digitsum.errors import UsageError
from digitsum.files import atomic_path
from sweep.report._comparison import comparison_section
from sweep.report._cost import cost_section
from sweep.report._curves import curves_section
from sweep.report._errors import error_section
from sweep.report._hyperparameters import hyperparameter_section
from sweep.report._length_curve import length_curve_section
from sweep.report._lengths import lengths_section
from sweep.report._population import population_section
from sweep.report._seeds import seeds_section, target_section
from sweep.report._summary import summary_section
from sweep.report.frame import Section, read_all, shown_metric, trials_frame
from sweep.store.artifacts import store_for
from sweep.store.records import StudyMeta
from sweep.store.storage import load_study, open_existing, shown_url

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
    sections, n_trials = report_sections(studies, stores)
    page = _page_head(studies, n_trials, storage_text)
    n_figures = 0
    for section in sections:
        page.append(_section_html(section, include_plotlyjs=n_figures == 0))
        n_figures += len(section.figures)
    page.append("</body></html>")
    return "\n".join(page), n_figures


def report_sections(studies: list[optuna.Study], stores: dict[str, Any] | None = None) -> tuple[list[Section], int]:
    """The report's sections in page order (those that apply to these studies), and its number of trials."""
    metric = shown_metric(studies[0])
    loaded = read_all(studies)
    frame = trials_frame(studies, loaded)
    if frame.empty:
        raise UsageError("the studies have no trials yet; run them with `sweep run` first")
    target = StudyMeta.read(studies[0]).target
    listed = [
        summary_section(frame, metric),
        seeds_section(studies, frame),
        target_section(studies, frame, target),
        comparison_section(frame, metric),
        cost_section(frame, target),
        curves_section(frame, metric),
        population_section(frame, metric),
        hyperparameter_section(studies, metric, loaded),
        lengths_section(frame),
        length_curve_section(studies, frame),
        error_section(studies, frame, stores or {}),
    ]
    return [section for section in listed if section is not None], len(frame)


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
    metric = shown_metric(studies[0])
    frame = trials_frame(studies)
    if frame.empty:
        return []
    return (
        comparison_section(frame, metric).figures
        + curves_section(frame, metric).figures
        + lengths_section(frame).figures
    )


def report_file_name(names: list[str]) -> str:
    """reports/A-vs-B.html's name: each study's name with anything but letters, digits, '.', '_' and '-'
    as '_' (studies named before names were checked), cut to what a file system takes."""
    stem = "-vs-".join(re.sub(r"[^A-Za-z0-9._-]", "_", name) for name in names).lstrip(".") or "_"
    if len(stem) > 200:
        stem = f"{stem[:180]}-{hashlib.sha256(stem.encode()).hexdigest()[:8]}"
    return f"{stem}.html"


def report_studies(
    names: list[str], out: Path | None, storage: str | None, attach: bool, artifacts: str | None
) -> tuple[Path, int]:
    """`sweep report`: the stored studies' report (reports/<names>.html by default), its path and number of
    figures; with ``attach``, each study also gets the comparison figures for optuna-dashboard."""
    loaded, stores = _open(names, storage, artifacts)
    out = out or Path("reports") / report_file_name(names)
    n_figures = write_report(loaded, out, shown_url(storage), stores)
    if attach:
        import optuna_dashboard

        for study in loaded:
            for index, figure in enumerate(figures_for_dashboard([study])):
                optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=f"sweep-{index}")
    return out, n_figures


def stored_sections(names: list[str], storage: str | None, artifacts: str | None) -> list[Section]:
    """The stored studies' report as sections, for a notebook to show one by one."""
    loaded, stores = _open(names, storage, artifacts)
    return report_sections(loaded, stores)[0]


def _open(names: list[str], storage: str | None, artifacts: str | None) -> tuple[list[optuna.Study], dict[str, Any]]:
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"study {twice[0]!r} is named twice; name each study once")
    store = open_existing(storage)
    loaded = [load_study(n, store) for n in names]
    return loaded, {s.study_name: store_for(artifacts, s, storage) for s in loaded}
