"""What a trial costs: training seconds and time to target, recorded for complete and pruned trials."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState
from sweep_helpers import run_spec, spec_dict

from digitsum.train import EpochResult, time_to_target
from sweep.store.records import StudyMeta, TrialRecord

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _history(values: list[float]) -> list[EpochResult]:
    return [EpochResult(i + 1, 1.0, 1.0, v, 0.2, 0.01, train_seconds=0.1 * (i + 1)) for i, v in enumerate(values)]


def test_time_to_target_is_the_first_epoch_at_or_above_it():
    history = _history([0.5, 0.9, 0.99, 0.95, 1.0])
    epoch, seconds = time_to_target(history, 0.99)
    assert epoch == 3 and seconds == pytest.approx(0.1 + 0.2 + 0.3)
    assert time_to_target(history, 1.0)[0] == 5
    assert time_to_target(history[:2], 0.99) is None


def test_every_trial_records_its_training_seconds_and_time_to_target(tmp_path):
    spec = spec_dict(n_trials=2, target=0.05, fixed={**spec_dict()["fixed"], "train.n_epochs": 3})
    study = run_spec(tmp_path, spec)
    assert StudyMeta.read(study).target == 0.05
    for trial in study.trials:
        record = TrialRecord.read(trial)
        assert record.epochs_run == 3 and trial.state == TrialState.COMPLETE
        assert 0 < record.train_seconds < record.seconds_per_epoch * record.epochs_run  # scoring is not training
        if record.epoch_to_target is None:
            assert record.seconds_to_target is None and max(trial.intermediate_values.values()) < 0.05
        else:
            first = min(e for e, v in trial.intermediate_values.items() if v >= 0.05)
            assert record.epoch_to_target == first
            assert 0 < record.seconds_to_target <= record.train_seconds
