"""sweep.store.records: every stored key defined once, and studies stored by older code still load.

`tests/fixtures/legacy-study.db` was written by the code of commit 46f142d (before this module):
4 trials (2 complete, 2 pruned), a probe, and the best trial's checkpoint under `ckpt/`.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_helpers import invoke

from digitsum.lengths import Probe
from sweep.store.records import TRIAL_KEYS, StudyMeta, TrialRecord, model_type, write_trial

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def legacy(tmp_path, monkeypatch):
    """A copy of the fixture study in tmp_path, run from there (its checkpoint path is relative)."""
    shutil.copy(FIXTURES / "legacy-study.db", tmp_path)
    shutil.copy(FIXTURES / "legacy-study.yaml", tmp_path)
    shutil.copytree(FIXTURES / "ckpt", tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path)
    return tmp_path, "sqlite:///legacy-study.db"


def _study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="legacy", storage=url)


def test_the_records_cover_every_key_the_old_code_stored(legacy):
    _, url = legacy
    study = _study(url)
    assert set(study.user_attrs) <= {f.name for f in dataclasses.fields(StudyMeta)}
    for trial in study.trials:
        assert set(trial.user_attrs) <= TRIAL_KEYS, trial.number


def test_the_old_study_reads_back_with_its_values(legacy):
    _, url = legacy
    study = _study(url)
    meta = StudyMeta.read(study)
    assert (meta.metric, meta.value_from, meta.spec_path) == ("val_exact_match", "best", "legacy-study.yaml")
    assert meta.probe == Probe((3,), 200)
    assert meta.base_config is not None and meta.base_config["train"]["lengths"] == "1,2"
    assert meta.fingerprint is not None and not meta.fingerprint.startswith("v2:")
    best = TrialRecord.read(study.best_trial)
    assert best.checkpoint == "ckpt/legacy/trial-00001.pt" and Path(best.checkpoint).is_file()
    assert best.model_type == model_type(study.best_trial) == "rnn"
    assert best.n_parameters and best.n_parameters > 0 and best.epochs_run == 4
    assert best.probe_by_length == {"3": best.probe_exact_match}
    pruned = [TrialRecord.read(t) for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(r.epochs_run > 0 and r.probe_exact_match is None for r in pruned)


def test_the_old_study_resumes_then_takes_equivalent_spellings(legacy):
    folder, url = legacy
    result = invoke("run", "legacy-study.yaml", "--storage", url, "--artifacts", "ckpt", "--trials", 5, "--threads", 1)
    assert result.exit_code == 0, result.output
    assert "4 of 5 trials finished" in result.output
    study = _study(url)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 5
    assert StudyMeta.read(study).fingerprint.startswith("v2:")  # upgraded once it matched the old one
    respelled = (folder / "legacy-study.yaml").read_text().replace("lengths: [1, 2]", "lengths: 1-2")
    respelled = respelled.replace("val_fraction: 0.2", "val_fraction: 0.20000")
    (folder / "respelled.yaml").write_text(respelled)
    result = invoke("run", "respelled.yaml", "--storage", url, "--artifacts", "ckpt", "--trials", 6, "--threads", 1)
    assert result.exit_code == 0, result.output
    changed = respelled.replace("model.hidden_size: {low: 8, high: 16}", "model.hidden_size: {low: 8, high: 32}")
    (folder / "changed.yaml").write_text(changed)
    result = invoke("run", "changed.yaml", "--storage", url, "--artifacts", "ckpt", "--trials", 7)
    assert result.exit_code == 2 and "another metric, data or search space" in result.stderr
    assert len(_study(url).trials) == 6  # refused before any trial


def test_the_old_study_reports_with_its_error_analysis(legacy):
    folder, url = legacy
    result = invoke("report", "legacy", "--storage", url, "--out", folder / "r.html")
    assert result.exit_code == 0, (result.output, result.exception)
    page = (folder / "r.html").read_text()
    assert "Error analysis of the best model" in page
    assert re.search(
        r"The best trial, 1 of legacy \(rnn\), decoded on its validation rows and on the probe: [\d,]+ wrong of", page
    )


def test_the_old_study_reruns_its_best_trial(legacy):
    _, url = legacy
    result = invoke("rerun", "legacy", "1", "--storage", url, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    import json

    summary = json.loads(result.stdout)
    stored = _study(url).trials[1]
    assert summary["stored_value"] == stored.value
    # The same config, seed and thread count on the same code path (torch.nn.RNN): the same model,
    # up to float rounding on another CPU, which can flip at most one of the 22 validation rows.
    assert abs(summary["runs"][0]["value"] - stored.value) <= 1 / 22 + 1e-9
    assert summary["runs"][0]["probe_exact_match"] is not None


def test_write_trial_refuses_a_key_that_is_not_a_field():
    study = optuna.create_study()
    trial = study.ask()
    write_trial(trial, model_type="gru", epochs_run=3)
    assert study.trials[0].user_attrs == {"model_type": "gru", "epochs_run": 3}
    with pytest.raises(KeyError, match="modeltype"):
        write_trial(trial, modeltype="gru")


def test_a_study_not_made_by_sweep_reads_as_the_defaults():
    study = optuna.create_study()
    assert StudyMeta.read(study) == StudyMeta()
    trial = study.ask()
    study.tell(trial, 0.5)
    assert TrialRecord.read(study.trials[0]) == TrialRecord()
    assert model_type(study.trials[0]) == "?"


@pytest.mark.parametrize("package", ["sweep", "digitsum"])
def test_only_records_touches_user_attributes(package):
    for path in sorted((REPO / package).rglob("*.py")):
        if path.name == "records.py":
            continue
        text = path.read_text()
        if path.name == "queries.py":  # read_trials rebuilds Optuna's FrozenTrials: every attribute, none by name
            text = text.replace("user_attrs={k: json.loads(v) for k, v in", "")
        assert "user_attr" not in text, f"{path.name} reads or writes user attributes; use sweep/store/records.py"
        assert not re.search(r"state\.name\s*(==|!=|in)", text), f"{path.name} compares a state by name; use TrialState"
