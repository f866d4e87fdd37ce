"""Seeing results: the HTML `report`, and optuna-dashboard (`dashboard`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from sweep import api
from sweep.cli.app import app
from sweep.cli.options import Artifacts, Storage


@app.command()
def report(
    names: Annotated[list[str], typer.Argument(help="One or more study names; several are compared side by side.")],
    out: Annotated[Path | None, typer.Option("--out", help="HTML file (default: reports/<names>.html).")] = None,
    storage: Storage = None,
    attach: Annotated[
        bool, typer.Option(help="Also attach the comparison figures to each study for optuna-dashboard.")
    ] = True,
    artifacts: Artifacts = None,
) -> None:
    """Write one self-contained HTML report (plotly.js embedded: opens offline) comparing trials.

    Example: sweep report quickstart --out reports/quickstart.html
    """
    start = time.perf_counter()
    path, n_figures = api.write_report(names, out, storage, attach, artifacts)
    typer.echo(
        f"wrote {path} ({n_figures} figures, {path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f}s"
    )


@app.command()
def dashboard(
    storage: Storage = None,
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you mean to share it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
    artifacts: Artifacts = None,
) -> None:
    """Browse the studies in optuna-dashboard (the same storage `sweep run` writes), checkpoints included.

    Example: sweep dashboard --port 8080   (then open http://127.0.0.1:8080)
    """
    from sweep.store.storage import shown_url

    def listening(location: str) -> None:
        typer.echo(f"optuna-dashboard on {shown_url(storage)}: http://{host}:{port}/  (Ctrl-C stops it)")
        typer.echo(f"checkpoints from the artifact store {location}")

    api.dashboard(storage, host, port, artifacts, on_listening=listening)
