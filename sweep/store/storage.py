"""Storage URL -> Optuna storage: embedded SQLite by default, a journal file, or PostgreSQL.

RDB storages (SQLite, PostgreSQL) get heartbeats: a trial whose worker died is failed after the
grace period and re-queued with the same parameters (`RetryHeartbeatStaleTrialCallback`).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.exc import SQLAlchemyError

from digitsum.errors import UsageError
from digitsum.files import require_file

# Heartbeats, fail_stale_trials and RetryHeartbeatStaleTrialCallback are marked experimental since
# Optuna 2.8; we rely on them on purpose, so their warnings would only be noise on every command.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

ENV_VAR = "SWEEP_STORAGE"
MAX_RETRY = 3
# A worker holds at most two database connections: its own thread's, and Optuna's heartbeat thread's
# (a session per thread); the monitor of each `sweep run` holds one more. So N workers started by M
# `sweep run` commands need 2N + M connections (docs/scaling.md: Connections). SQLAlchemy's
# default pool would keep up to 5 idle and open up to 15; at hundreds of workers that is what runs a
# server out of max_connections.
POOL = {"pool_size": 2, "max_overflow": 1}


@dataclass(frozen=True)
class Heartbeats:
    """Seconds between a running trial's heartbeats, and the silence after which it is failed and
    retried. SWEEP_HEARTBEAT_INTERVAL and SWEEP_GRACE_PERIOD shorten them (tests, impatient users)."""

    interval: int = 10
    grace_period: int = 30


def heartbeat_settings() -> Heartbeats:
    """Read from the environment now, when a storage is opened (not when this module is imported)."""
    defaults = Heartbeats()
    try:
        return Heartbeats(
            int(os.environ.get("SWEEP_HEARTBEAT_INTERVAL", defaults.interval)),
            int(os.environ.get("SWEEP_GRACE_PERIOD", defaults.grace_period)),
        )
    except ValueError:
        raise StorageError("SWEEP_HEARTBEAT_INTERVAL and SWEEP_GRACE_PERIOD must be whole seconds, like 10") from None


def patience_seconds() -> float:
    """How long a worker waits for a storage that stopped answering (a database restarting, a file
    locked by another program) before it gives up with one line: $SWEEP_STORAGE_PATIENCE, else 60 s."""
    try:
        seconds = float(os.environ.get("SWEEP_STORAGE_PATIENCE", 60))
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise StorageError("SWEEP_STORAGE_PATIENCE must be a number of seconds >= 0, like 60")
    return seconds


def storage_error(error: BaseException | None) -> SQLAlchemyError | None:
    """The database error behind `error`, if any. Optuna wraps it (StorageInternalError), and Optuna
    5.0 can mask a failed `tell` with an UnboundLocalError from its own `finally`: the whole chain
    of causes is searched."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, SQLAlchemyError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def is_full(error: BaseException | str) -> bool:
    """An error (or its text) that waiting will not mend: the disk under the database or the checkpoints
    is full, or a file reached the size this process may write (RLIMIT_FSIZE)."""
    text = str(getattr(error, "orig", None) or error).lower()
    words = ("disk is full", "no space left", "could not extend file", "disk quota", "file too large")
    return any(word in text for word in words)


class StorageError(UsageError):
    """The storage cannot be opened; the message never shows a password."""


def home_folder(start: Path | None = None) -> Path:
    """Where the default storage and checkpoints live, whatever the working directory below it: the
    nearest ``studies/`` folder at or above it (a clone of this project, found upwards as git finds
    its root), else a per-user folder ($XDG_DATA_HOME or ~/.local/share, then digitsum-sweep)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "studies").is_dir():
            return folder / "studies"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "digitsum-sweep"


def default_url() -> str:
    """$SWEEP_STORAGE, else the SQLite file ``sweep.db`` in `home_folder`."""
    return os.environ.get(ENV_VAR) or f"sqlite:///{home_folder() / 'sweep.db'}"


def default_checkpoints() -> Path:
    return home_folder() / "checkpoints"


def where_from(url: str | None) -> str:
    """How the storage was chosen, for a message."""
    if url:
        return "from --storage"
    if os.environ.get(ENV_VAR):
        return f"from ${ENV_VAR}"
    return (
        "the default: the nearest studies/ folder at or above the working directory, else ~/.local/share/digitsum-sweep"
    )


def require_existing(url: str | None) -> None:
    """For commands that only read: refuse a storage file that does not exist (opening would create an
    empty one, and the studies would look lost), naming where it looked."""
    _refuse_memory(url or default_url())
    path = storage_file(url or default_url())
    if path is not None and path.exists():
        require_file(path, "storage file", "", StorageError)
    if path is not None and not path.is_file():
        raise StorageError(
            f"no storage at {path.resolve()} ({where_from(url)}); run `sweep run STUDY.yaml` to make one "
            "there, or point --storage or $SWEEP_STORAGE at yours"
        )


def open_existing(url: str | None, create: bool = False) -> optuna.storages.BaseStorage:
    """The storage a command works on; only ``create`` makes a storage file that is not there yet."""
    if not create:
        require_existing(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happens
    return open_storage(url)


def shown_url(url: str | None) -> str:
    """The storage a command works on, for a message: the URL given or the default, password masked."""
    return safe_url(url or default_url())


def storage_file(url: str) -> Path | None:
    """The file a storage URL names (a SQLite database, a journal), None for a server or memory."""
    path = journal_path(url)
    if path is None and url.startswith("sqlite:"):
        database = _sqlite_database(url)
        path = Path(database) if database and database != ":memory:" else None
    return path


def _sqlite_database(url: str) -> str | None:
    """The database part of a SQLite URL as SQLAlchemy reads it (None or ":memory:" for memory)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).database
    except Exception:  # not a URL SQLAlchemy reads: opening it says so
        return None


def _refuse_memory(url: str) -> None:
    """An in-memory SQLite database is gone when the command ends, and no second worker can reach it."""
    from sqlalchemy.engine import make_url

    try:
        in_memory = url.startswith("sqlite:") and make_url(url).database in (None, "", ":memory:")
    except Exception:  # not a URL SQLAlchemy reads: opening it says so
        in_memory = False
    if in_memory:
        raise StorageError(
            f"storage {url!r} is an in-memory database: it keeps nothing after the command, and workers "
            "cannot share it; give a file, like sqlite:///studies/sweep.db"
        )


def safe_url(url: str) -> str:
    """The URL with its password masked, for every message and log line."""
    if url.startswith("journal:"):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable storage URL>"


def journal_path(url: str) -> Path | None:
    """``journal:PATH`` or a path ending in .log/.jsonl selects a journal file."""
    if url.startswith("journal:"):
        return Path(url[len("journal:") :].removeprefix("//"))
    if "://" not in url and url.endswith((".log", ".jsonl")):
        return Path(url)
    return None


def open_storage(url: str | None = None, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """Open (and create, where it is a file) the storage; StorageError on any failure."""
    url = url or default_url()
    journal = journal_path(url)
    try:
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(journal)))
        if "://" not in url:
            raise StorageError(
                f"storage {url!r} is not a URL; use sqlite:///studies/sweep.db, journal:studies/sweep.log "
                "or postgresql+psycopg://USER:PASS@HOST:PORT/DB"
            )
        _refuse_memory(url)
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:"):
            database = storage_file(url)
            if database is not None:
                database.parent.mkdir(parents=True, exist_ok=True)
            # Several workers share one file: wait for the lock instead of failing at once, as long
            # as a worker waits for any storage that stopped answering.
            engine_kwargs = {"connect_args": {"timeout": patience_seconds()}}
        else:
            engine_kwargs = {"pool_pre_ping": True, **POOL}
        storage = _rdb_storage(url, engine_kwargs, heartbeat)
        if url.startswith("sqlite:"):
            _write_ahead_log(storage)
        return storage
    except StorageError:
        raise
    except ModuleNotFoundError as error:
        hint = "pip install -e .[postgres]" if "psycopg" in str(error) else f"pip install {error.name}"
        raise StorageError(f"storage {safe_url(url)}: driver {error.name!r} is missing; {hint}") from None
    except Exception as error:  # sqlalchemy raises many kinds: bad URL, refused, wrong password
        reason = " ".join(str(getattr(error, "orig", None) or error).split())
        reason = reason.replace(url, safe_url(url))
        password = _password(url)
        if password:
            reason = reason.replace(password, "***")
        raise StorageError(f"cannot open storage {safe_url(url)}: {reason[:200]}") from None


class _RDBStorage(RDBStorage):
    """Optuna's RDB storage, but a heartbeat that fails (the database is restarting) is only missed:
    Optuna's heartbeat thread would end with it, and the trial would go stale after the outage even
    though its worker is alive. The next beat, a heartbeat interval later, is tried as usual.
    `answered_at` is when a beat last went through: a worker waiting out an outage counts from it."""

    answered_at: float | None = None

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as error:  # Optuna raises StorageInternalError from the database's own error
            if storage_error(error) is None:
                raise
        else:
            self.answered_at = time.monotonic()


def _rdb_storage(url: str, engine_kwargs: dict[str, Any], heartbeat: bool) -> RDBStorage:
    if not heartbeat:
        return RDBStorage(url, engine_kwargs=engine_kwargs)
    beats = heartbeat_settings()
    return _RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=beats.interval,
        grace_period=beats.grace_period,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
    )


def close_storage(storage: optuna.storages.BaseStorage) -> None:
    """Close a storage's database connections (a no-op for a journal file)."""
    if isinstance(storage, RDBStorage):
        try:
            storage.remove_session()
            storage.engine.dispose()
        except SQLAlchemyError:  # a database that is gone has nothing left to close
            pass


def rdb_of(study: optuna.Study) -> RDBStorage | None:
    """The RDB storage a loaded study reads (Optuna wraps it in a per-process cache), or None."""
    storage = study._storage
    if isinstance(storage, optuna.storages._CachedStorage):
        storage = storage._backend
    return storage if isinstance(storage, RDBStorage) else None


def close_study(study: optuna.Study) -> None:
    """Close the connections of the storage a loaded study reads."""
    backend = rdb_of(study)
    if backend is not None:
        close_storage(backend)


def _write_ahead_log(storage: RDBStorage) -> None:
    """WAL journal with synchronous=NORMAL: a trial's many small commits (reports, attributes,
    heartbeats) stop waiting for an fsync each, and readers (the dashboard, other workers) do not
    block the writer. A crash can lose the last commits, never corrupt the file."""
    from sqlalchemy import event

    def on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened while creating the tables reconnect with the pragmas


def _password(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password
    except Exception:
        return None


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    if name not in study_names(storage):
        known = ", ".join(study_names(storage)) or "none yet; run `sweep run quickstart`"
        raise StorageError(f"no study named {name!r} in this storage; studies: {known}")
    return optuna.load_study(study_name=name, storage=storage)
