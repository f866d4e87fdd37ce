"""sweep.store.storage: URLs -> Optuna storages; errors never show a password."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage, RDBStorage
from optuna.trial import TrialState
from sweep_helpers import FINISHED, assert_one_error_line, invoke, run_cli, write_spec

from sweep.store import queries
from sweep.store import storage as st
from sweep.store.storage import StorageError, default_url, journal_path, load_study, open_storage, safe_url, study_names

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

HAS_PSYCOPG = importlib.util.find_spec("psycopg") is not None


def closed_port() -> int:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# URLs


def test_default_storage_is_the_nearest_studies_folder_upwards(monkeypatch, tmp_path):
    monkeypatch.delenv("SWEEP_STORAGE", raising=False)
    (tmp_path / "studies").mkdir()
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")  # a user who cd'd into a subfolder keeps the same studies
    assert default_url() == f"sqlite:///{tmp_path.resolve()}/studies/sweep.db"
    assert st.default_checkpoints() == tmp_path.resolve() / "studies" / "checkpoints"


def test_default_storage_outside_a_project_is_per_user(monkeypatch, tmp_path):
    monkeypatch.delenv("SWEEP_STORAGE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir("/")  # no studies/ at or above it
    assert default_url() == f"sqlite:///{tmp_path}/data/digitsum-sweep/sweep.db"


def test_read_only_commands_refuse_a_storage_file_that_is_not_there(monkeypatch, tmp_path):
    monkeypatch.delenv("SWEEP_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    for url in (f"sqlite:///{tmp_path}/typo.db", f"journal:{tmp_path}/typo.log"):
        with pytest.raises(StorageError, match=r"no storage at .*typo\.\w+ \(from --storage\)"):
            st.require_existing(url)
    assert list(tmp_path.iterdir()) == []  # nothing was created
    st.require_existing("postgresql+psycopg://u:p@127.0.0.1:1/db")  # a server's database: opening tells


def test_default_url_uses_sweep_storage(monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEP_STORAGE", f"sqlite:///{tmp_path}/env.db")
    assert default_url() == f"sqlite:///{tmp_path}/env.db"


def test_empty_sweep_storage_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEP_STORAGE", "")
    (tmp_path / "studies").mkdir()
    monkeypatch.chdir(tmp_path)
    assert default_url() == f"sqlite:///{tmp_path.resolve()}/studies/sweep.db"


def test_safe_url_hides_the_password():
    shown = safe_url("postgresql+psycopg://u:secret@127.0.0.1:1/db")
    assert "secret" not in shown
    assert shown == "postgresql+psycopg://u:***@127.0.0.1:1/db"


def test_safe_url_leaves_urls_without_passwords():
    assert safe_url("sqlite:///studies/sweep.db") == "sqlite:///studies/sweep.db"
    assert safe_url("journal:studies/sweep.log") == "journal:studies/sweep.log"


def test_safe_url_of_garbage_shows_nothing_of_it():
    shown = safe_url("postgresql+psycopg://u:secret@host:notaport/db")
    assert "secret" not in shown


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("journal:studies/a.log", Path("studies/a.log")),
        ("journal:///tmp/a.log", Path("/tmp/a.log")),
        ("studies/a.log", Path("studies/a.log")),
        ("a.jsonl", Path("a.jsonl")),
        ("sqlite:///a.db", None),
        ("studies/a.db", None),
    ],
)
def test_journal_path(url, expected):
    assert journal_path(url) == expected


# ---------------------------------------------------------------------------------------------
# Opening


def test_open_sqlite_creates_the_folder_and_heartbeats(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/deep/er/s.db")
    assert isinstance(storage, RDBStorage)
    assert (tmp_path / "deep" / "er" / "s.db").is_file()
    assert storage.get_heartbeat_interval() == st.heartbeat_settings().interval
    assert storage.get_heartbeat_stale_trial_callback() is not None
    assert open_storage(f"sqlite:///{tmp_path}/deep/er/s.db", heartbeat=False).get_heartbeat_interval() is None


def test_heartbeat_settings_are_read_when_a_storage_is_opened(monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "7")
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "21")
    assert st.heartbeat_settings() == st.Heartbeats(7, 21)
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    assert storage.get_heartbeat_interval() == 7
    monkeypatch.setenv("SWEEP_GRACE_PERIOD", "soon")
    with pytest.raises(StorageError, match="whole seconds"):
        open_storage(f"sqlite:///{tmp_path}/s.db")


def test_open_storage_uses_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEP_STORAGE", f"sqlite:///{tmp_path}/env.db")
    open_storage()
    assert (tmp_path / "env.db").is_file()


def test_open_journal(tmp_path):
    storage = open_storage(f"journal:{tmp_path}/j/s.log")
    assert isinstance(storage, JournalStorage)
    optuna.create_study(storage=storage, study_name="j")
    assert study_names(open_storage(f"journal:{tmp_path}/j/s.log")) == ["j"]


@pytest.mark.parametrize("url", ["not a url", "studies/sweep.db"])
def test_not_a_url(url):
    with pytest.raises(StorageError, match="is not a URL"):
        open_storage(url)


def test_unknown_scheme():
    with pytest.raises(StorageError, match="cannot open storage"):
        open_storage("nosuchdb://u:secret@localhost/db")


def test_sqlite_under_a_file_is_a_storage_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError):
        open_storage(f"sqlite:///{tmp_path}/afile/s.db")


def test_unparsable_postgres_url_hides_the_password():
    with pytest.raises(StorageError) as caught:
        open_storage("postgresql+psycopg://u:secret@127.0.0.1:notaport/db")
    assert "secret" not in str(caught.value)


@pytest.mark.skipif(not HAS_PSYCOPG, reason="psycopg is not installed (pip install -e .[postgres])")
def test_unreachable_postgres_hides_the_password():
    url = f"postgresql+psycopg://u:secret@127.0.0.1:{closed_port()}/db"
    with pytest.raises(StorageError, match="cannot open storage") as caught:
        open_storage(url)
    assert "secret" not in str(caught.value)
    assert "u:***@127.0.0.1" in str(caught.value)


@pytest.mark.skipif(not HAS_PSYCOPG, reason="psycopg is not installed (pip install -e .[postgres])")
def test_unreachable_postgres_hides_an_escaped_password():
    url = f"postgresql+psycopg://u:p%40ss%3Aword@127.0.0.1:{closed_port()}/db"
    with pytest.raises(StorageError) as caught:
        open_storage(url)
    assert "p%40ss" not in str(caught.value) and "p@ss" not in str(caught.value)


@pytest.mark.skipif(HAS_PSYCOPG, reason="psycopg is installed; the unreachable-server test covers this")
def test_postgres_without_its_driver_hides_the_password():
    url = f"postgresql+psycopg://u:secret@127.0.0.1:{closed_port()}/db"
    with pytest.raises(StorageError, match="psycopg") as caught:
        open_storage(url)
    assert "secret" not in str(caught.value)
    assert "pip install" in str(caught.value)


def test_cli_storage_error_is_one_line_without_the_password(tmp_path):
    url = f"postgresql+psycopg://u:secret@127.0.0.1:{closed_port()}/db"
    line = assert_one_error_line(invoke("ls", "--storage", url))
    assert "secret" not in line
    line = assert_one_error_line(invoke("ls", "--storage", "not a url"))
    assert "not a URL" in line


# ---------------------------------------------------------------------------------------------
# Studies


def test_load_study_unknown_name_lists_known(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(StorageError, match="none yet"):
        load_study("nope", storage)
    optuna.create_study(storage=storage, study_name="alpha")
    optuna.create_study(storage=storage, study_name="beta")
    with pytest.raises(StorageError, match=r"no study named 'nope'.*studies: alpha, beta"):
        load_study("nope", storage)
    assert load_study("beta", storage).study_name == "beta"


def test_journal_end_to_end(tmp_path):
    url = f"journal:{tmp_path}/j.log"
    result = run_cli(tmp_path, write_spec(tmp_path), "--trials", "2", storage=url)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "j.log").is_file()
    study = optuna.load_study(
        study_name="tiny", storage=JournalStorage(optuna.storages.journal.JournalFileBackend(f"{tmp_path}/j.log"))
    )
    assert sum(t.state in FINISHED for t in study.trials) == 2
    listed = invoke("ls", "--storage", url)
    assert listed.exit_code == 0 and "tiny" in listed.stdout
    best = invoke("best", "tiny", "--storage", url)
    assert best.exit_code == 0 and "best of 'tiny'" in best.stdout


def test_sweep_storage_environment_reaches_the_cli(monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEP_STORAGE", f"sqlite:///{tmp_path}/env.db")
    optuna.create_study(storage=f"sqlite:///{tmp_path}/env.db", study_name="from-env")
    listed = invoke("ls")
    assert listed.exit_code == 0, listed.stderr
    assert "from-env" in listed.stdout


# ---------------------------------------------------------------------------------------------
# Reading whole studies without Optuna's per-row objects: the same trials, the same counts


def _varied_study(storage) -> optuna.Study:
    """Every kind of stored value: each distribution, inf/nan values, attributes, every state."""
    study = optuna.create_study(storage=storage, study_name="varied", directions=["maximize", "minimize"])
    for number in range(12):
        trial = study.ask()
        trial.suggest_categorical("cell", ["rnn", "lstm", "gru"])
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_int("hidden", 8, 64, step=8)
        trial.set_user_attr("curve", [0.1, 0.5, number / 12])
        trial.set_user_attr("note", None if number % 2 else "odd")
        trial.set_constraint("size", float(number % 3 - 1))
        for step, value in enumerate([0.2, float("nan"), float("inf"), 0.9]):
            trial.report(value, step) if len(study.directions) == 1 else None
        state = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL][number % 3]
        if number == 11:
            continue  # stays RUNNING
        if state == TrialState.COMPLETE:
            study.tell(trial, [float("inf") if number == 3 else number / 10, float("-inf") if number == 6 else 1.0])
        else:
            study.tell(trial, state=state)
    study.enqueue_trial({"cell": "gru"})  # WAITING
    return study


@pytest.fixture(params=["sqlite", "journal"])
def varied(request, tmp_path):
    if request.param == "sqlite":
        return _varied_study(RDBStorage(f"sqlite:///{tmp_path / 'v.db'}"))
    from optuna.storages.journal import JournalFileBackend

    return _varied_study(JournalStorage(JournalFileBackend(str(tmp_path / "v.log"))))


def test_read_trials_gives_what_optuna_gives(varied):
    # FrozenTrial equality compares every field: params, distributions, values, attributes, times
    fresh = optuna.load_study(study_name="varied", storage=varied._storage)
    expected = fresh.get_trials(deepcopy=False)
    got = queries.read_trials(varied)
    assert [t.number for t in got] == list(range(13))
    for mine, theirs in zip(got, expected, strict=True):
        assert mine == theirs, (mine, theirs)
        assert mine._trial_id == theirs._trial_id


def test_trial_counts_and_best_value_match_a_full_read(varied):
    backend = st.rdb_of(varied) or varied._storage
    counts = queries.trial_counts(backend, varied._study_id)
    for state in TrialState:
        assert counts[state] == len(varied.get_trials(deepcopy=False, states=(state,))), state
    one = optuna.create_study(storage=backend, study_name="one", direction="minimize")
    assert queries.best_value(backend, one._study_id) is None
    for value in (0.5, 0.2, 0.7):
        one.tell(one.ask(), value)
    assert queries.best_value(backend, one._study_id) == 0.2


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://"])
def test_an_in_memory_database_is_refused_in_one_line(url, tmp_path):
    """It would keep nothing after the command, and no worker could share it (a traceback before)."""
    with pytest.raises(StorageError, match="is an in-memory database: it keeps nothing"):
        open_storage(url)
    line = assert_one_error_line(invoke("ls", "--storage", url))
    assert "give a file, like sqlite:///studies/sweep.db" in line
    assert_one_error_line(run_cli(tmp_path, write_spec(tmp_path), storage=url))


# ---------------------------------------------------------------------------------------------
# Outages: what waiting mends and what it does not


def test_a_full_disk_is_told_from_an_outage():
    for text in ("database or disk is full", "[Errno 28] No space left on device", "File too large", "Disk quota"):
        assert st.is_full(text)
    for text in ("connection refused", "database is locked", "server closed the connection unexpectedly"):
        assert not st.is_full(text)


def test_patience_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("SWEEP_STORAGE_PATIENCE", raising=False)
    assert st.patience_seconds() == 60
    monkeypatch.setenv("SWEEP_STORAGE_PATIENCE", "2.5")
    assert st.patience_seconds() == 2.5
    monkeypatch.setenv("SWEEP_STORAGE_PATIENCE", "soon")
    with pytest.raises(StorageError, match="SWEEP_STORAGE_PATIENCE must be a number of seconds"):
        st.patience_seconds()


def test_a_heartbeat_the_database_refuses_is_missed_not_raised(tmp_path):
    """Optuna's heartbeat thread ends at the first error; ours misses the beat and tries the next."""
    import sqlalchemy
    from sqlalchemy import orm

    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage)
    trial_id = study._storage.create_new_trial(study._study_id)  # study.ask warns: heartbeats are optimize's
    storage.record_heartbeat(trial_id)
    answered = storage.answered_at
    assert answered is not None
    working = storage.scoped_session
    gone = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/no-such-folder/s.db")  # the database is away
    storage.scoped_session = orm.scoped_session(orm.sessionmaker(bind=gone))
    storage.record_heartbeat(trial_id)  # no exception (Optuna raises StorageInternalError here)
    assert storage.answered_at == answered
    storage.scoped_session = working
    storage.record_heartbeat(trial_id)
    assert storage.answered_at > answered
