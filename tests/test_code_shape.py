"""The shape the codebase keeps: short functions and modules in digitsum/ and sweep/, a test module for
each module, a core that never imports the sweep layer, and a keys page generated from the declarations
(so it cannot drift)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 50
MAX_MODULE_LINES = 450
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


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_is_longer_than_450_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(REPO)} has {lines} lines: split it by what it does"


@pytest.mark.parametrize("path", sorted((REPO / "digitsum").rglob("*.py")), ids=lambda p: p.name)
def test_the_core_never_imports_the_sweep_layer_or_its_libraries(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"optuna", "typer", "plotly", "sweep", "pandas"}, path.name


def test_the_keys_page_is_generated_from_the_declarations():
    from sweep.spec.reference import KEYS_PAGE, keys_page

    assert (REPO / KEYS_PAGE).read_text(encoding="utf-8") == keys_page(REPO), "run .venv/bin/python docs/keys-page.py"
    assert f"]({KEYS_PAGE})" in (REPO / "README.md").read_text()  # linked from the README
