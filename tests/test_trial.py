"""sweep.run.trial: one trial = one fit; user attributes, checkpoints, pruning, divergence, failures."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from sweep_helpers import artifact_of, checkpoint_dir, run_spec, spec_dict, stored_checkpoints

from digitsum.checkpoint import load_checkpoint
from digitsum.data import encode, make_rows
from digitsum.decode import Accuracy, answers_to_numbers, greedy_decode
from digitsum.errors import UsageError
from digitsum.model import DigitSumModel, count_parameters
from digitsum.train import EpochResult, FitResult
from sweep.run.outcome import trial_value
from sweep.run.trial import retrain, stored_base_config
from sweep.spec import Metric, ValueFrom, parse_spec
from sweep.spec.objectives import best_trial

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


# ---------------------------------------------------------------------------------------------
# User attributes and checkpoints


PROBE_SPEC = spec_dict(n_trials=3, data={"lengths": [1, 2], "val_fraction": 0.2, "probe_lengths": [3]})


@pytest.fixture(scope="module")
def probe_study(tmp_path_factory):
    """Three finished trials with a length-3 probe, checkpoints kept for the best only."""
    folder = tmp_path_factory.mktemp("probe")
    return run_spec(folder, PROBE_SPEC), folder


def test_user_attrs_of_finished_trials(probe_study):
    study, folder = probe_study
    assert states(study) == ["COMPLETE"] * 3
    parsed = parse_spec(PROBE_SPEC)
    for trial in study.trials:
        attrs = trial.user_attrs
        model = DigitSumModel(parsed.config_for(trial.params).model)
        assert attrs["n_parameters"] == count_parameters(model) > 0
        assert attrs["seconds_per_epoch"] > 0
        assert attrs["epochs_run"] == 2 == len(trial.intermediate_values)
        assert attrs["model_type"] == trial.params["model.model_type"]
        assert 1 <= attrs["best_epoch"] <= 2
        assert attrs["val_exact_match"] == trial.value  # value: best, metric: val_exact_match
        assert 0.0 <= attrs["probe_exact_match"] <= 1.0
        assert set(attrs["probe_by_length"]) == {"3"}
        # trained on lengths 1-2 (sums 0-18): 835 of the 1,000 three-digit strings are in range, so
        # the overall score is at least 0.835 x the in-range score (rows out of range add, never take)
        assert set(attrs["probe_in_range_by_length"]) == {"3"}
        assert 0.0 <= attrs["probe_in_range_exact_match"] <= 1.0
        assert attrs["probe_exact_match"] >= 0.835 * attrs["probe_in_range_exact_match"] - 1e-9
        assert "checkpoint" not in attrs  # the path of studies made before artifacts
        assert attrs["worker"].endswith(f":{os.getpid()}")  # host:pid; the worker is this process
        # the split is stratified by (length, sum): the ten 1-digit rows are all single groups, in training
        assert set(attrs["val_by_length"]) == {"2"}


def test_keep_best_checkpoint_only(probe_study):
    study, folder = probe_study
    best = best_trial(study)
    kept = stored_checkpoints(folder)
    assert [p.name for p in kept] == [artifact_of(best)]  # an artifact is a file named by its id
    (meta,) = optuna.artifacts.get_all_artifact_meta(best, storage=study._storage)
    assert meta.filename == f"trial-{best.number:05d}.pt"  # the name optuna-dashboard offers
    model, payload = load_checkpoint(kept[0])
    probe = make_rows([3])  # the spec's probe: every 3-digit string; training saw every sum 0-18
    right = answers_to_numbers(greedy_decode(model, encode(probe))) == probe.y
    assert best.user_attrs["probe_exact_match"] == pytest.approx(float(right.mean()))
    assert best.user_attrs["probe_in_range_exact_match"] == pytest.approx(float(right[probe.y <= 18].mean()))
    assert payload["metrics"]["val_exact_match"] == best.user_attrs["val_exact_match"]
    assert payload["metrics"]["epoch"] == best.user_attrs["best_epoch"]
    assert model.config.hidden_size == best.params["model.hidden_size"]
    assert not list((folder / "ckpt").rglob("*.tmp"))


def test_keep_all_checkpoints(tmp_path):
    study = run_spec(tmp_path, spec_dict(n_trials=3, keep_checkpoints="all"))
    paths = [Path(checkpoint_dir(tmp_path), artifact_of(t)) for t in study.trials]
    assert len(set(paths)) == 3 and sorted(paths) == stored_checkpoints(tmp_path)
    for trial, path in zip(study.trials, paths, strict=True):
        model, payload = load_checkpoint(path)
        assert payload["config"]["model"]["model_type"] == trial.params["model.model_type"]
        assert payload["metrics"]["val_exact_match"] == trial.user_attrs["val_exact_match"]
        assert "probe_exact_match" not in trial.user_attrs  # no probe_lengths in this spec


def test_probe_metric_is_the_value(tmp_path):
    spec = spec_dict(
        n_trials=2,
        metric="probe_exact_match",
        data={"lengths": [1, 2], "val_fraction": 0.2, "probe_lengths": [3], "probe_sample": 200},
    )
    study = run_spec(tmp_path, spec)
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        # the value is the probe at the best validation epoch; the attribute re-measures that model
        assert trial.value == pytest.approx(trial.user_attrs["probe_exact_match"])
        assert trial.intermediate_values[trial.user_attrs["best_epoch"]] == trial.value
    assert study.user_attrs["metric"] == "probe_exact_match"


@pytest.mark.parametrize(
    ("metric", "recorded"),
    [
        ("probe_in_range_exact_match", lambda a: a["probe_in_range_exact_match"]),
        ("probe_in_range_longest", lambda a: a["probe_in_range_by_length"]["4"]),
    ],
)
def test_in_range_probe_metrics_are_the_value(tmp_path, metric, recorded):
    spec = spec_dict(
        n_trials=2,
        metric=metric,
        data={"lengths": [1, 2], "val_fraction": 0.2, "probe_lengths": [3, 4], "probe_sample": 300},
    )
    study = run_spec(tmp_path, spec)
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        # the probe rows whose sum occurs in training (0-18 for lengths 1-2), re-measured after training
        assert trial.value == pytest.approx(recorded(trial.user_attrs))
        assert trial.intermediate_values[trial.user_attrs["best_epoch"]] == trial.value
    assert study.user_attrs["metric"] == metric


def _fit_result(values: list[float], best_epoch: int) -> FitResult:
    history = [
        EpochResult(i + 1, 1.0, 1.0, v, 0.1, 0.01, probe=Accuracy(v / 2, 1, {}, {})) for i, v in enumerate(values)
    ]
    return FitResult(DigitSumModel.__new__(DigitSumModel), history, best_epoch, values[best_epoch - 1], 10)


def test_trial_value_best_or_last():
    fitted = _fit_result([0.1, 0.5, 0.3], best_epoch=2)
    assert trial_value(fitted, Metric.VAL_EXACT_MATCH, ValueFrom.BEST) == 0.5
    assert trial_value(fitted, Metric.VAL_EXACT_MATCH, ValueFrom.LAST) == 0.3
    assert trial_value(fitted, Metric.PROBE_EXACT_MATCH, ValueFrom.BEST) == 0.25
    assert trial_value(fitted, Metric.PROBE_EXACT_MATCH, ValueFrom.LAST) == 0.15


def test_value_last(tmp_path):
    study = run_spec(tmp_path, spec_dict(n_trials=2, value="last", fixed={**spec_dict()["fixed"], "train.n_epochs": 3}))
    for trial in study.trials:
        assert trial.value == trial.intermediate_values[3]


# ---------------------------------------------------------------------------------------------
# Pruning


PRUNE_SPEC = spec_dict(
    n_trials=3,
    fixed={
        "train.n_epochs": 3,
        "train.device": "cpu",
        "train.batch_size": 8,
        "train.lr_schedule": "constant",
        "model.model_type": "gru",
        "model.hidden_size": 16,
    },
    pruner={"type": "percentile", "percentile": 99.0, "n_startup_trials": 1},
    space={"train.learning_rate": {"low": 1.0e-4, "high": 0.1, "log": True}},
)
GOOD, BAD = {"train.learning_rate": 0.1}, {"train.learning_rate": 1.0e-4}


def test_pruned_trials_stop_early(tmp_path):
    # The good rate reaches a nonzero exact match by epoch 2; the tiny one stays at 0 and is cut.
    study = run_spec(tmp_path, PRUNE_SPEC, enqueue=[GOOD, BAD, BAD])
    assert states(study) == ["COMPLETE", "PRUNED", "PRUNED"]
    good = study.trials[0]
    assert max(good.intermediate_values.values()) > 0
    for trial in study.trials[1:]:
        epochs = trial.user_attrs["epochs_run"]
        assert epochs < 3
        assert len(trial.intermediate_values) == epochs
        assert trial.user_attrs["seconds_per_epoch"] > 0
        assert "n_parameters" not in trial.user_attrs  # set only when training finished
        assert artifact_of(trial) is None  # pruned: never stored (keep_checkpoints: best)
    assert stored_checkpoints(tmp_path) == [Path(checkpoint_dir(tmp_path), artifact_of(good))]


# ---------------------------------------------------------------------------------------------
# Divergence and failures


# A learning rate of 10 (the largest config allows) alone does not diverge (AdamW's step is bounded by the rate,
# and tanh/sigmoid cells saturate), but AdamW's decoupled weight decay multiplies every weight by
# (1 - lr * wd) = -9989 per step at the largest allowed values: the weights overflow within the
# first epoch and the loss is NaN.
def test_diverged_trials_are_pruned_with_a_reason_and_the_study_goes_on(tmp_path):
    spec = spec_dict(
        n_trials=4,
        fixed={**spec_dict()["fixed"], "train.learning_rate": 10.0, "train.batch_size": 4, "train.n_epochs": 3},
        space={
            "model.model_type": {"choices": ["rnn", "lstm", "gru"]},
            "train.weight_decay": {"choices": [0.0, 999.0]},
        },
    )
    first = [{"model.model_type": kind, "train.weight_decay": 999.0} for kind in ("rnn", "lstm", "gru")]
    study = run_spec(tmp_path, spec, enqueue=[*first, {"model.model_type": "rnn", "train.weight_decay": 0.0}])
    assert states(study) == ["PRUNED", "PRUNED", "PRUNED", "COMPLETE"]
    for diverged in study.trials[:3]:
        reason = diverged.user_attrs["pruned_reason"]
        assert reason.startswith("diverged: training loss is nan at epoch 1"), reason
        assert "learning_rate" in reason
        assert diverged.value is None
        assert "epochs_run" in diverged.user_attrs
    assert study.trials[3].value is not None


NO_MPS = not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _failing_spec() -> dict:
    # train.device=mps passes the config check but fails inside the trial on a machine without MPS
    # (torch raises RuntimeError when the model is moved there): a real, non-usage exception.
    return spec_dict(
        n_trials=2,
        fixed={k: v for k, v in spec_dict()["fixed"].items() if k != "train.device"},
        space={"train.device": {"choices": ["cpu", "mps"]}, "model.hidden_size": {"low": 8, "high": 16}},
    )


@pytest.mark.skipif(not NO_MPS, reason="needs a machine without MPS")
def test_failing_trial_does_not_stop_the_study(tmp_path):
    study = run_spec(
        tmp_path,
        _failing_spec(),
        enqueue=[{"train.device": "mps", "model.hidden_size": 8}, {"train.device": "cpu", "model.hidden_size": 8}],
    )
    assert states(study)[:2] == ["FAIL", "COMPLETE"]
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 2  # the total counts finished trials only
    assert artifact_of(study.trials[0]) is None


@pytest.mark.skipif(not NO_MPS, reason="needs a machine without MPS")
def test_failing_trial_records_its_reason(tmp_path):
    from digitsum.device import resolve_device
    from digitsum.errors import ConfigError

    try:
        resolve_device("mps")
        pytest.skip("this machine can use MPS")
    except ConfigError as error:
        message = str(error)
    study = run_spec(tmp_path, _failing_spec(), enqueue=[{"train.device": "mps", "model.hidden_size": 8}], n_trials=1)
    failed = study.trials[0]
    assert failed.state == TrialState.FAIL
    attrs = {**failed.user_attrs, **{k: v for k, v in failed.system_attrs.items() if k != "fixed_params"}}
    assert any(message[:30] in str(value) for value in attrs.values()), attrs


# ---------------------------------------------------------------------------------------------
# rerun


def test_rerun_reproduces_the_stored_value(probe_study):
    study, _ = probe_study
    for trial in study.trials[:2]:
        (result,) = retrain(study, trial.number, num_threads=1)
        assert result["value"] == trial.value
        assert result["val_exact_match"] == trial.user_attrs["val_exact_match"]
        assert result["probe_exact_match"] == trial.user_attrs["probe_exact_match"]
        assert result["epochs"] == trial.user_attrs["epochs_run"]
        assert result["seed"] == 0


def test_rerun_with_seeds(probe_study):
    study, _ = probe_study
    results = retrain(study, 0, seeds=[0, 5], num_threads=1)
    assert [r["seed"] for r in results] == [0, 5]
    assert results[0]["value"] == study.trials[0].value


def test_rerun_of_a_study_made_before_the_fused_step_trains_through_nn_lstm(tmp_path):
    """A stored config without train.fused comes from before the fused step: rerun it the old way."""
    spec = spec_dict(
        n_trials=1,
        fixed={"train.n_epochs": 2, "train.seed": 0, "train.fused": False},
        space={"model.model_type": {"choices": ["lstm"]}, "model.hidden_size": {"choices": [8]}},
    )
    study = run_spec(tmp_path, spec)
    old = copy.deepcopy(study.user_attrs["base_config"])
    assert old["train"]["fused"] is False
    del old["train"]["fused"]  # as a study made before the option existed stores it
    study.set_user_attr("base_config", old)
    (result,) = retrain(study, 0, num_threads=1)
    assert result["value"] == study.trials[0].value
    assert stored_base_config(old)["train"]["fused"] is False
    assert stored_base_config({"train": {"fused": True}})["train"]["fused"] is True


def test_rerun_unknown_trial(probe_study):
    study, _ = probe_study
    with pytest.raises(UsageError, match="has no trial 9"):
        retrain(study, 9)


def test_rerun_of_a_foreign_study(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/f.db", study_name="foreign")
    study.add_trial(optuna.trial.create_trial(value=1.0, params={}, distributions={}))
    with pytest.raises(UsageError, match="not made by `sweep run`"):
        retrain(study, 0)


def test_in_range_probe_as_one_of_several_objectives(tmp_path):
    spec = spec_dict(
        n_trials=2,
        objectives=[{"metric": "probe_in_range_longest"}, {"metric": "n_parameters"}],
        data={"lengths": [1, 2], "val_fraction": 0.2, "probe_lengths": [3, 4], "probe_sample": 300},
    )
    study = run_spec(tmp_path, spec)
    assert study.metric_names == ["probe_in_range_longest", "n_parameters"]
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        assert trial.values[0] == pytest.approx(trial.user_attrs["probe_in_range_by_length"]["4"])
        assert trial.values[1] == trial.user_attrs["n_parameters"]


def test_a_probe_metric_as_a_constraint_only(tmp_path):
    """Neither the metric nor an objective: the probe is still scored, and the bound set on the trial."""
    spec = spec_dict(
        n_trials=1,
        constraints={"probe_in_range_exact_match": {"min": 0.0}},
        data={"lengths": [1, 2], "val_fraction": 0.2, "probe_lengths": [3], "probe_sample": 200},
    )
    (trial,) = run_spec(tmp_path, spec).trials
    assert trial.state == TrialState.COMPLETE
    score = trial.user_attrs["probe_in_range_exact_match"]
    assert trial.constraints == {"probe_in_range_exact_match >= 0": pytest.approx(-score)}
