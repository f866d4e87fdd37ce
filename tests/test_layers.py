"""The sweep layer's order, enforced: store < spec < run < reruns < report < api < cli. A module may
import its own layer or one below (imports inside functions included), no modules import each other
in a cycle, and the API never loads typer (the core never imports the sweep layer: test_code_shape)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("store", "spec", "run", "reruns", "report", "api", "cli")  # the pipeline's order


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for root in ("digitsum", "sweep") for p in sorted((REPO / root).rglob("*.py"))}


def imported(path: Path) -> set[str]:
    """The project's modules that a file imports, anywhere in it (``from pkg import mod`` names mod)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name in MODULES}


def layer(module: str) -> int:
    """Where a module of sweep/ stands: -1 for the package itself, which imports nothing, and for the
    helper every layer may use (sweep.lazy: package exports imported on first use)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else -1


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("sweep.")])
def test_every_import_points_down_the_pipeline(module):
    upward = sorted(
        f"{other} ({LAYERS[layer(other)]})"
        for other in imported(MODULES[module])
        if other.startswith("sweep") and layer(other) > layer(module)
    )
    assert not upward, f"{module} ({LAYERS[layer(module)]}) imports a later layer: {', '.join(upward)}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> the modules it imports), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for other in sorted(graph.get(node, ())):
            cycle = visit(other, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    return next((cycle for node in sorted(graph) if (cycle := visit(node, []))), None)


def test_no_module_imports_itself_through_others():
    graph = {module: imported(path) - {module} for module, path in MODULES.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.processes
def test_the_api_does_not_load_typer():
    run = subprocess.run(
        [sys.executable, "-c", "import sys, sweep.api; assert 'typer' not in sys.modules"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
