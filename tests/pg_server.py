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
from pathlib import Path
from typing import Iterator


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


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a postgresql+psycopg:// URL of a fresh database; the server is stopped afterwards."""
    bin_dir = find_bin()
    root = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
    password = secrets.token_hex(8)
    port = free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    (root / "pw").write_text(password + "\n")
    os.chmod(root, 0o777)
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    data = root / "data"

    def run(*args: str) -> None:
        subprocess.run([*as_postgres, *args], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "sweep", "--auth=scram-sha-256", f"--pwfile={root / 'pw'}")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=100 -c fsync=off"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=sweep password={password} dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE sweep")
        yield f"postgresql+psycopg://sweep:{password}@127.0.0.1:{port}/sweep"
    finally:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
