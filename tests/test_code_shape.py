"""The shape the codebase keeps: short functions in digitsum/ and sweep/, a core that never imports
the sweep layer, and a keys page (docs/keys.md) whose tables are `sweep keys --markdown` (so they cannot drift)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sweep.spec.reference import README_BEGIN, README_END, key_tables

REPO = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 50
SOURCES = sorted([*(REPO / "digitsum").rglob("*.py"), *(REPO / "sweep").rglob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_function_is_longer_than_50_lines(path):
    tree = ast.parse(path.read_text())
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: split {', '.join(long)}"


@pytest.mark.parametrize("path", sorted((REPO / "digitsum").rglob("*.py")), ids=lambda p: p.name)
def test_the_core_never_imports_the_sweep_layer_or_its_libraries(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"optuna", "typer", "plotly", "sweep", "pandas"}, path.name


def test_the_keys_page_tables_are_sweep_keys_markdown():
    keys_page = (REPO / "docs/keys.md").read_text()
    assert README_BEGIN in keys_page and README_END in keys_page
    block = keys_page.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert block == key_tables(markdown=True), (
        "run .venv/bin/python scripts/readme-keys.py (it writes `sweep keys --markdown` into docs/keys.md)"
    )


def test_the_spec_reference_is_generated_from_the_declarations():
    from sweep.spec.reference import SPEC_REFERENCE, spec_reference

    assert (REPO / SPEC_REFERENCE).read_text(encoding="utf-8") == spec_reference(REPO), (
        "run .venv/bin/python scripts/readme-keys.py"
    )
    assert "](spec-reference.md)" in (REPO / "docs/keys.md").read_text()  # linked from the keys page
