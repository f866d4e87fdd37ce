"""`sweep rerun`: re-train trials from scratch with other seeds."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sweep import api
from sweep.cli.app import app
from sweep.cli.options import MAX_PROCESSES, MAX_TRIALS, AsJson, Oversubscribe, Seeds, Storage, StudyName, parse_seeds
from sweep.cli.output import echo_json


@app.command()
def rerun(
    name: StudyName,
    trial: Annotated[int | None, typer.Argument(help="Trial number (or give --top).")] = None,
    top: Annotated[
        int | None, typer.Option(min=1, max=MAX_TRIALS, help="Re-train the K best trials of each model type.")
    ] = None,
    seeds: Annotated[
        Seeds | None,
        typer.Option(
            parser=parse_seeds, metavar="0,1,2", help="train.seed values (default: the trial's own; 0,1,2 with --top)."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=MAX_PROCESSES, help="Worker processes sharing the reruns.")] = 1,
    threads: Annotated[
        int | None, typer.Option(min=1, max=MAX_PROCESSES, help="Torch threads per rerun (default: the trial's own).")
    ] = None,
    again: Annotated[bool, typer.Option("--again", help="Re-train reruns that are stored already.")] = False,
    oversubscribe: Oversubscribe = False,
    storage: Storage = None,
    as_json: AsJson = False,
) -> None:
    """Re-train trials from scratch with other seeds; results are stored on the study, reruns already
    stored are not repeated.

    Example: sweep rerun compare-cells --top 1 --seeds 0,1,2 --workers 2   (or: sweep rerun quickstart 7)
    """
    planned = api.plan_reruns(
        name,
        trial,
        top=top,
        seeds=list(seeds) if seeds else None,
        storage=storage,
        workers=workers,
        threads=threads,
        again=again,
        oversubscribe=oversubscribe,
    )
    if not as_json:
        _print_plan(planned, workers)
    rows = api.rerun(name, planned, storage=storage, workers=workers, on_result=None if as_json else _print_rerun)
    if as_json:
        echo_json({"study": name, **rows[0]} if trial is not None else {"study": name, "trials": rows})
        return
    for row in rows:
        _print_summary(name, row)


def _print_plan(planned: Any, workers: int) -> None:
    n_numbers, n_seeds, n_jobs = len(planned.numbers), len(planned.seeds), planned.runs
    typer.echo(
        f"{n_numbers} trial(s) x {n_seeds} seed(s): {n_jobs} to train, "
        f"{n_numbers * n_seeds - n_jobs} trained already; {workers} worker(s), each trial's seeds at once"
    )


def _print_rerun(record: Any) -> None:
    typer.echo(f"  trained trial {record.trial}, seed {record.seed}: value {record.value:.4f}")


def _print_summary(name: str, row: dict[str, Any]) -> None:
    stored = f"{row['stored_value']:.4f}" if row["stored_value"] is not None else "-"
    typer.echo(f"trial {row['trial']} of {name!r} ({row['model_type']}): stored value {stored} ({row['stored_state']})")
    for r in row["runs"]:
        probe = f"  probe {r['probe_exact_match']:.4f}" if r["probe_exact_match"] is not None else ""
        to_target = r["seconds_to_target"]
        target = f"  s to target {to_target:.1f}" if to_target is not None else "  target not reached"
        typer.echo(
            f"  seed {r['seed']}: value {r['value']:.4f}  val exact {r['val_exact_match']:.4f}{probe}  "
            f"epochs {r['epochs']}{target}"
        )
    if len(row["runs"]) > 1:
        typer.echo(f"  mean {row['mean']:.4f}, stdev {row['stdev']:.4f} over {len(row['runs'])} seeds")
    replay = row["replay"]
    if replay is not None:
        copied = replay["copied_at"]
        took = (
            f"without the weights it copied at epochs {', '.join(map(str, copied))}"
            if copied
            else "and it copied no weights"
        )
        verdict = {True: "reproduces its stored value", False: "does not reproduce its stored value", None: ""}
        typer.echo(
            f"  pbt replay: its schedule ({replay['changes']} change(s)) from scratch, {took}; "
            f"{verdict[replay['reproduces']] or 'its own seed was not replayed'}"
        )
