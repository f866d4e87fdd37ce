"""sweep/store/copy.py and `sweep copy`: a study with its trials, study attributes, seed reruns and
checkpoints, from one storage and artifact store to another; the copy resumes with the same
fingerprint; refusals change nothing. Last, SQLite to the real PostgreSQL server, then 2 workers there."""

from __future__ import annotations

import datetime
import shutil
import sqlite3
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.exc import OperationalError

sys.path.insert(0, str(Path(__file__).parent))
from pg_server import postgres_server, why_unavailable
from sweep_helpers import (
    FINISHED,
    artifact_of,
    assert_one_error_line,
    invoke,
    load,
    run_cli,
    start_sweep,
    storage_url,
    trials,
    write_spec,
)

from sweep.store.records import RerunRecord, read_reruns, write_rerun

ARTIFACT_PREFIX = "artifacts:"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny study of 4 trials (in this process), with 2 seed reruns stored, a pruned trial added
    and a retry queued (WAITING): made once, copied into each test's folder by `source`."""
    folder = tmp_path_factory.mktemp("made")
    spec = write_spec(folder, n_trials=4)
    result = run_cli(folder, spec)
    assert result.exit_code == 0, result.stdout + result.stderr
    study = load(storage_url(folder), "tiny")
    for seed in (0, 1):
        write_rerun(study, RerunRecord(trial=0, seed=seed, value=0.5 + seed / 10, val_exact_match=0.5, epochs=2))
    first = study.trials[0]
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.PRUNED,
            params=first.params,
            distributions=first.distributions,
            intermediate_values={0: 0.125, 1: 0.25},
        )
    )
    study.enqueue_trial(first.params)
    return folder


@pytest.fixture
def source(made, tmp_path):
    """This test's own copy of the made study: its SQLite file (which records the artifact folder of
    `made`, so the tests pass --artifacts) and its artifact folder."""
    folder = tmp_path / "src"
    shutil.copytree(made, folder)  # the write-ahead log too: it holds the fixture's last writes
    return folder


def copy_cli(source: Path, to: str, *extra):
    return invoke("copy", "tiny", "--storage", storage_url(source), "--artifacts", source / "ckpt", "--to", to, *extra)


def snapshot(*folders: Path) -> dict:
    """Every table of every SQLite file and every file under the folders: what a refusal must leave alone."""
    seen: dict = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.suffix == ".db":
                with sqlite3.connect(path) as db:
                    seen[str(path)] = list(db.iterdump())
            elif path.is_file() and not path.name.endswith(("-wal", "-shm")):
                seen[str(path)] = path.read_bytes()
    return seen


def test_the_copy_carries_trials_attributes_reruns_and_checkpoints(source, tmp_path):
    dest = tmp_path / "dest"
    result = copy_cli(source, storage_url(dest))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "6 trials (4 complete, 1 pruned, 1 waiting), 2 seed rerun(s), 1 checkpoint(s)" in result.stdout, (
        result.stdout
    )
    original, copy = load(storage_url(source), "tiny"), load(storage_url(dest), "tiny")
    assert copy.directions == original.directions
    assert read_reruns(copy) == read_reruns(original)
    assert _study_system_attrs(copy) == _study_system_attrs(original)  # the metric names, optuna-dashboard's note
    assert copy.metric_names == original.metric_names
    assert copy.user_attrs == {**original.user_attrs, "artifacts": str(dest / "artifacts")}
    copied_ids = 0
    for before, after in zip(original.trials, copy.trials, strict=True):
        assert (after.number, after.state, after.params, after.values) == (
            before.number,
            before.state,
            before.params,
            before.values,
        )
        assert after.distributions == before.distributions
        assert after.intermediate_values == before.intermediate_values
        assert (after.datetime_start, after.datetime_complete) == (before.datetime_start, before.datetime_complete)
        assert after.system_attrs.keys() - _artifact_keys(after) == before.system_attrs.keys() - _artifact_keys(before)
        old, new = artifact_of(before), artifact_of(after)
        assert {k: v for k, v in after.user_attrs.items() if k != "artifact_id"} == {
            k: v for k, v in before.user_attrs.items() if k != "artifact_id"
        }
        if old and (source / "ckpt" / old).is_file():  # copied under a new id: the copy owns it
            copied_ids += 1
            assert new != old and (dest / "artifacts" / new).read_bytes() == (source / "ckpt" / old).read_bytes()
            assert _artifact_keys(after) == {ARTIFACT_PREFIX + new}
        else:  # removed when a better trial finished: the copy says the same
            assert new == old and _artifact_keys(after) == _artifact_keys(before)
    assert copied_ids == 1


def _study_system_attrs(study: optuna.Study) -> dict:
    return study._storage.get_study_system_attrs(study._study_id)


def _artifact_keys(trial) -> set[str]:
    return {key for key in trial.system_attrs if key.startswith(ARTIFACT_PREFIX)}


def test_the_copy_keeps_its_checkpoints_when_the_source_goes(source, tmp_path):
    """Copied under new ids, even into the same store: deleting the source takes none of the copy's."""
    dest = storage_url(tmp_path / "dest")
    assert copy_cli(source, dest, "--to-artifacts", source / "ckpt").exit_code == 0
    assert len(list((source / "ckpt").iterdir())) == 2
    removed = invoke("rm", "tiny", "--yes", "--storage", storage_url(source), "--artifacts", source / "ckpt")
    assert removed.exit_code == 0, removed.stderr
    downloaded = invoke("best", "tiny", "--storage", dest, "--download", tmp_path / "models")
    assert downloaded.exit_code == 0, downloaded.stdout + downloaded.stderr
    assert len(list((tmp_path / "models").glob("trial-*.pt"))) == 1


def test_the_copy_resumes_with_the_same_fingerprint(source, tmp_path):
    dest = storage_url(tmp_path / "dest")
    assert copy_cli(source, dest).exit_code == 0
    spec = Path(load(dest, "tiny").user_attrs["spec_path"])
    other = write_spec(tmp_path, "other.yaml", space={"model.hidden_size": {"low": 8, "high": 16}})
    refused = invoke("run", other, "--storage", dest, "--name", "tiny")
    assert "another metric, data or search space" in assert_one_error_line(refused)
    resumed = invoke("run", spec, "--storage", dest, "--trials", "7", "--threads", "1")
    assert resumed.exit_code == 0, resumed.stdout + resumed.stderr
    assert "5 of 7 trials finished" in resumed.stdout
    after = trials(dest, "tiny")
    assert sum(t.state in FINISHED for t in after) == 7 and [t.number for t in after] == list(range(len(after)))
    assert after[5].params == after[0].params  # the queued retry ran on the copy
    assert len(list((tmp_path / "dest" / "artifacts").iterdir())) >= 1  # the store the copy recorded
    assert len(trials(storage_url(source), "tiny")) == 6  # the source is as it was


REFUSALS = {
    "taken": "a study named 'tiny' is already in",
    "missing": "no study named 'nope'",
    "itself": "would be copied onto itself",
    "unreachable": "cannot open storage postgresql+psycopg://sweep:***@127.0.0.1:1/sweep",
    "bad name": "--to-name 'a b': a study name is",
    "running": "has 1 running trial(s) (5) whose worker may still be at work",
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_are_one_line_and_change_nothing(source, tmp_path, case):
    dest = tmp_path / "dest"
    assert copy_cli(source, storage_url(dest)).exit_code == 0
    args = {
        "taken": [storage_url(dest)],
        "itself": [storage_url(source)],
        "unreachable": ["postgresql+psycopg://sweep:secret@127.0.0.1:1/sweep"],
        "bad name": [storage_url(tmp_path / "other"), "--to-name", "a b"],
        "running": [storage_url(tmp_path / "other")],
    }
    if case == "running":  # a worker on it now (it took the queued trial): it started within the grace period
        load(storage_url(source), "tiny").ask()
    before = snapshot(source, tmp_path)
    if case == "missing":
        result = invoke("copy", "nope", "--storage", storage_url(source), "--to", storage_url(tmp_path / "other"))
    else:
        result = copy_cli(source, *args[case])
    line = assert_one_error_line(result)
    assert REFUSALS[case] in line and "secret" not in line
    assert snapshot(source, tmp_path) == before
    assert not (tmp_path / "other.db").exists()


def test_a_dead_workers_running_trial_is_copied_a_live_ones_refused(source, tmp_path, monkeypatch):
    """Live: a heartbeat (or, before the first, the start) within the grace period and one interval (40 s)."""
    storage = optuna.storages.RDBStorage(storage_url(source))
    study = optuna.load_study(study_name="tiny", storage=storage)
    an_hour_ago = datetime.datetime.now() - datetime.timedelta(hours=1)
    started = optuna.trial.create_trial(state=TrialState.WAITING)  # a template: Optuna stores its state as is
    started.state, started.datetime_start = TrialState.RUNNING, an_hour_ago
    trial_id = storage.create_new_trial(study._study_id, template_trial=started)
    storage.record_heartbeat(trial_id)  # an hour old, but it beat just now: its worker is alive
    assert "1 running trial(s) (6)" in assert_one_error_line(copy_cli(source, storage_url(tmp_path / "dest")))
    with storage.engine.begin() as connection:  # ... until its beats stop
        connection.exec_driver_sql("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-41 seconds')")
    result = copy_cli(source, storage_url(tmp_path / "dest"))
    assert result.exit_code == 0, result.stderr
    assert "1 running" in result.stdout and "fails them and runs them again" in result.stdout
    assert trials(storage_url(tmp_path / "dest"), "tiny")[6].state == TrialState.RUNNING
    storage.engine.dispose()
    # The copy's worker fails it and runs it again (short heartbeats: a grace period of 1 s).
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "1")
    spec = load(storage_url(source), "tiny").user_attrs["spec_path"]
    resumed = invoke("run", spec, "--storage", storage_url(tmp_path / "dest"), "--trials", "7", "--threads", "1")
    assert resumed.exit_code == 0, resumed.stdout + resumed.stderr
    after = trials(storage_url(tmp_path / "dest"), "tiny")
    assert after[6].state == TrialState.FAIL and not [t for t in after if t.state == TrialState.RUNNING]
    assert [t.number for t in after if t.system_attrs.get("failed_trial") == 6] != []


@pytest.mark.parametrize("fails", ["checkpoint", "database"])
def test_a_copy_that_fails_midway_is_taken_back(source, tmp_path, monkeypatch, fails):
    from sweep.store import copy as copy_module

    if fails == "database":  # trials 0-2 are stored, then the database fails
        copied_trial = copy_module.copied_trial
        monkeypatch.setattr(copy_module, "copied_trial", lambda t, ids: _fail_at_3(t, ids, copied_trial))
    else:  # the destination's disk is full
        monkeypatch.setattr(copy_module, "open_store", lambda location, create: _FullStore())
    dest = tmp_path / "dest"
    before = snapshot(source)
    line = assert_one_error_line(copy_cli(source, storage_url(dest)))
    assert "(the partial copy was deleted: nothing is left at sqlite:///" in line
    assert ("database is locked" if fails == "database" else "No space left on device") in line
    assert optuna.get_all_study_names(storage_url(dest)) == []
    assert not list(dest.glob("artifacts/*"))
    assert snapshot(source) == before


def _fail_at_3(trial, new_ids, copied_trial):
    if trial.number == 3:
        raise OperationalError("INSERT", {}, Exception("database is locked"))
    return copied_trial(trial, new_ids)


class _FullStore:
    """A destination store with no room left."""

    def write(self, artifact_id, body):
        raise OSError(28, "No space left on device")

    def remove(self, artifact_id):
        pass


# ---------------------------------------------------------------------------------------------
# The real PostgreSQL server: a laptop's SQLite study copied there, then carried on by 2 workers.


@pytest.fixture(scope="module")
def server():
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as pg:
        yield pg


@pytest.mark.processes
def test_sqlite_to_postgresql_then_two_more_workers_then_a_report(source, tmp_path, server):
    spec = Path(load(storage_url(source), "tiny").user_attrs["spec_path"])
    shared = tmp_path / "shared"  # the artifact folder every machine of the copy mounts
    copied = copy_cli(source, server.url, "--to-artifacts", shared)
    assert copied.exit_code == 0, copied.stdout + copied.stderr
    assert server.password not in copied.stdout
    machines = [tmp_path / "machine-1", tmp_path / "machine-2"]
    workers = []
    for machine in machines:
        machine.mkdir()
        workers.append(start_sweep(machine, "run", spec, "--storage", server.url, "--trials", 9, "--threads", 1))
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, out + err
        assert "Traceback" not in out + err
    after = trials(server.url, "tiny")
    assert sum(t.state in FINISHED for t in after) == 9
    assert [t.number for t in after] == list(range(len(after)))
    assert not [t for t in after if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    original = trials(storage_url(source), "tiny")
    assert [(t.params, t.values) for t in after[:5]] == [(t.params, t.values) for t in original[:5]]
    assert after[5].params == after[0].params  # the retry queued on the laptop ran on the copy
    report = invoke("report", "tiny", "--storage", server.url, "--out", tmp_path / "tiny.html")
    assert report.exit_code == 0, report.stdout + report.stderr
    listed = invoke("ls", "--storage", server.url)
    assert listed.exit_code == 0, listed.stderr
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith("tiny "))
    assert int(row[1]) + int(row[2]) == 9, listed.stdout  # complete + pruned: every trial counted
    best = invoke("best", "tiny", "--storage", server.url, "--download", tmp_path / "models")
    assert best.exit_code == 0, best.stdout + best.stderr
