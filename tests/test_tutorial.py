"""docs/tutorial.md cannot go stale: every command on the page runs again, in order, from a fresh folder
(`docs/tutorial-page.py --check`, with a real PostgreSQL server for the page's last section), and each must
print what the page shows, in shape: figures, model types and trial states are masked on both sides; and
what the commands write must be in .gitignore, so a newcomer's checkout stays clean."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pg_server import postgres_server, why_unavailable
from sweep_helpers import on_one_core

pytestmark = [pytest.mark.processes, pytest.mark.skipif(why_unavailable() is not None, reason=str(why_unavailable()))]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docs" / "tutorial-page.py"
PAGE = REPO / "docs" / "tutorial.md"


def test_the_page_shows_an_output_under_every_command():
    blocks = re.findall(r"^```console\n(.*?)^```\n", PAGE.read_text(encoding="utf-8"), re.S | re.M)
    commands = [line for block in blocks for line in block.splitlines() if line.startswith("$ ")]
    assert len(commands) >= 10
    for block in blocks:
        lines = block.splitlines()
        for index, line in enumerate(lines):
            if line.startswith("$ "):
                following = lines[index + 1] if index + 1 < len(lines) else "$ "
                assert not following.startswith("$ "), f"no output under {line!r}"


def test_every_tutorial_command_runs_and_prints_what_the_page_shows():
    with postgres_server() as server, on_one_core():  # the commands inherit it: one torch thread each
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "--check", "--postgres", server.url],
            cwd=REPO, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every output has the page's shape" in done.stdout
