"""optuna-dashboard on a storage, with the artifact store its studies recorded (checkpoints included)."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable

import optuna
import optuna_dashboard

from digitsum.errors import UsageError
from sweep.store.artifacts import location_for, open_store
from sweep.store.records import recorded_artifacts
from sweep.store.storage import open_existing


def serve(
    storage: str | None,
    host: str,
    port: int,
    artifacts: str | None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve optuna-dashboard on the storage until Ctrl-C; ``on_listening`` hears the artifact store's
    location once the address is known to be free."""
    store = open_existing(storage)
    location = _dashboard_artifacts(store, storage, artifacts)
    _check_bind(host, port)
    if on_listening is not None:
        on_listening(location)
    with contextlib.suppress(KeyboardInterrupt):
        optuna_dashboard.run_server(store, host=host, port=port, artifact_store=open_store(location))


def _check_bind(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except (OSError, UnicodeError, TypeError, ValueError) as error:
            raise UsageError(_bind_problem(host, port, error)) from None


def _bind_problem(host: str, port: int, error: Exception) -> str:
    """Why the dashboard cannot listen, and the hint that fits: the port is taken, or the host is wrong."""
    if not isinstance(error, OSError):  # a host that cannot even be encoded, e.g. bytes that are not UTF-8
        return f"cannot listen on {host!r}:{port} ({error}); --host must be an address of this machine, like 127.0.0.1"
    reason = error.strerror or str(error)
    if error.errno == errno.EADDRINUSE:
        return f"cannot listen on {host}:{port} ({reason}); pick another --port"
    if error.errno == errno.EACCES:
        return f"cannot listen on {host}:{port} ({reason}); ports below 1024 need root, pick --port 8080"
    if isinstance(error, socket.gaierror) or error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}:{port} ({reason}); --host must be an address of this machine, like 127.0.0.1"
    return f"cannot listen on {host}:{port} ({reason}); check --host and --port"


def _dashboard_artifacts(store: optuna.storages.BaseStorage, storage: str | None, artifacts: str | None) -> str:
    """One artifact store for the whole server: --artifacts, else the one the studies recorded, else
    the default. Studies that recorded different stores need --artifacts (one server per store)."""
    if artifacts:
        return location_for(artifacts, None, storage)
    recorded = {recorded_artifacts(s) for s in store.get_all_studies()} - {None}
    return str(recorded.pop()) if len(recorded) == 1 else location_for(None, None, storage)
