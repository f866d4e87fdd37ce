"""A real PostgreSQL server for tests: initdb + pg_ctl in a temporary folder, loopback, password auth."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def find_bin() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def why_unavailable() -> str | None:
    if find_bin() is None:
        return "PostgreSQL binaries (initdb, pg_ctl) not found; `make test` installs them with apt-get as root"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed; pip install -e .[postgres]"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    return None


class PostgresServer:
    """A throwaway cluster: `url` for the database, `stop()` and `start()` to simulate an outage."""

    def __init__(self, options: str = "") -> None:
        self.options = options  # extra server settings, like "-c shared_preload_libraries=pg_stat_statements"
        self.bin_dir = find_bin()
        self.root = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
        self.password = secrets.token_hex(8)
        self.port = free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.data = self.root / "data"
        self.url = f"postgresql+psycopg://sweep:{self.password}@127.0.0.1:{self.port}/sweep"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_postgres, *args], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        (self.root / "pw").write_text(self.password + "\n")
        os.chmod(self.root, 0o777)
        if self.as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.root / "pw", "postgres")
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "sweep",
            "--auth=scram-sha-256",
            f"--pwfile={self.root / 'pw'}",
        )
        self.start()
        self.sql("CREATE DATABASE sweep", database="postgres")

    def sql(self, statement: str, database: str = "sweep") -> list[tuple]:
        """Run one statement as the superuser; its rows, if it returns any."""
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user=sweep password={self.password} dbname={database}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def statements(self) -> int:
        """Statements run on the database so far (pg_stat_statements must be loaded and created)."""
        rows = self.sql(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = 'sweep'"
        )
        return int(rows[0][0])

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off"
        options += f" {self.options}"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [*self.as_postgres, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
            capture_output=True,
            timeout=60,
        )

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(options: str = "") -> Iterator[PostgresServer]:
    """A fresh server and database; stopped and removed afterwards, also when a test fails."""
    server = PostgresServer(options)
    try:
        server.init()
        yield server
    finally:
        server.remove()
