"""A pip user's first commands, on the wheel: built from the sources, installed (not editable) into a
fresh venv, run from an empty folder. The venv takes its dependencies (torch, optuna, ...) from this
project's venv by a path, as an index would give them, so the test needs no network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from sweep_helpers import on_one_core

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("pyproject.toml", "README.md", "digitsum", "sweep", "studies")

pytestmark = pytest.mark.processes


def run(
    command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd, env=env)
    assert done.returncode == 0, f"{' '.join(map(str, command))}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fresh venv's bin folder, with the wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in SHIPPED:  # a copy: building in the checkout would leave build/ behind
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("*.db*", "__pycache__", "checkpoints")
            )
        else:
            shutil.copy(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(root), str(source)])
    (wheel,) = root.glob("digitsum_sweep-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)])
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")  # a path, not the editable finder
    # No extras: this project's venv has the tensorboard extra, which a plain `pip install` does not bring
    (site / "no-extras.pth").write_text("import sys; sys.modules['tensorboard'] = None\n")
    return venv / "bin"


@pytest.fixture()
def empty_folder(tmp_path: Path) -> dict[str, str]:
    """An empty working folder and home: the default storage goes to ~/.local/share/digitsum-sweep."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWEEP_", "PYTHON", "VIRTUAL_ENV"))}
    env["HOME"] = str(tmp_path)
    env.pop("XDG_DATA_HOME", None)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions"))  # compiled once
    return env


def test_the_installed_command_finds_its_code_and_its_shipped_specs(installed, empty_folder, tmp_path):
    sweep = str(installed / "sweep")
    where = run([str(installed / "python"), "-c", "import sweep.cli; print(sweep.cli.__file__)"], cwd=tmp_path)
    assert str(installed.parent) in where.stdout  # the installed copy, not the checkout
    assert "digitsum-sweep" in run([sweep, "--version"], cwd=tmp_path, env=empty_folder).stdout
    assert "model.hidden_size" in run([sweep, "keys"], cwd=tmp_path, env=empty_folder).stdout
    assert "study 'quickstart', valid" in run([sweep, "check", "quickstart"], cwd=tmp_path, env=empty_folder).stdout
    checked = run([sweep, "check", "counter-seeds"], cwd=tmp_path, env=empty_folder).stdout  # its warm start too
    assert "study 'counter-seeds', valid" in checked and "warm start: model.model_type=lrnn" in checked
    with on_one_core():
        ran = run([sweep, "run", "quickstart", "--trials", "1"], cwd=tmp_path, env=empty_folder)
    assert "best of 'quickstart': trial 0" in ran.stdout
    assert (tmp_path / ".local" / "share" / "digitsum-sweep" / "sweep.db").is_file()
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # nothing written to the working folder


def test_without_the_tensorboard_extra_training_says_so_in_one_line_and_trains(installed, empty_folder, tmp_path):
    from digitsum.tensorboard import MISSING

    args = ["train.lengths=1-2", "train.n_epochs=1", "model.hidden_size=8", "train.device=cpu"]
    trained = run([str(installed / "sweep"), "train", *args], cwd=tmp_path, env=empty_folder)
    assert trained.stdout.count(MISSING) == 1 and "best val exact match" in trained.stdout
    assert sorted(p.name for p in (tmp_path / "runs" / "run").iterdir()) == ["best.pt", "config.json", "history.csv"]
