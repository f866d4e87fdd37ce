"""`sweep report`: one self-contained Plotly HTML file, checked in a real (headless) Chromium.

The module makes one small real study with `sweep run` (a subprocess, cwd=tmp, 6 trials of
rnn/lstm/gru on lengths 1-2) and writes its report once; the browser tests open that file from
disk and assert that every figure is drawn, that nothing is logged as an error and that no request
goes anywhere but file:// or data: URLs. `sweep report` itself runs in this process (typer's
CliRunner: the same command and exit codes, without re-importing torch for every call).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from browser import (
    ALL_PLOTS_DRAWN,
    MODEL_TYPES,
    N_TRIALS,
    TinyStudy,
    chromium,
    invoke_sweep,
    make_tiny_study,
    one_error_line,
    open_page,
    printed_figures,
    rendered_plots,
    without_scripts,
)
from optuna.trial import TrialState

from sweep.spec.objectives import best_trial

pytestmark = pytest.mark.processes  # `sweep` processes and Chromium

STUDY = "cells"
MIN_FIGURES = 10  # comparisons 3, cost 2, curves 1, hyperparameters 3, lengths 1 (+2 for the error analysis)
ERROR_SECTION = "Error analysis of the best model"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> TinyStudy:
    made = make_tiny_study(tmp_path_factory.mktemp("report"), STUDY)
    trials = optuna.load_study(study_name=STUDY, storage=made.url).get_trials(deepcopy=False)
    assert len(trials) == N_TRIALS, made.run_output
    assert {t.user_attrs.get("model_type") for t in trials} == set(MODEL_TYPES)
    return made


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@dataclass
class Report:
    out: Path
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    @property
    def html(self) -> str:
        return self.out.read_text(encoding="utf-8")


def write_report(study: TinyStudy, *names: str, out: str) -> Report:
    path = study.directory / out
    result = invoke_sweep("report", *names, "--out", path, "--storage", study.url)
    return Report(path, result.exit_code, result.stdout, result.stderr, result.exception)


def assert_written(report: Report) -> int:
    """Exit 0 and a file; returns the figure count the CLI printed."""
    assert report.exit_code == 0, (report.exit_code, report.stdout, report.stderr, report.exception)
    assert report.out.is_file()
    return printed_figures(report.stdout)


@pytest.fixture(scope="module")
def report(study) -> Report:
    return write_report(study, STUDY, out="r.html")


@dataclass
class Rendered:
    """What Chromium made of a report file."""

    log: Any
    plots: list[dict]
    n_graph_divs: int
    summary_header: list[str]
    summary_rows: list[list[str]]
    headings: list[str]
    intros: dict[str, str]
    h1: str
    plotly_loaded: bool


def render(browser, path: Path) -> Rendered:
    with open_page(browser, path.resolve().as_uri()) as (page, log):
        page.wait_for_function(ALL_PLOTS_DRAWN, timeout=60_000)
        summary = page.eval_on_selector(
            "table.summary",
            "t => [...t.rows].map(r => [...r.cells].map(c => c.innerText.trim()))",
        )
        intros = page.eval_on_selector_all(
            "h2",
            "hs => Object.fromEntries(hs.map(h => "
            "[h.innerText.trim(), (h.nextElementSibling && h.nextElementSibling.innerText) || '']))",
        )
        return Rendered(
            log=log,
            plots=rendered_plots(page),
            n_graph_divs=page.locator(".plotly-graph-div").count(),
            summary_header=summary[0],
            summary_rows=summary[1:],
            headings=list(intros),
            intros=intros,
            h1=page.locator("h1").inner_text(),
            plotly_loaded=page.evaluate(
                "typeof window.Plotly === 'object' && typeof window.Plotly.newPlot === 'function'"
            ),
        )


@pytest.fixture(scope="module")
def rendered(report, browser) -> Rendered:
    assert_written(report)
    return render(browser, report.out)


def assert_clean(rendered: Rendered) -> None:
    """No console error or uncaught exception, and no request but file:// and data: URLs."""
    assert rendered.log.errors() == []
    assert rendered.log.requests, "the page made no request at all"
    leaving = [u for u in rendered.log.requests if not u.startswith(("file://", "data:"))]
    assert leaving == [], f"requests that leave the file: {leaving}"


def assert_all_figures_drawn(rendered: Rendered, n_printed: int) -> None:
    assert len(rendered.plots) == n_printed, [p["title"] for p in rendered.plots]
    assert rendered.n_graph_divs == n_printed
    undrawn = [p["title"] for p in rendered.plots if not p["svg"]]
    assert undrawn == [], f"figures without an svg.main-svg: {undrawn}"
    assert n_printed >= MIN_FIGURES


# ---------------------------------------------------------------------------------------------
# One study


def test_report_exits_0_and_prints_its_figure_count(report):
    n_figures = assert_written(report)
    assert n_figures >= MIN_FIGURES
    assert str(report.out) in report.stdout
    assert report.stderr.strip() == ""


def test_report_embeds_plotly_js_and_loads_nothing_from_the_network(report):
    assert_written(report)
    page = report.html
    # plotly.js is inline, once: the banner of its bundle is inside a <script> body.
    assert len(re.findall(r"\* plotly\.js v\d+\.\d+\.\d+", page)) == 1
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, flags=re.S | re.I)
    assert scripts, "no <script> at all"
    assert [attrs for attrs, _ in scripts if "src" in attrs.lower()] == [], "a <script src=...>"
    assert not re.search(r"<script[^>]+src\s*=\s*['\"]?https?:", page, flags=re.I)
    markup = without_scripts(page)
    assert "cdn" not in markup.lower()
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", markup, flags=re.I), "an external src/href"
    # The figures' own scripts (all but the plotly.js bundle) name no CDN either.
    figure_scripts = [body for _, body in scripts if "plotly.js v" not in body]
    assert figure_scripts and not any("cdn" in body.lower() for body in figure_scripts)


def test_report_renders_every_figure_offline_in_chromium(report, rendered):
    assert rendered.plotly_loaded
    assert_clean(rendered)
    assert_all_figures_drawn(rendered, printed_figures(report.stdout))


def test_report_has_every_section(rendered):
    assert rendered.headings == [
        "Summary",
        "Seed spread",
        "At the target",
        "Model types compared",
        "Cost",
        "Learning curves",
        "Hyperparameters",
        "Length generalization",
        ERROR_SECTION,
    ]
    assert STUDY in rendered.h1


def test_log_axes_label_error_rates_in_percent_never_bare_minor_ticks(rendered):
    # Plotly's own log ticks label 0.002 and 0.005 as a bare "2" and "5", read as error rates of 2 and 5
    ticks = [tick for plot in rendered.plots for tick in plot["log_ticks"]]
    assert ticks, "no log-scale axis drawn"
    assert all(tick.endswith("%") for tick in ticks), ticks


def test_summary_table_lists_each_model_type(rendered):
    assert rendered.summary_header[0] == "group"
    assert sorted(row[0] for row in rendered.summary_rows) == sorted(MODEL_TYPES)
    trials = {row[0]: int(row[1]) for row in rendered.summary_rows}
    assert sum(trials.values()) == N_TRIALS
    assert set(trials.values()) == {N_TRIALS // len(MODEL_TYPES)}  # `balance`: equal budgets


def test_figures_are_coloured_by_model_type(rendered):
    """The learning curves carry one legend group per model type."""
    curves = next(p for p in rendered.plots if p["title"].endswith("per epoch"))
    assert set(curves["traces"]) == set(MODEL_TYPES)


def test_summary_shows_size_speed_and_probe_of_the_best_trials(study, rendered):
    header = rendered.summary_header
    best_trials = {}
    for trial in optuna.load_study(study_name=STUDY, storage=study.url).get_trials(states=(TrialState.COMPLETE,)):
        kept = best_trials.get(trial.user_attrs["model_type"])
        if kept is None or trial.value > kept.value:
            best_trials[trial.user_attrs["model_type"]] = trial
    assert best_trials
    for row in rendered.summary_rows:
        cells = dict(zip(header, row, strict=True))
        best = best_trials.get(cells["group"])
        if best is None:  # every trial of this model type was pruned
            continue
        assert cells["its parameters"] == f"{best.user_attrs['n_parameters']:,}"
        # The best trial's own probe, never the best probe of another trial.
        assert cells["its probe"] == f"{100 * best.user_attrs['probe_exact_match']:.2f}%"
        assert cells["its training s (one run)"] == f"{best.user_attrs['train_seconds']:.1f}"


def test_length_figure_shows_all_rows_and_in_range_rows(study, rendered):
    """Each plotted trial has an all-rows curve and an in-range curve (the probe's sums 0-18 occur in
    training on lengths 1-2)."""
    figure = next(p for p in rendered.plots if p["title"] == "Exact match by input length")
    names = [n for n in figure["traces"] if n]
    plotted = list(dict.fromkeys(n.rsplit(", ", 1)[0] for n in names))  # in the order drawn
    assert plotted and names == [f"{p}, {what}" for p in plotted for what in ("all rows", "in range")]
    assert {p.split(" #")[0] for p in plotted} <= set(MODEL_TYPES)


def test_length_figure_shades_every_training_length(study):
    """Lengths 1-2: the one-digit strings have no validation row (each sum is one string, kept for
    training), and the shading still starts at length 1."""
    from sweep.report._lengths import lengths_section
    from sweep.report.frame import trials_frame

    figure = lengths_section(trials_frame([optuna.load_study(study_name=STUDY, storage=study.url)])).figures[0]
    shade = figure.layout.shapes[0]
    assert (shade.x0, shade.x1) == (0.5, 2.5)


def test_error_analysis_decodes_the_best_checkpoint(report, rendered):
    intro = rendered.intros[ERROR_SECTION]
    assert "decoded on its validation rows and on the probe" in intro, intro
    titles = [p["title"] for p in rendered.plots]
    assert "Exact match by true sum" in titles
    assert printed_figures(report.stdout) == MIN_FIGURES + 2


# ---------------------------------------------------------------------------------------------
# Two studies side by side


def test_two_studies_side_by_side(study, browser):
    other = f"{STUDY}-again"
    optuna.copy_study(from_study_name=STUDY, from_storage=study.url, to_storage=study.url, to_study_name=other)
    report = write_report(study, STUDY, other, out="both.html")
    n_figures = assert_written(report)
    rendered = render(browser, report.out)
    assert_clean(rendered)
    assert_all_figures_drawn(rendered, n_figures)
    assert STUDY in rendered.h1 and other in rendered.h1
    # Every group names its study: "cells: rnn", ..., "cells-again: gru".
    groups = sorted(row[0] for row in rendered.summary_rows)
    assert groups == sorted(f"{name}: {model}" for name in (STUDY, other) for model in MODEL_TYPES)
    curves = next(p for p in rendered.plots if p["title"].endswith("per epoch"))
    assert set(curves["traces"]) == set(groups)
    # The hyperparameter figures come once per study, each titled with its study's name.
    titles = [p["title"] for p in rendered.plots]
    assert any(t.startswith(f"{STUDY}: ") for t in titles) and any(t.startswith(f"{other}: ") for t in titles)


# ---------------------------------------------------------------------------------------------
# Studies the report cannot or can only partly show


def test_report_on_unknown_study_exits_2_with_one_line(study):
    report = write_report(study, "no-such-study", out="unknown.html")
    assert report.exit_code == 2, (report.stdout, report.stderr, report.exception)
    line = one_error_line(report.stderr, report.stdout)
    assert "no-such-study" in line and STUDY in line  # names the study, and lists the known ones
    assert not report.out.exists()


def test_report_on_study_without_trials_exits_2_with_one_line(study):
    optuna.create_study(study_name="empty", storage=study.url, direction="maximize")
    report = write_report(study, "empty", out="empty.html")
    assert report.exit_code == 2, (report.exit_code, report.stderr, report.exception)
    line = one_error_line(report.stderr, report.stdout)
    assert "no trials" in line
    assert not report.out.exists()


@pytest.fixture(scope="module")
def report_without_checkpoint(study) -> Report:
    """The report after the best trial's checkpoint was deleted (moved away, then put back)."""
    best = best_trial(optuna.load_study(study_name=STUDY, storage=study.url))
    checkpoint = Path(study.checkpoints, best.user_attrs["artifact_id"])
    assert checkpoint.is_file(), "`sweep run` keeps the best trial's checkpoint"
    away = checkpoint.with_name(checkpoint.name + ".away")
    checkpoint.rename(away)
    try:
        return write_report(study, STUDY, out="no-checkpoint.html")
    finally:
        away.rename(checkpoint)


def test_report_without_the_best_checkpoint_still_renders(report_without_checkpoint, browser):
    n_figures = assert_written(report_without_checkpoint)
    rendered = render(browser, report_without_checkpoint.out)
    assert_clean(rendered)
    assert_all_figures_drawn(rendered, n_figures)
    assert ERROR_SECTION in rendered.headings


def test_report_without_the_best_checkpoint_says_it_is_not_available(report_without_checkpoint):
    assert_written(report_without_checkpoint)
    page = report_without_checkpoint.html
    intro = page.split(f"<h2>{ERROR_SECTION}</h2>", 1)[1].split("</p>", 1)[0]
    assert "checkpoint is not available" in intro, intro


def test_report_on_study_with_pruned_trials(study, browser):
    name = f"{STUDY}-pruned"
    optuna.copy_study(from_study_name=STUDY, from_storage=study.url, to_storage=study.url, to_study_name=name)
    target = optuna.load_study(study_name=name, storage=study.url)
    template = target.trials[0]
    target.add_trial(
        optuna.trial.create_trial(
            state=TrialState.PRUNED,
            params=template.params,
            distributions=template.distributions,
            intermediate_values={1: 0.0},
            user_attrs={"model_type": template.user_attrs["model_type"], "epochs_run": 1},
        )
    )
    report = write_report(study, name, out="pruned.html")
    n_figures = assert_written(report)
    rendered = render(browser, report.out)
    assert_clean(rendered)
    assert_all_figures_drawn(rendered, n_figures)
    n_pruned = sum(t.state == TrialState.PRUNED for t in target.get_trials(deepcopy=False))
    column = rendered.summary_header.index("pruned")
    assert sum(int(row[column]) for row in rendered.summary_rows) == n_pruned
