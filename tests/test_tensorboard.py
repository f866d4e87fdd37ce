"""TensorBoard event files (digitsum/tensorboard.py): `sweep train` writes one run, a sweep one per
trial; read back with TensorBoard's own reader and checked against history.csv and the study."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import optuna
import pytest
from sweep_helpers import assert_one_error_line, assert_spec_mistake, invoke, run_cli, spec_dict, write_spec
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata, plugin_data_pb2

from digitsum import tensorboard
from sweep import api
from sweep.spec.parse import parse_spec

TINY_TRAIN = ("train.lengths=1-2", "train.n_epochs=3", "model.hidden_size=8", "train.device=cpu", "train.num_threads=1")


def read_run(folder: Path) -> EventAccumulator:
    """Every event of one run folder (size_guidance 0: keep them all, no sampling)."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def hparams_of(events: EventAccumulator) -> dict[str, float | str]:
    """The run's hparams as the HParams view reads them."""
    content = events.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.string_value if v.HasField("string_value") else v.number_value for k, v in info.hparams.items()}


def scalars(events: EventAccumulator, tag: str) -> list[float]:
    return [e.value for e in events.Scalars(tag)]


@pytest.fixture()
def no_tensorboard(monkeypatch):
    """As if the tensorboard package were not installed: its import fails."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    for name in [name for name in sys.modules if name.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)
    tensorboard.missing.cache_clear()
    yield
    tensorboard.missing.cache_clear()


def test_sweep_train_writes_one_run_whose_scalars_are_its_history(tmp_path):
    result = invoke("train", *TINY_TRAIN, f"train.log_path={tmp_path}", "train.run_name=r", "--probe", "3")
    assert result.exit_code == 0, result.output
    assert f"tensorboard --logdir {tmp_path}" in result.stdout and "probe" in result.stdout
    run = tmp_path / "r"
    events = read_run(run)
    with (run / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert len(history) == 3
    for column, tag in tensorboard.SCALARS.items():
        steps = [e.step for e in events.Scalars(tag)]
        assert steps == [1, 2, 3], tag
        assert scalars(events, tag) == pytest.approx([float(row[column]) for row in history], rel=1e-5, abs=1e-9), tag
    assert [tag for tag in events.Tags()["scalars"] if tag.startswith("val_by_length/")]
    assert len(scalars(events, "probe_by_length/3")) == len(scalars(events, "probe_in_range_by_length/3")) == 3
    texts = events.Tensors(f"{tensorboard.EXAMPLES}/text_summary")
    assert len(texts) == 3 and "| input | sum | decoded |" in texts[-1].tensor_proto.string_val[0].decode()
    hparams = hparams_of(events)
    assert hparams["model.hidden_size"] == 8 and hparams["train.lengths"] == "1-2" and hparams["state"] == "complete"
    best = max(float(row["val_exact_match"]) for row in history)
    assert scalars(events, "hparams/best_val_exact_match") == pytest.approx([best], abs=1e-6)


def test_sweep_train_with_seeds_writes_one_run_per_seed(tmp_path):
    result = invoke("train", *TINY_TRAIN, f"train.log_path={tmp_path}", "train.run_name=r", "train.n_seeds=2")
    assert result.exit_code == 0, result.output
    for seed in (0, 1):
        folder = tmp_path / "r" / f"seed-{seed}"
        events = read_run(folder)
        with (folder / "history.csv").open() as handle:
            history = list(csv.DictReader(handle))
        got = scalars(events, "exact_match/val")
        assert got == pytest.approx([float(row["val_exact_match"]) for row in history], abs=1e-9)
        hparams = hparams_of(events)
        assert hparams["train.seed"] == seed and hparams["train.n_seeds"] == 1 and hparams["state"] == "complete"
        assert len(events.Tensors(f"{tensorboard.EXAMPLES}/text_summary")) == 3
    assert not list((tmp_path / "r").glob("events.out.tfevents.*"))  # the runs are the seeds', one each


def test_a_probe_of_trained_lengths_is_one_line(tmp_path):
    line = assert_one_error_line(invoke("train", *TINY_TRAIN, f"train.log_path={tmp_path}", "--probe", "2-3"))
    assert "probe length(s) 2 are trained on" in line and not (tmp_path / "run").exists()
    assert "probe lengths 'x'" in assert_one_error_line(invoke("train", *TINY_TRAIN, "--probe", "x"))


def test_sweep_train_without_tensorboard_writes_no_event_files(tmp_path):
    result = invoke("train", *TINY_TRAIN, "train.n_epochs=1", f"train.log_path={tmp_path}", "--no-tensorboard")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "config.json", "history.csv"]
    assert "tensorboard" not in result.stdout.lower()


def test_without_the_package_training_says_so_in_one_line_and_goes_on(tmp_path, no_tensorboard):
    result = invoke("train", *TINY_TRAIN, "train.n_epochs=1", f"train.log_path={tmp_path}")
    assert result.exit_code == 0, result.output
    assert result.stdout.count(tensorboard.MISSING) == 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "config.json", "history.csv"]
    spec = write_spec(tmp_path, tensorboard=True)
    plan, _ = api.plan(spec, storage=f"sqlite:///{tmp_path}/s.db", artifacts=tmp_path / "ckpt")
    assert plan.tensorboard is None and plan.notes == (tensorboard.MISSING,)


def test_a_tensorboard_that_fails_here_is_one_line_too(tmp_path, monkeypatch):
    from torch.utils.tensorboard import summary

    def old_tensorboard(*args, **kwargs):  # tensorboard < 2.18 under NumPy 2 fails only when a summary is made
        raise AttributeError("`np.string_` was removed in the NumPy 2.0 release")

    monkeypatch.setattr(summary, "hparams", old_tensorboard)
    tensorboard.missing.cache_clear()
    try:
        result = invoke("train", *TINY_TRAIN, "train.n_epochs=1", f"train.log_path={tmp_path}")
    finally:
        tensorboard.missing.cache_clear()
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stdout.splitlines() if "TensorBoard" in line]
    assert line.startswith("no TensorBoard event files: the tensorboard package does not work here (AttributeError")
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_an_overwritten_run_keeps_no_earlier_event_files(tmp_path):
    args = (*TINY_TRAIN, "train.n_epochs=1", f"train.log_path={tmp_path}", "train.run_name=r")
    assert invoke("train", *args).exit_code == 0
    assert invoke("train", *args, "--overwrite").exit_code == 0
    assert len(scalars(read_run(tmp_path / "r"), "loss/train")) == 1


def test_a_sweep_of_seeds_writes_one_run_per_seed_of_each_trial(tmp_path):
    from sweep_helpers import spec_dict

    fixed = {**spec_dict()["fixed"], "train.n_seeds": 2, "train.num_threads": 1}
    result = run_cli(tmp_path, write_spec(tmp_path, fixed=fixed, n_trials=2), "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 0, result.output
    runs = sorted(run.name for run in (tmp_path / "tb" / "tiny").iterdir())
    assert len(runs) == 4 and [run.rsplit("-", 1)[1] for run in runs] == ["seed=0", "seed=1"] * 2
    for name in runs:
        events = read_run(tmp_path / "tb" / "tiny" / name)
        assert len(scalars(events, "exact_match/val")) == 2
        assert hparams_of(events)["train.seed"] == int(name[-1])


def test_a_sweep_writes_one_run_per_trial_named_by_number_model_type_and_params(tmp_path):
    data = {"lengths": [1, 2], "val_fraction": 0.2, "probe_lengths": [3]}
    spec = write_spec(tmp_path, data=data, n_trials=3)
    result = run_cli(tmp_path, spec, "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/s.db")
    runs = sorted((tmp_path / "tb" / "tiny").iterdir())
    assert len(runs) == len(study.trials) == 3
    for trial, run in zip(study.trials, runs, strict=True):
        model_type = trial.params["model.model_type"]
        hidden_size = trial.params["model.hidden_size"]
        assert run.name.startswith(f"trial-{trial.number:05d}-{model_type}-hidden_size={hidden_size}-learning_rate=")
        events = read_run(run)
        epochs = trial.user_attrs["epochs_run"]
        assert len(scalars(events, "exact_match/val")) == epochs
        assert len(scalars(events, "probe_by_length/3")) == epochs  # the probe, every epoch
        hparams = hparams_of(events)
        assert hparams["trial"] == trial.number and hparams["model.model_type"] == model_type
        assert hparams["train.learning_rate"] == pytest.approx(trial.params["train.learning_rate"])
        assert hparams["state"] == trial.state.name.lower()


def test_the_spec_key_turns_it_on_at_the_default_folder_and_never_changes_the_search(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, tensorboard=True)
    plan, _ = api.plan(spec, storage=f"sqlite:///{tmp_path}/s.db", artifacts=tmp_path / "ckpt")
    assert plan.tensorboard == str(Path("runs", "tensorboard", "tiny")) and (tmp_path / plan.tensorboard).is_dir()
    assert parse_spec(spec_dict(tensorboard=True)).fingerprint() == parse_spec(spec_dict()).fingerprint()
    assert parse_spec(spec_dict(tensorboard="elsewhere")).tensorboard == "elsewhere"
    assert parse_spec({**spec_dict(), "tensorboard": False}).tensorboard is None
    assert_spec_mistake(tmp_path, {"tensorboard": 3}, "tensorboard", "expected true, false or a folder")


def test_an_unwritable_tensorboard_folder_is_one_line_before_any_trial(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    line = assert_one_error_line(run_cli(tmp_path, write_spec(tmp_path), "--tensorboard", tmp_path / "file"))
    assert "cannot write TensorBoard runs to" in line
    assert not (tmp_path / "ckpt").exists()


def test_run_names_are_file_names():
    from sweep.run.trial import trial_run_name

    params = {"model.model_type": "lstm", "model.hidden_size": 128, "train.learning_rate": 0.0042345, "x.y": "a/b c"}
    assert trial_run_name(12, "lstm", params) == "trial-00012-lstm-hidden_size=128-learning_rate=0.00423-y=a_b_c"
