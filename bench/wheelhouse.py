"""Print the requirements a GPU image needs besides its own torch, for `make wheelhouse`: the
project's runtime dependencies (torch left out), the postgres and tensorboard extras, and what
bench/gpu_check.sh runs its tests with (pytest, hypothesis)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

EXTRAS = ("postgres", "tensorboard")
TEST_TOOLS = ("pytest>=8", "hypothesis>=6.100")


def requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = [*project["dependencies"], *(d for extra in EXTRAS for d in project["optional-dependencies"][extra])]
    return [r for r in wanted if re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() != "torch"] + list(TEST_TOOLS)


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    print("\n".join(requirements(root / "pyproject.toml")))
