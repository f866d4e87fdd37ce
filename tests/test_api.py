"""sweep.api: the README's Python example, run as it is written there (in a fresh folder)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import optuna
import pytest
from sweep_helpers import on_one_core

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- python api example: begin -->", 1)[1].split("<!-- python api example: end -->", 1)[0]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()  # the default storage: the nearest studies/ folder
    monkeypatch.delenv("SWEEP_STORAGE", raising=False)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), on_one_core():
        exec(compile(readme_example(), "README.md", "exec"), {})
    first, answers = printed.getvalue().splitlines()[-2:]
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp_path}/studies/sweep.db")
    assert first.split()[0] == str(study.best_trial.number) and float(first.split()[1]) == study.best_value
    assert answers.startswith("[") and (tmp_path / "reports" / "quickstart.html").is_file()


def test_errors_are_the_commands_one_line_usage_errors(tmp_path, monkeypatch):
    from digitsum.errors import UsageError
    from sweep import api

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="no such study spec"):
        api.run("no-such-spec")
    with pytest.raises(UsageError, match="no storage at"):
        api.best("quickstart", storage=f"sqlite:///{tmp_path}/none.db")
