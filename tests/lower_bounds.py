"""Print pip constraints that pin every runtime dependency (and the postgres, s3, tensorboard extras)
at the lower bound pyproject.toml states: `make test-oldest` runs the suite with them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

EXTRAS = ("postgres", "s3", "tensorboard")  # the dev tools stay at their newest


def lower_bounds(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = [*project["dependencies"], *(d for extra in EXTRAS for d in project["optional-dependencies"][extra])]
    pins = []
    for requirement in wanted:
        found = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)", requirement)
        if found:
            pins.append(f"{found.group(1)}=={found.group(3)}")
    return pins


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    print("\n".join(lower_bounds(root / "pyproject.toml")))
