"""The `sweep` command line (typer's CliRunner, in this process): sweep commands and core commands.

Every expected mistake is exit code 2 and one "error:" line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from sweep_helpers import (
    assert_one_error_line,
    checkpoint_dir,
    invoke,
    load,
    run_cli,
    spec_dict,
    storage_url,
    stored_checkpoints,
    write_spec,
)

from digitsum.checkpoint import load_checkpoint
from sweep.cli import app
from sweep.spec.objectives import best_trial

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


# ---------------------------------------------------------------------------------------------
# A small finished study shared by the sweep-command tests


@pytest.fixture(scope="module")
def studied(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    spec = write_spec(folder, n_trials=3, data={"lengths": [1, 2], "val_fraction": 0.2, "probe_lengths": [3]})
    result = run_cli(folder, spec, "--threads", "1")
    assert result.exit_code == 0, result.stdout + result.stderr
    return folder, storage_url(folder), result


def test_run_prints_each_trial_and_the_best(studied):
    folder, url, result = studied
    lines = result.stdout.splitlines()
    assert lines[0].startswith("study 'tiny' in sqlite:///") and "0 of 3 trials finished" in lines[0]
    assert len([line for line in lines if line.startswith("trial ")]) == 3
    assert "best of 'tiny': trial" in result.stdout
    assert result.stderr == ""


def test_ls(studied):
    folder, url, _ = studied
    result = invoke("ls", "--storage", url)
    assert result.exit_code == 0, result.stderr
    where, header, row = result.stdout.splitlines()
    assert where == f"studies in {url}:"
    assert header.split() == ["study", "complete", "pruned", "fail", "running", "best"]
    fields = row.split()
    assert fields[:5] == ["tiny", "3", "0", "0", "0"]
    assert float(fields[5]) == load(url, "tiny").best_value


def test_ls_empty_storage(tmp_path):
    from sweep.store.storage import open_storage

    open_storage(storage_url(tmp_path))  # a storage with no study in it yet
    result = invoke("ls", "--storage", storage_url(tmp_path))
    assert result.exit_code == 0
    assert "no studies yet" in result.stdout


def test_best(studied):
    folder, url, _ = studied
    study = load(url, "tiny")
    result = invoke("best", "tiny", "--storage", url)
    assert result.exit_code == 0, result.stderr
    assert f"best of 'tiny': trial {study.best_trial.number}, val_exact_match {study.best_value:.4f}" in result.stdout
    for key, value in study.best_params.items():
        assert f"  {key} = {value}" in result.stdout
    assert "probe (unseen lengths) exact match" in result.stdout
    artifact = best_trial(study).user_attrs["artifact_id"]
    assert f"checkpoint: artifact {artifact} in {Path(checkpoint_dir(folder)).resolve()}\n" in result.stdout
    rerun = f"sweep rerun tiny {study.best_trial.number} --seeds 0,1,2"
    assert f"validation exact match over seeds: not measured yet ({rerun})" in result.stdout


def test_best_json(studied):
    folder, url, _ = studied
    study = load(url, "tiny")
    result = invoke("best", "tiny", "--storage", url, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {"value", "params", "checkpoint"} <= set(summary)
    assert summary["value"] == study.best_value
    assert summary["params"] == study.best_params
    assert summary["trial"] == best_trial(study).number
    assert summary["checkpoint_exists"] is True and summary["checkpoint"].startswith("artifact ")
    assert summary["n_complete"] == 3
    assert set(summary["probe_by_length"]) == {"3"}


def test_export(studied, tmp_path):
    folder, url, _ = studied
    out = tmp_path / "new" / "f.csv"
    result = invoke("export", "tiny", "--out", out, "--storage", url)
    assert result.exit_code == 0, result.stderr
    assert "wrote 3 trials" in result.stdout
    frame = pd.read_csv(out)
    assert len(frame) == 3
    assert {"number", "value_val_exact_match", "state"} <= set(frame.columns)  # the value is named after the metric
    assert {"params_model.model_type", "params_model.hidden_size", "params_train.learning_rate"} <= set(frame.columns)
    assert {"user_attrs_n_parameters", "user_attrs_epochs_run", "user_attrs_probe_exact_match"} <= set(frame.columns)
    assert list(frame["state"]) == ["COMPLETE"] * 3
    assert list(out.parent.iterdir()) == [out]  # no temporary file left


def test_rerun_reproduces_the_stored_value(studied):
    folder, url, _ = studied
    stored = load(url, "tiny").trials[0].value
    result = invoke("rerun", "tiny", "0", "--storage", url, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["stored_value"] == stored
    assert summary["runs"][0]["value"] == stored  # exactly: same seed, same data, same code
    assert summary["stored_state"] == "COMPLETE"
    text = invoke("rerun", "tiny", "0", "--storage", url)
    assert text.exit_code == 0 and f"stored value {stored:.4f} (COMPLETE)" in text.stdout
    assert "seed 0: value" in text.stdout


def test_rerun_bad_seeds(studied):
    folder, url, _ = studied
    assert "--seeds" in assert_one_error_line(invoke("rerun", "tiny", "0", "--seeds", "1,x", "--storage", url))


def test_rerun_unknown_trial(studied):
    folder, url, _ = studied
    assert "has no trial 99" in assert_one_error_line(invoke("rerun", "tiny", "99", "--storage", url))


@pytest.mark.parametrize("command", [["best", "nope"], ["export", "nope", "--out", "x.csv"], ["rerun", "nope", "0"]])
def test_unknown_study_name(studied, command, tmp_path, monkeypatch):
    folder, url, _ = studied
    monkeypatch.chdir(tmp_path)
    line = assert_one_error_line(invoke(*command, "--storage", url))
    assert "no study named 'nope'" in line and "tiny" in line
    assert not (tmp_path / "x.csv").exists()


def test_best_without_a_completed_trial(tmp_path):
    url = storage_url(tmp_path)
    optuna.create_study(storage=url, study_name="empty")
    assert "no completed trial yet" in assert_one_error_line(invoke("best", "empty", "--storage", url))


def test_best_download_then_predict_with_the_file_and_with_study_trial(studied, tmp_path):
    folder, url, _ = studied
    number = best_trial(load(url, "tiny")).number
    done = invoke("best", "tiny", "--storage", url, "--download", tmp_path / "models")
    assert done.exit_code == 0, done.stderr
    checkpoint = tmp_path / "models" / f"trial-{number:05d}.pt"
    assert f"checkpoint of trial {number}: {checkpoint}" in done.stdout
    by_file = invoke("predict", checkpoint, "12", "345", "--json")
    for name in (f"tiny:{number}", "tiny:best"):  # fetched from the study's artifact store
        by_name = invoke("predict", name, "12", "345", "--json", "--storage", url)
        assert by_name.exit_code == 0, by_name.stderr
        assert json.loads(by_name.stdout) == json.loads(by_file.stdout)
    others = [t.number for t in load(url, "tiny").trials if t.number != number]
    line = assert_one_error_line(invoke("predict", f"tiny:{others[0]}", "1", "--storage", url))
    assert "kept no checkpoint" in line or "removed when a better trial finished" in line  # best once, then beaten
    assert "has no trial 99" in assert_one_error_line(invoke("predict", "tiny:99", "1", "--storage", url))


def test_predict_with_the_best_checkpoint(studied):
    folder, url, _ = studied
    checkpoint = f"tiny:{best_trial(load(url, 'tiny')).number}"
    result = invoke("predict", checkpoint, "12", "345", "--storage", url)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("12 -> ") and lines[1].startswith("345 -> ")
    rows = json.loads(invoke("predict", checkpoint, "12", "345", "--json", "--storage", url).stdout)
    assert [(r["sequence"], r["expected"]) for r in rows] == [("12", "3"), ("345", "12")]
    assert all(r["correct"] == (r["answer"] == r["expected"]) for r in rows)


# ---------------------------------------------------------------------------------------------
# Help


COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)


def test_commands_are_all_there():
    assert {"data", "train", "evaluate", "predict", "run", "ls", "best", "export", "rerun"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.stderr
    assert "Example" in result.stdout


def test_top_level_help():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


# ---------------------------------------------------------------------------------------------
# Core commands: data, train, evaluate, predict


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny `sweep train` run and a CSV of lengths 1-2 from `sweep data`."""
    folder = tmp_path_factory.mktemp("train")
    data = invoke("data", folder / "d.csv", "--lengths", "1-2")
    assert data.exit_code == 0, data.stderr
    result = invoke(
        "train",
        "model.model_type=gru",
        "model.hidden_size=8",
        "train.lengths=1-2",
        "train.n_epochs=2",
        "train.device=cpu",
        "train.num_threads=1",
        f"train.log_path={folder / 'runs'}",
        "train.run_name=r",
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    return folder, result


def test_data_writes_every_string(tmp_path):
    result = invoke("data", tmp_path / "d.csv", "--lengths", "1-2")
    assert result.exit_code == 0
    assert "wrote 110 rows" in result.stdout
    lines = (tmp_path / "d.csv").read_text().splitlines()
    assert len(lines) == 110 and "0,0" in lines and "99,18" in lines


def test_data_sample(tmp_path):
    result = invoke("data", tmp_path / "d.csv", "--lengths", "5", "--sample", "7", "--seed", "3")
    assert result.exit_code == 0
    lines = (tmp_path / "d.csv").read_text().splitlines()
    assert len(lines) == 7 and all(len(line.split(",")[0]) == 5 for line in lines)


def test_data_in_range_draws_only_the_given_sums(tmp_path):
    result = invoke("data", tmp_path / "d.csv", "--lengths", "20,100", "--sums", "0-36", "--sample", "40")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "wrote 80 rows (lengths 20,100, digit sums 0-36)" in result.stdout
    rows = [line.split(",") for line in (tmp_path / "d.csv").read_text().splitlines()]
    assert sorted({len(x) for x, _ in rows}) == [20, 100]
    assert all(sum(map(int, x)) == int(y) <= 36 for x, y in rows)
    bad = invoke("data", tmp_path / "e.csv", "--lengths", "2", "--sums", "30-40")
    assert bad.exit_code == 2 and "no string of 2 digits has a digit sum in 30-40" in bad.stderr


def test_train_writes_a_run(trained):
    folder, result = trained
    run_dir = folder / "runs" / "r"
    assert "epoch   1/2" in result.stdout and "epoch   2/2" in result.stdout
    assert f"checkpoint {run_dir / 'best.pt'}" in result.stdout
    assert (run_dir / "config.json").is_file()
    assert len((run_dir / "history.csv").read_text().splitlines()) == 3
    model, payload = load_checkpoint(run_dir / "best.pt")
    assert payload["config"]["model"]["hidden_size"] == 8


def test_train_with_a_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"model_type": "rnn", "hidden_size": 8},
                "train": {
                    "lengths": "1-2",
                    "n_epochs": 1,
                    "device": "cpu",
                    "num_threads": 1,
                    "log_path": str(tmp_path / "runs"),
                },
            }
        )
    )
    result = invoke("train", "--config", config, "train.run_name=fromfile")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("rnn hidden 8 x1, 1 epochs")
    assert (tmp_path / "runs" / "fromfile" / "best.pt").is_file()


def test_evaluate(trained):
    folder, _ = trained
    result = invoke("evaluate", folder / "runs" / "r" / "best.pt", folder / "d.csv")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("exact match ") and "on 110 rows" in result.stdout
    assert "length  1:" in result.stdout and "length  2:" in result.stdout
    summary = json.loads(invoke("evaluate", folder / "runs" / "r" / "best.pt", folder / "d.csv", "--json").stdout)
    assert 0.0 <= summary["exact_match"] <= 1.0


def test_evaluate_scores_the_rows_whose_sum_the_model_trained_on(trained):
    # Trained on lengths 1-2 (sums 0-18); scored on every 3-digit string (sums 0-27).

    from digitsum.data import encode, read_csv
    from digitsum.decode import answers_to_numbers, greedy_decode

    folder, _ = trained
    assert invoke("data", folder / "d3.csv", "--lengths", "3").exit_code == 0
    checkpoint = folder / "runs" / "r" / "best.pt"
    summary = json.loads(invoke("evaluate", checkpoint, folder / "d3.csv", "--json").stdout)
    rows = read_csv(folder / "d3.csv")
    in_range = rows.y <= 18
    assert summary["in_range"]["n_rows"] == int(in_range.sum()) == 835  # 1,000 minus the 165 sums above 18
    model, _ = load_checkpoint(checkpoint)
    right = answers_to_numbers(greedy_decode(model, encode(rows))) == rows.y
    assert summary["in_range"]["exact_match"] == pytest.approx(float(right[in_range].mean()))
    assert summary["exact_match"] == pytest.approx(float(right.mean()))
    assert summary["in_range"]["exact_match"] >= summary["exact_match"]  # sums above 18 it never wrote
    text = invoke("evaluate", checkpoint, folder / "d3.csv").stdout
    assert "length  3:" in text and "; in range " in text and "(835 rows)" in text
    assert "in range: rows whose sum occurs in the model's training rows (sums 0-18)" in text


def test_predict(trained):
    folder, _ = trained
    result = invoke("predict", folder / "runs" / "r" / "best.pt", "7", "0042")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("7 -> ") and lines[1].startswith("0042 -> ")
    assert ("(right)" in lines[0]) != ("wrong, expected 7" in lines[0])


TRAIN_MISTAKES = {
    "unknown key": (["model.hiden_size=8"], "did you mean model.hidden_size"),
    "wrong type": (["model.hidden_size=big"], "model.hidden_size"),
    "negative learning rate": (["train.learning_rate=-1"], "train.learning_rate"),
    "zero hidden size": (["model.hidden_size=0"], "model.hidden_size"),
    "split fraction 1.5": (["train.train_split_fraction=1.5"], "train.train_split_fraction"),
    "no equals sign": (["model.hidden_size"], "key=value"),
    "bad lengths": (["train.lengths=0-3"], "train.lengths"),
    "missing config file": (["--config", "nope.yaml"], "no such config file"),
}


@pytest.mark.parametrize("mistake", sorted(TRAIN_MISTAKES))
def test_train_mistakes(mistake, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, message = TRAIN_MISTAKES[mistake]
    assert message in assert_one_error_line(invoke("train", *args))
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_train_empty_validation_split_is_explained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = assert_one_error_line(invoke("train", "train.lengths=1", "train.n_epochs=1", "train.device=cpu"))
    assert "validation" in line


def test_train_whose_loss_diverges_stops_in_one_line_and_keeps_its_best_epoch(tmp_path, monkeypatch):
    # AdamW at lr 10 with weight decay 1 multiplies every weight by -9 a step: inf, then NaN, in a few epochs
    monkeypatch.chdir(tmp_path)
    args = ["train.learning_rate=10", "train.weight_decay=1", "train.n_epochs=60", "train.batch_size=8"]
    result = invoke("train", *args, "train.lengths=1-2", "model.hidden_size=16", "train.device=cpu")
    line = assert_one_error_line(result, code=1)
    assert "training loss is nan at epoch" in line and "lower train.learning_rate" in line
    assert (tmp_path / "runs" / "run" / "best.pt").is_file()


def test_train_config_file_not_a_mapping(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("- a\n- list\n")
    assert "mapping" in assert_one_error_line(invoke("train", "--config", config))


def test_data_bad_lengths(tmp_path):
    assert "lengths" in assert_one_error_line(invoke("data", tmp_path / "d.csv", "--lengths", "two"))
    assert not (tmp_path / "d.csv").exists()


CSV_MISTAKES = {
    "missing": (None, "no such file"),
    "malformed line": ("12,3\nab,1\n", ":2:"),
    "empty": ("", "empty"),
    "wrong sum": ("12,4\n", "not the digit sum"),
}


@pytest.mark.parametrize("mistake", sorted(CSV_MISTAKES))
def test_evaluate_bad_csv(mistake, trained, tmp_path):
    folder, _ = trained
    text, message = CSV_MISTAKES[mistake]
    csv = tmp_path / "bad.csv"
    if text is not None:
        csv.write_text(text)
    line = assert_one_error_line(invoke("evaluate", folder / "runs" / "r" / "best.pt", csv))
    assert message in line and str(csv) in line


@pytest.mark.parametrize(
    ("sequence", "message"),
    [
        ("12a", "'12a' is not a digit sequence"),
        ("", "'' is not a digit sequence"),
        ("1" * 10_001, "(10,003 characters) has 10,001 digits; give 1 to 10,000 digits"),
        ("x" * 100_000, "characters) is not a digit sequence"),
    ],
)
def test_predict_bad_sequence(trained, sequence, message):
    folder, _ = trained
    assert message in assert_one_error_line(invoke("predict", folder / "runs" / "r" / "best.pt", "12", sequence))


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b""])
def test_not_a_checkpoint(tmp_path, content):
    fake = tmp_path / "fake.pt"
    fake.write_bytes(content)
    assert "not a readable checkpoint" in assert_one_error_line(invoke("predict", fake, "12"))
    (tmp_path / "d.csv").write_text("12,3\n")
    assert "not a readable checkpoint" in assert_one_error_line(invoke("evaluate", fake, tmp_path / "d.csv"))


def test_missing_checkpoint(tmp_path):
    assert "no such checkpoint file" in assert_one_error_line(invoke("predict", tmp_path / "none.pt", "12"))


def test_run_checkpoints_go_where_asked(studied):
    folder, url, _ = studied
    assert stored_checkpoints(folder)
    assert not (folder / "studies").exists()  # nothing written to the default places


HEAVY_IMPORTS = """
import sys
from sweep.cli import app
code = None
try:
    app(sys.argv[1:], prog_name="sweep")
except SystemExit as done:
    code = done.code
print("loaded:", *sorted(m for m in ("torch", "optuna", "pandas") if m in sys.modules), "exit", code)
"""


def stored_study(url: str) -> None:
    """A study with one complete trial and its record, as `sweep run` stores them (no training needed)."""
    import dataclasses

    import optuna

    from digitsum.config import Config
    from sweep.store.records import StudyMeta, TrialRecord

    study = optuna.create_study(storage=url, study_name="read", direction="maximize")
    StudyMeta(fingerprint="v2:read", metric="val_exact_match", base_config=Config().to_dict(), space=[]).write(study)
    record = TrialRecord(model_type="gru", n_parameters=100, val_exact_match=0.5, epochs_run=1)
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs=dataclasses.asdict(record)))


@pytest.mark.processes
@pytest.mark.parametrize(
    ("args", "loaded"),
    [
        (["--help"], []),
        (["ls", "--help"], []),
        (["run", "--help"], []),
        (["ls"], ["optuna"]),
        (["best", "read"], ["optuna"]),
        (["best", "read", "--json"], ["optuna"]),
        (["export", "read", "--out", "trials.csv"], ["optuna", "pandas"]),
    ],
)
def test_help_and_read_only_commands_answer_without_loading_torch(args, loaded, tmp_path):
    """A fresh interpreter, as the console script runs: --help loads neither torch nor optuna, and the
    commands that read stored numbers (ls, best, export) load no torch."""
    if args[0] != "--help" and "--help" not in args:
        url = f"sqlite:///{tmp_path}/s.db"
        stored_study(url)
        args = [*args, "--storage", url]
    done = subprocess.run(
        [sys.executable, "-c", HEAVY_IMPORTS, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    last = done.stdout.strip().splitlines()[-1]
    assert last == " ".join(["loaded:", *loaded, "exit", "0"]), done.stdout + done.stderr


def test_version_and_short_help():
    from importlib.metadata import version

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"sweep (digitsum-sweep) {version('digitsum-sweep')}"
    assert invoke("-h").stdout == invoke("--help").stdout
    assert "Example: sweep run" in invoke("run", "-h").stdout


@pytest.mark.processes
def test_a_closed_pipe_ends_quietly(tmp_path):
    """`sweep keys | head -1`: the reader leaves early; no "error: Broken pipe", exit 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sweep.cli", "keys"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0 and stderr == ""


def test_check_prints_what_a_spec_will_run_and_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, spec={**spec_dict(), "data": {"lengths": [1, 2], "probe_lengths": [3]}})
    result = invoke("check", spec)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"{spec}: study 'tiny', valid" in out
    assert "model.hidden_size    int 8..16" in out and "train.learning_rate  float 0.01..0.1 log" in out
    assert "data: lengths 1,2: 110 rows, " in out and "probe: lengths 3: 1,000 rows" in out
    assert "budget: at most 2 trials x 2 epochs = 4 epochs" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # no storage, no checkpoints


def test_check_refuses_a_bad_spec_in_one_line(tmp_path):
    spec = write_spec(tmp_path, n_trials=0)
    assert "n_trials" in assert_one_error_line(invoke("check", spec))


@pytest.mark.parametrize(
    "command", [["ls"], ["best", "x"], ["export", "x", "--out", "x.csv"], ["report", "x"], ["rerun", "x", "0"]]
)
def test_read_only_commands_with_no_storage_say_where_they_looked(command, tmp_path, monkeypatch):
    monkeypatch.delenv("SWEEP_STORAGE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    line = assert_one_error_line(invoke(*command))
    assert f"no storage at {tmp_path / 'data' / 'digitsum-sweep' / 'sweep.db'}" in line and "the default" in line
    assert not (tmp_path / "studies").exists() and not (tmp_path / "data").exists()  # nothing was created


def test_train_never_writes_over_an_earlier_run_unasked(tmp_path):
    quick = [
        "train.lengths=1-2",
        "train.n_epochs=1",
        "train.device=cpu",
        "model.hidden_size=8",
        f"train.log_path={tmp_path}",
    ]
    assert invoke("train", *quick).exit_code == 0
    second = invoke("train", *quick)  # unnamed: the next free folder, and it says so
    assert second.exit_code == 0 and f"this one goes to {tmp_path / 'run-2'}" in second.stdout
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run-2" / "best.pt").is_file()
    named = [*quick, "train.run_name=run"]
    assert "add --overwrite" in assert_one_error_line(invoke("train", *named))
    before = (tmp_path / "run" / "best.pt").stat().st_mtime_ns
    assert invoke("train", *named, "--overwrite").exit_code == 0
    assert (tmp_path / "run" / "best.pt").stat().st_mtime_ns != before


def test_rm_asks_then_deletes_the_study_and_its_checkpoints(tmp_path):
    spec = write_spec(tmp_path)
    url = storage_url(tmp_path)
    assert run_cli(tmp_path, spec, "--threads", 1).exit_code == 0
    kept = stored_checkpoints(tmp_path)
    assert kept
    refused = invoke("rm", "tiny", "--storage", url)  # no terminal to ask on
    assert "add --yes" in assert_one_error_line(refused) and kept[0].is_file()
    assert len(load(url, "tiny").trials) == 2
    done = invoke("rm", "tiny", "--yes", "--storage", url)
    assert done.exit_code == 0 and "deleted study 'tiny' (2 trials)" in done.stdout
    assert optuna.get_all_study_names(url) == [] and stored_checkpoints(tmp_path) == []
    assert "no study named 'tiny'" in assert_one_error_line(invoke("rm", "tiny", "--yes", "--storage", url))


@pytest.mark.processes
def test_errors_are_red_on_a_terminal_and_plain_when_piped():
    import os
    import pty

    leader, follower = pty.openpty()
    done = subprocess.run(
        [sys.executable, "-m", "sweep.cli", "train", "foo"], stderr=follower, stdout=subprocess.DEVNULL
    )
    os.close(follower)
    on_terminal = os.read(leader, 4096)
    os.close(leader)
    assert done.returncode == 2 and b"\x1b[31m" in on_terminal and b"write overrides as key=value" in on_terminal
    piped = subprocess.run([sys.executable, "-m", "sweep.cli", "train", "foo"], capture_output=True)
    assert piped.stderr.startswith(b"error: 'foo'") and b"\x1b[" not in piped.stderr


def test_studies_stay_in_sight_from_any_folder(tmp_path, monkeypatch):
    """Run in one folder, list and report from another: the default storage does not move with the
    working directory (outside a project it is per user)."""
    monkeypatch.delenv("SWEEP_STORAGE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    spec = write_spec(tmp_path)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    monkeypatch.chdir(tmp_path / "one")
    ran = invoke("run", spec, "--threads", 1)
    assert ran.exit_code == 0 and str(tmp_path / "data" / "digitsum-sweep" / "sweep.db") in ran.stdout
    monkeypatch.chdir(tmp_path / "two")
    listed = invoke("ls")
    assert listed.exit_code == 0 and str(tmp_path / "data" / "digitsum-sweep" / "sweep.db") in listed.stdout
    assert listed.stdout.splitlines()[2].startswith("tiny")
    assert invoke("report", "tiny", "--out", "r.html").exit_code == 0 and (tmp_path / "two" / "r.html").is_file()
    assert list((tmp_path / "data" / "digitsum-sweep" / "artifacts").iterdir())  # beside the storage


# ---------------------------------------------------------------------------------------------
# Study names: refused for a new study; a study stored under an odd name before stays usable

ODD = "my study/2024: first"  # a space, a slash and a colon: none is allowed in a new name


def test_run_refuses_a_name_that_cannot_name_a_file(tmp_path):
    spec = write_spec(tmp_path)
    for name in ("a/b", "../up", "has space", "x:1"):
        line = assert_one_error_line(run_cli(tmp_path, spec, "--name", name))
        assert "a study name is 1 to 64 letters, digits" in line
    line = assert_one_error_line(run_cli(tmp_path, write_spec(tmp_path, "odd.yaml", name="a/b")))
    assert "name: 'a/b': expected 1 to 64 letters, digits" in line
    assert not (tmp_path / "s.db").exists()  # refused before the storage was opened


def test_a_study_stored_under_an_odd_name_stays_readable_exportable_and_removable(studied, tmp_path, monkeypatch):
    folder, url, _ = studied
    monkeypatch.chdir(tmp_path)
    old = load(url, "tiny")
    odd = optuna.create_study(study_name=ODD, storage=url, directions=old.directions)
    for trial in old.get_trials(deepcopy=False):  # without checkpoints: removing it must not remove tiny's
        attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("artifact_id", "checkpoint")}
        odd.add_trial(
            optuna.trial.create_trial(
                params=trial.params,
                distributions=trial.distributions,
                values=trial.values,
                state=trial.state,
                user_attrs=attrs,
                intermediate_values=trial.intermediate_values,
            )
        )
    for key, value in old.user_attrs.items():
        odd.set_user_attr(key, value)
    assert ODD in invoke("ls", "--storage", url).stdout
    best = invoke("best", ODD, "--storage", url, "--json")
    assert best.exit_code == 0, best.stderr
    assert json.loads(best.stdout)["study"] == ODD
    exported = invoke("export", ODD, "--out", tmp_path / "odd.csv", "--storage", url)
    assert exported.exit_code == 0, exported.stderr
    assert len(pd.read_csv(tmp_path / "odd.csv")) == len(old.trials)
    reported = invoke("report", ODD, "--storage", url, "--no-attach")
    assert reported.exit_code == 0, reported.stderr
    assert (tmp_path / "reports" / "my_study_2024__first.html").is_file()  # a file name, not folders
    removed = invoke("rm", ODD, "--yes", "--storage", url)
    assert removed.exit_code == 0, removed.stderr
    assert ODD not in optuna.get_all_study_names(url) and "tiny" in optuna.get_all_study_names(url)
