"""Study commands: `enqueue` warm starts, read the `best` trial, list (`ls`), `export`, `rm` and `copy`
studies."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sweep import api
from sweep.cli.app import app
from sweep.cli.options import (
    Artifacts,
    AsJson,
    Storage,
    StudyName,
)
from sweep.cli.output import echo_json, number_text, seeds_text


@app.command(context_settings={"allow_extra_args": False})
def enqueue(
    name: StudyName,
    values: Annotated[
        list[str],
        typer.Argument(metavar="KEY=VALUE...", help="Values of searched keys; the sampler picks the ones left out."),
    ],
    storage: Storage = None,
) -> None:
    """Queue a trial with these values to run first: a warm start from a known good configuration.

    The next `sweep run` of the study runs it before the sampler's own picks (it counts toward the
    budget). A set the study has queued or run already is not queued twice.

    Example: sweep enqueue compare-cells model.model_type=lstm model.hidden_size=64
    """
    from digitsum.config import parse_overrides

    params, queued = api.enqueue(name, dict(parse_overrides(values)), storage)
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    if queued:
        typer.echo(f"queued in {name!r}: {shown}; the next `sweep run` runs it first")
    else:
        typer.echo(f"{name!r} already queued or ran {shown}: nothing queued")


@app.command()
def best(
    name: StudyName,
    storage: Storage = None,
    as_json: AsJson = False,
    download: Annotated[
        Path | None,
        typer.Option(help="Fetch the best trial's checkpoint (the Pareto set's) from the artifact store into DIR."),
    ] = None,
    artifacts: Artifacts = None,
) -> None:
    """Show the best trial of a study: value, parameters, probe accuracy, checkpoint.

    Example: sweep best quickstart --download models/
    """
    print_best(name, storage, as_json)
    if download is not None:
        for number, path in api.download_best(name, download, storage, artifacts).items():
            typer.echo(f"checkpoint of trial {number}: {path}  (sweep predict {path} 1294)")


def print_best(name: str, storage: str | None, as_json: bool = False) -> None:
    summary = api.best(name, storage)
    if as_json:
        echo_json(summary)
    elif "pareto" in summary:
        _print_pareto(summary)
    else:
        _print_one(summary)


def _print_one(summary: dict[str, Any]) -> None:
    value = f"{summary['metric']} {summary['value']:.4f}"
    per_seed = summary["per_seed"]
    if per_seed:  # the trial trained several seeds; its value is their mean or worst
        each = ", ".join(f"seed {seed} {run['value']:.4f}" for seed, run in per_seed.items())
        value += f" (the {summary['seed_aggregate']} over its {len(per_seed)} seeds: {each})"
    typer.echo(f"best of {summary['study']!r}: trial {summary['trial']}, {value}")
    for key, value in summary["params"].items():
        typer.echo(f"  {key} = {value}")
    if summary["probe_exact_match"] is not None:
        typer.echo(
            f"  probe (unseen lengths) exact match: {summary['probe_exact_match']:.4f} {summary['probe_by_length']}"
        )
    if summary["probe_in_range_exact_match"] is not None:
        typer.echo(
            f"  probe, rows whose sum occurs in training: {summary['probe_in_range_exact_match']:.4f} "
            f"{summary['probe_in_range_by_length']}"
        )
    state = "" if summary["checkpoint_exists"] else " (not on this machine)"
    whose = f" (seed {next(iter(per_seed))}'s model)" if per_seed else ""
    typer.echo(f"  checkpoint{whose}: {summary['checkpoint']}{state}")
    typer.echo(
        f"  validation exact match over seeds: {seeds_text(summary['over_seeds'], summary['study'], summary['trial'])}"
    )


def _print_pareto(summary: dict[str, Any]) -> None:
    names = [o["metric"] for o in summary["objectives"]]
    directions = ", ".join(f"{o['metric']} ({o['direction']})" for o in summary["objectives"])
    typer.echo(f"Pareto set of {summary['study']!r}: {len(summary['pareto'])} trial(s) on {directions}")
    typer.echo(f"{'trial':>6s}  {'model':5s} {'parameters':>10s}  " + "  ".join(f"{n:>17s}" for n in names))
    for row in summary["pareto"]:
        values = "  ".join(f"{row['values'][n]:17.6g}" for n in names)
        typer.echo(f"{row['trial']:6d}  {row['model_type']:5s} {row['n_parameters'] or 0:10,d}  {values}")
        over = seeds_text(row["over_seeds"], summary["study"], row["trial"])
        typer.echo(f"{'':6s}  validation exact match over seeds: {over}")


@app.command("ls")
def list_studies(storage: Storage = None) -> None:
    """List the studies in the storage with trial counts by state and the best value.

    Example: sweep ls --storage sqlite:///studies/sweep.db
    """
    from sweep.store.storage import shown_url

    rows = api.studies(storage)
    if not rows:
        typer.echo(f"no studies yet in {shown_url(storage)}; run `sweep run quickstart`")
        return
    typer.echo(f"studies in {shown_url(storage)}:")
    typer.echo(f"{'study':24s} {'complete':>8s} {'pruned':>7s} {'fail':>5s} {'running':>7s} {'best':>8s}")
    for row in rows:
        counts = row["counts"]
        best_text = f"{row['n_objectives']} obj." if row["n_objectives"] > 1 else number_text(row["best"])
        typer.echo(
            f"{row['study']:24s} {counts['COMPLETE']:8d} {counts['PRUNED']:7d} "
            f"{counts['FAIL']:5d} {counts['RUNNING'] + counts['WAITING']:7d} {best_text:>8s}"
        )


@app.command()
def export(
    name: StudyName,
    out: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
    storage: Storage = None,
) -> None:
    """Export a study's trials (params, user attributes, states) as CSV.

    Example: sweep export quickstart --out trials.csv
    """
    typer.echo(f"wrote {api.export(name, out, storage)} trials to {out}")


@app.command("rm")
def remove(
    name: StudyName,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    storage: Storage = None,
    artifacts: Artifacts = None,
) -> None:
    """Delete a study from the storage, with its checkpoints (asks first).

    Example: sweep rm quickstart --yes
    """
    deleted = api.remove(name, storage, artifacts, confirm=None if yes else _ask)
    if deleted is None:
        typer.echo("nothing deleted")
        return
    n_trials, n_checkpoints = deleted
    typer.echo(f"deleted study {name!r} ({n_trials} trials) and {n_checkpoints} checkpoint(s)")


def _ask(what: str) -> bool:
    from digitsum.errors import UsageError

    if not sys.stdin.isatty():
        raise UsageError(f"sweep rm deletes {what}; add --yes to confirm without a terminal")
    return typer.confirm(f"Delete {what}?")


@app.command("copy")
def copy_study(
    name: StudyName,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="The storage URL to copy to, e.g. postgresql+psycopg://USER:PASS@HOST:5432/DB.",
            show_default=False,
        ),
    ],
    storage: Storage = None,
    artifacts: Artifacts = None,
    to_artifacts: Annotated[
        str | None,
        typer.Option(
            help="Where the copy's checkpoints go: a folder or s3://BUCKET/PREFIX that the copy's workers reach "
            "(default: artifacts/ beside the --to file, else beside the default storage). Recorded on the copy."
        ),
    ] = None,
    to_name: Annotated[str | None, typer.Option(help="The copy's name (default: NAME).")] = None,
) -> None:
    """Copy a study, with its trials, seed reruns and checkpoints, to another storage (SQLite to PostgreSQL).

    `sweep run` with the study's spec and the new storage then resumes the copy on any machine.

    Example: sweep copy quickstart --to postgresql+psycopg://sweep:PASS@db-host:5432/sweep
    """
    from sweep.store.storage import safe_url

    copied = api.copy(name, to, storage, artifacts=artifacts, to_artifacts=to_artifacts, to_name=to_name)
    states = ", ".join(f"{n} {state.lower()}" for state, n in sorted(copied.states.items()))
    removed = f"; {copied.removed} removed before, when better trials finished" if copied.removed else ""
    typer.echo(
        f"copied study {name!r} to {safe_url(to)} as {copied.to_name!r}: {copied.trials} trials ({states or 'none'}), "
        f"{copied.reruns} seed rerun(s), {copied.checkpoints} checkpoint(s){removed}"
    )
    typer.echo(f"  its checkpoints: {copied.artifacts}")
    if copied.states.get("RUNNING"):
        typer.echo("  its RUNNING trials were a dead worker's: the copy's first worker fails them and runs them again")
    again = f" --name {copied.to_name}" if copied.to_name != name else ""
    typer.echo(f"  resume it: sweep run {copied.spec_path} --storage {safe_url(to)}{again}")
