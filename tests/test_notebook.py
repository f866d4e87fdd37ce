"""docs/tutorial.ipynb runs: executed top to bottom by nbclient in a fresh folder (a copy of `studies/`),
with its parameters cell set to small budgets, as a user's kernel would run it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sweep_helpers import on_one_core

nbclient = pytest.importorskip("nbclient", reason="the notebook extra: pip install -e .[notebook]")
nbformat = pytest.importorskip("nbformat", reason="the notebook extra: pip install -e .[notebook]")

pytestmark = pytest.mark.processes  # a Jupyter kernel, and the study's worker

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"
# The quickstart's search, smaller: its cells and pruner, lengths 2-3, 4 epochs
SMALL_SPEC = """
name: notebook
data: {lengths: [2, 3], val_fraction: 0.2, probe_lengths: [4]}
fixed: {train.n_epochs: 4, train.seed: 0}
sampler: {type: tpe, seed: 42, n_startup_trials: 4}
pruner: {type: median, n_startup_trials: 3, n_warmup_steps: 2}
space:
  model.model_type: {choices: [lstm, gru]}
  model.hidden_size: {low: 32, high: 64, step: 32}
"""
SMALL = "SPEC = {spec!r}\nTRIALS = 3\nSEEDS = [0, 1]\nCOUNTER_EPOCHS = 3\nSTORAGE = None\nWORKDIR = {workdir!r}\n"
PLOTLY = "application/vnd.plotly.v1+json"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notebook")
    shutil.copytree(
        NOTEBOOK.parents[1] / "studies", folder / "studies", ignore=shutil.ignore_patterns("*.db*", "artifacts")
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1, "the notebook needs one cell tagged parameters"
    (folder / "small.yaml").write_text(SMALL_SPEC, encoding="utf-8")
    parameters[0].source = SMALL.format(spec=str(folder / "small.yaml"), workdir=str(folder))
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    with on_one_core():  # the kernel inherits it
        client.execute()
    return notebook, folder


def outputs(notebook, marker: str) -> list[dict]:
    cell = next(c for c in notebook.cells if c.cell_type == "code" and marker in c.source)
    return cell.outputs


def text(notebook, marker: str) -> str:
    return "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs(notebook, marker))


def test_the_search_ran_in_the_default_storage_of_its_folder(executed):
    notebook, folder = executed
    assert (folder / "studies" / "sweep.db").is_file()
    assert "COMPLETE" in text(notebook, "api.run(")


def test_reruns_give_a_mean_and_spread_per_model_type(executed):
    notebook, _ = executed
    lines = [line for line in text(notebook, "api.rerun(").splitlines() if line.startswith("trial ")]
    assert lines and all("over 2 seeds" in line for line in lines), lines


def test_the_report_figures_are_shown_inline(executed):
    notebook, _ = executed
    shown = outputs(notebook, "api.report_sections(")
    figures = [o for o in shown if PLOTLY in o.get("data", {})]
    titles = [o["data"]["text/markdown"] for o in shown if "text/markdown" in o.get("data", {})]
    assert len(figures) >= 8, len(figures)
    assert any(t.startswith("### Summary") for t in titles) and any("Seed spread" in t for t in titles)


def test_the_counter_trains_three_seeds_and_its_length_curve_is_drawn(executed):
    notebook, folder = executed
    assert text(notebook, "api.train(").count("best validation exact match") == 3
    assert sorted(p.name for p in (folder / "runs" / "counter-nb").glob("seed-*")) == ["seed-0", "seed-1", "seed-2"]
    assert any(PLOTLY in o.get("data", {}) for o in outputs(notebook, "api.length_curve("))
    assert "holds >= 99% up to" in text(notebook, "api.length_curve(")
