"""digitsum.runs: a run folder (one model, or a config's seeds), written every epoch; where runs go."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from sweep_helpers import SWEEP, subprocess_env

from digitsum.checkpoint import load_checkpoint
from digitsum.config import Config, ModelConfig, TrainConfig
from digitsum.datasets import data_split
from digitsum.errors import ConfigError, UsageError
from digitsum.lengths import Probe
from digitsum.members import Member
from digitsum.runs import (
    HISTORY_COLUMNS,
    free_folder,
    member_folders,
    place_run,
    seed_checkpoints,
    train_run,
)
from digitsum.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(tmp_path, **train) -> Config:
    settings = dict(lengths="1-2", n_epochs=2, batch_size=16, device="cpu", num_threads=1, log_path=str(tmp_path))
    return Config(ModelConfig(model_type="gru", hidden_size=8, embedding_dim=4), TrainConfig(**{**settings, **train}))


def test_one_model_writes_config_history_and_best(tmp_path):
    config = tiny(tmp_path, run_name="tiny")
    seen = []
    (result,), run_dir = train_run(config, on_epoch=seen.append)
    assert run_dir == tmp_path / "tiny" and member_folders(config) == [run_dir]
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "config.json", "history.csv"]
    assert json.loads((run_dir / "config.json").read_text()) == config.to_dict()
    lines = (run_dir / "history.csv").read_text().splitlines()
    assert lines[0] == ",".join(HISTORY_COLUMNS)
    for line, epoch in zip(lines[1:], result.history, strict=True):
        values = dict(zip(HISTORY_COLUMNS, line.split(","), strict=True))
        assert int(values["epoch"]) == epoch.epoch
        assert float(values["train_loss"]) == pytest.approx(epoch.train_loss, rel=1e-5)
        assert float(values["val_exact_match"]) == pytest.approx(epoch.val_exact_match, rel=1e-5)
    assert [[e.epoch for e in results] for results in seen] == [[1], [2]]
    _, payload = load_checkpoint(run_dir / "best.pt")
    assert payload["metrics"]["epoch"] == result.best_epoch and payload["config"] == config.to_dict()
    (again,) = fit([Member(config, *data_split(config.train))])  # the same split, the same run
    assert [e.train_loss for e in again.history] == [e.train_loss for e in result.history]


def test_a_run_of_seeds_writes_each_seeds_history_and_checkpoint(tmp_path):
    config = tiny(tmp_path, n_seeds=2, seed=5, run_name="r")
    results, run_dir = train_run(config)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "seed-5", "seed-6"]
    assert member_folders(config) == [run_dir / "seed-5", run_dir / "seed-6"]
    assert [seed for seed, _ in seed_checkpoints(run_dir)] == [5, 6]
    for seed, result in zip((5, 6), results, strict=True):
        lines = (run_dir / f"seed-{seed}" / "history.csv").read_text().splitlines()
        assert len(lines) == 1 + len(result.history)
        assert float(lines[-1].split(",")[3]) == pytest.approx(result.history[-1].val_exact_match, abs=1e-6)
        _, payload = load_checkpoint(run_dir / f"seed-{seed}" / "best.pt")
        assert payload["config"]["train"]["seed"] == seed and payload["config"]["train"]["n_seeds"] == 1
        assert payload["metrics"]["val_exact_match"] == result.best_exact_match


def test_a_probe_of_trained_lengths_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="probe length.s. 2 are trained on"):
        train_run(tiny(tmp_path, run_name="p"), probe=Probe((2,)))
    assert not (tmp_path / "p").exists()


def test_runs_never_overwrite_an_earlier_run_unasked(tmp_path):
    config = tiny(tmp_path)
    assert place_run(config, named=False, overwrite=False) == (config, None)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "history.csv").write_text("x")
    moved, to = place_run(config, named=False, overwrite=False)
    assert to == tmp_path / "run-2" and moved.train.run_name == "run-2"
    with pytest.raises(UsageError, match="holds an earlier run; pick another train.run_name, or add --overwrite"):
        place_run(config, named=True, overwrite=False)
    assert place_run(config, named=True, overwrite=True) == (config, None)
    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "x").write_text("x")
    assert free_folder(tmp_path / "run") == tmp_path / "run-3"
    assert free_folder(tmp_path / "empty") == tmp_path / "empty"


@pytest.mark.processes
def test_a_killed_run_of_seeds_leaves_every_seeds_best_checkpoint_and_history(tmp_path):
    """SIGKILL mid-run (no chance to clean up): each seed's best so far and its history are on disk."""
    command = [
        str(SWEEP), "train", "train.n_seeds=3", "train.lengths=1-3", "train.n_epochs=200",
        "model.model_type=gru", "model.hidden_size=16", "train.batch_size=32", "train.num_threads=1",
        "train.device=cpu", f"train.log_path={tmp_path}", "--no-tensorboard",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=subprocess_env()
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("epoch   3/"):
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert any(line.startswith("epoch   3/200") for line in lines), "".join(lines)
    for seed in (0, 1, 2):
        folder = tmp_path / "run" / f"seed-{seed}"
        history = (folder / "history.csv").read_text().splitlines()
        assert len(history) >= 4  # the header and epochs 1-3 at least
        scores = [float(line.split(",")[3]) for line in history[1:]]
        _, payload = load_checkpoint(folder / "best.pt")
        best = payload["metrics"]
        assert best["val_exact_match"] == pytest.approx(max(scores[: best["epoch"]]), abs=1e-6)
        assert best["epoch"] <= len(scores) and payload["config"]["train"]["seed"] == seed


@pytest.mark.processes
@pytest.mark.parametrize(("sent", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_says_where_each_seeds_best_model_is(tmp_path, sent, code):
    command = [
        str(SWEEP), "train", "train.n_seeds=2", "train.lengths=1-3", "train.n_epochs=200",
        "model.model_type=gru", "model.hidden_size=16", "train.num_threads=1", "train.device=cpu",
        f"train.log_path={tmp_path}", "--no-tensorboard",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=subprocess_env()
    )
    assert process.stdout is not None and process.stderr is not None
    for line in process.stdout:
        if line.startswith("epoch   2/"):
            break
    process.send_signal(sent)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    said = [line for line in err.splitlines() if line]
    assert said[0].startswith("interrupted at epoch "), err
    for seed, line in zip((0, 1), said[1:], strict=True):
        assert line.startswith(f"  seed {seed}: best so far {tmp_path / 'run' / f'seed-{seed}' / 'best.pt'} (epoch ")
    assert "Traceback" not in err
