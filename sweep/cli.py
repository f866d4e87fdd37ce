"""The `sweep` command line: parse, call the core or the sweep layer, print.

Every expected mistake (bad key, bad file, bad spec, unknown study, bad storage URL) ends as one
line on stderr and exit code 2, in one place (`_ErrorBoundary`); no traceback. Commands import
what they need when they run, so `sweep --help` answers without loading torch or optuna.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from digitsum.errors import UsageError, one_line, warning_line


class _ErrorBoundary(TyperGroup):
    """Runs every command: errors a user can fix become one line on stderr and exit code 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except TyperException as error:  # a bad option before the command, e.g. `sweep --bogus`
            raise _usage_line(error) from None

    def invoke(self, ctx: Any) -> Any:
        shown_as = warnings.showwarning  # only how warnings show: the filters stay as modules set them
        warnings.showwarning = _warning_line
        try:
            return super().invoke(ctx)
        except TyperException as error:  # typer's own usage errors: a bad option value, a missing argument
            raise _usage_line(error) from None
        except UsageError as error:
            say_error(str(error))
            raise typer.Exit(2) from None
        except BrokenPipeError:  # `sweep ls | head`: the reader has all it wanted
            _silence_stdout()
            raise typer.Exit(0) from None
        except OSError as error:  # disk full, permission denied: not a usage error, still no traceback
            say_error(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "))
            raise typer.Exit(1) from None
        finally:
            warnings.showwarning = shown_as


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail on the closed pipe."""
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _warning_line(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    typer.echo(warning_line(message, category), err=True)


def say_error(message: str) -> None:
    """One line on stderr (`one_line`); "error:" in red on a terminal (click drops the colour when piped)."""
    typer.echo(typer.style("error:", fg="red", bold=True) + " " + one_line(message), err=True)


def _usage_line(error: TyperException) -> BaseException:
    """Typer's usage error as one line and exit code 2 (help for no arguments stays help)."""
    if error.exit_code != 2 or type(error).__name__ == "NoArgsIsHelpError":
        return error
    path = getattr(getattr(error, "ctx", None), "command_path", None) or "sweep"
    command = " ".join(["sweep", *path.split()[1:]])  # the console script's name, however it was invoked
    say_error(f"{error.format_message().rstrip('.')}; see {command} --help")
    return typer.Exit(2)


app = typer.Typer(
    cls=_ErrorBoundary,
    help="Train, sweep and compare RNN, LSTM and GRU models on the digit-sum task.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"sweep (digitsum-sweep) {version('digitsum-sweep')}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train, sweep and compare RNN, LSTM and GRU models on the digit-sum task.

    Example: sweep run studies/quickstart.yaml && sweep report quickstart
    """


class Seeds(tuple[int, ...]):
    """Comma-separated integers from the command line, e.g. ``--seeds 0,1,2``."""


def _parse_seeds(text: str) -> Seeds:
    try:
        return Seeds(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected integers separated by commas, like 0,1,2") from None


MAX_SAMPLE = 10_000_000  # rows per length: more would not fit in memory as the tensors training makes
MAX_TRIALS = 1_000_000  # a study's total; a typo of more would run for years
MAX_PROCESSES = 1024  # worker processes, or torch threads

STORAGE_HELP = (
    "Optuna storage URL (default: $SWEEP_STORAGE, else sweep.db in the nearest studies/ folder at or above the "
    "working directory, else in ~/.local/share/digitsum-sweep); journal:FILE for a journal file."
)
Storage = Annotated[str | None, typer.Option(help=STORAGE_HELP)]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, ...")]
StudyName = Annotated[str, typer.Argument(help="Study name.")]
CheckpointArg = Annotated[
    str,
    typer.Argument(
        metavar="CHECKPOINT",
        help="A checkpoint file (a best.pt of `sweep train`), or STUDY:TRIAL (STUDY:best) from the artifact store.",
    ),
]
ARTIFACTS_HELP = (
    "Where checkpoints are stored: a folder (shared by every machine of a study) or s3://BUCKET/PREFIX "
    "(AWS_* variables configure it). Default: the store the study recorded when it was made, else artifacts/ "
    "beside the storage file (or beside the default storage)."
)
Artifacts = Annotated[str | None, typer.Option(help=ARTIFACTS_HELP)]


# ---------------------------------------------------------------------------------------------
# Core commands: the tutorial's scripts


@app.command()
def data(
    out: Annotated[Path, typer.Argument(metavar="OUT.csv", help="CSV file to write (headerless x,y).")],
    lengths: Annotated[str, typer.Option(help="Input lengths: 5, a range 2-4, or a list 2,4,6.")] = "2-4",
    sample: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_SAMPLE, help="Draw a seeded sample of N rows per length instead of all."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of the sample.")] = 0,
) -> None:
    """Write every digit string of the given lengths with its digit sum.

    Example: sweep data data/seq_len_4.csv --lengths 2-4
    """
    from digitsum.data import make_rows, plan_rows, write_csv
    from digitsum.lengths import parse_lengths

    wanted = parse_lengths(lengths)
    for length, (count, sampled) in plan_rows(wanted, sample).items():
        if sampled and sample is None:
            typer.echo(
                f"length {length}: 10^{length} strings is too many; "
                f"drawing a seeded sample of {count:,} (set --sample to change)"
            )
    rows = make_rows(wanted, sample, seed)
    write_csv(rows, out)
    typer.echo(f"wrote {len(rows):,} rows (lengths {lengths}) to {out}")


def _train_keys() -> str:
    """The config keys with their defaults, for `sweep train --help` (read off the declarations)."""
    from digitsum.config import schema
    from digitsum.keys import show

    keys = [f"{key.name}={show(key.default)}" for key in schema().values()]
    return "Keys and their defaults (`sweep keys` says what each allows):\n\n\b\n" + "\n".join(keys)


@app.command(context_settings={"allow_extra_args": False}, epilog=_train_keys())
def train(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Config overrides as key=value, e.g. model.model_type=gru.")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="YAML or JSON file of config keys (nested or dotted).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the run folder of a train.run_name that exists.")
    ] = False,
) -> None:
    """Train one model, like the tutorial's train.py; writes <log_path>/<run_name>/. `sweep keys` lists the keys.

    Example: sweep train model.model_type=lstm model.hidden_size=128 train.n_epochs=40
    """
    from sweep import commands

    commands.train_one(config_file, overrides or [], overwrite)


@app.command()
def evaluate(
    checkpoint: CheckpointArg,
    data_csv: Annotated[Path, typer.Argument(metavar="DATA.csv", help="Headerless x,y CSV, e.g. from `sweep data`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    device: Device = "auto",
    storage: Storage = None,
    artifacts: Artifacts = None,
) -> None:
    """Unrolled exact-match accuracy of a checkpoint, overall and per input length.

    Example: sweep evaluate runs/run/best.pt data/seq_len_5_only.csv   (or: sweep evaluate quickstart:best data.csv)
    """
    from sweep import commands

    commands.evaluate(checkpoint, data_csv, device, as_json, storage, artifacts)


@app.command()
def predict(
    checkpoint: CheckpointArg,
    sequences: Annotated[list[str], typer.Argument(help="Digit strings, e.g. 1294 5678.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
    device: Device = "auto",
    storage: Storage = None,
    artifacts: Artifacts = None,
) -> None:
    """Decode the digit sum of each sequence, and say whether it is right.

    Example: sweep predict runs/run/best.pt 1294 5678   (or: sweep predict quickstart:7 1294)
    """
    from sweep import commands

    commands.predict(checkpoint, sequences, device, as_json, storage, artifacts)


@app.command()
def keys(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the README's Markdown tables instead.")] = False,
) -> None:
    """Every config key (sweep train, --config, a spec's fixed and space) and every study-spec key.

    Example: sweep keys --markdown
    """
    from sweep.reference import key_tables

    typer.echo(key_tables(markdown))


# ---------------------------------------------------------------------------------------------
# Sweep commands


@app.command()
def check(
    spec_path: Annotated[
        Path, typer.Argument(metavar="STUDY.yaml", help="A study spec, e.g. studies/quickstart.yaml.")
    ],
) -> None:
    """Check a study spec without training: the resolved space, sampler, pruner, data sizes and budget.

    Example: sweep check studies/compare-cost.yaml
    """
    from sweep import commands

    commands.check(spec_path)


@app.command()
def run(
    spec_path: Annotated[
        Path, typer.Argument(metavar="STUDY.yaml", help="A study spec, e.g. studies/quickstart.yaml.")
    ],
    trials: Annotated[
        int | None,
        typer.Option(
            min=1, max=MAX_TRIALS, help="The study's total of finished trials (default: the spec's n_trials)."
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(min=1, help="Stop starting trials after this many seconds (default: the spec's timeout)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=MAX_PROCESSES, help="Worker processes on this machine; torch threads are shared out among them."
        ),
    ] = 1,
    storage: Storage = None,
    name: Annotated[
        str | None, typer.Option(help="Study name (default: the spec's name); a new name starts a new study.")
    ] = None,
    artifacts: Artifacts = None,
    threads: Annotated[
        int | None, typer.Option(min=1, max=MAX_PROCESSES, help="Torch threads per worker (default: cores / workers).")
    ] = None,
    oversubscribe: Annotated[
        bool, typer.Option("--oversubscribe", help="Run more threads in all than this machine has cores.")
    ] = False,
) -> None:
    """Run (or resume) a study: train one model per trial, prune on unrolled validation accuracy.

    Example: sweep run studies/quickstart.yaml --workers 2
    """
    from sweep import commands

    commands.run(
        spec_path,
        storage,
        name=name,
        trials=trials,
        timeout=timeout,
        workers=workers,
        artifacts=artifacts,
        threads=threads,
        oversubscribe=oversubscribe,
    )


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
    from sweep import commands

    commands.print_best(name, storage, as_json)
    if download is not None:
        commands.download_best(name, storage, download, artifacts)


@app.command("ls")
def list_studies(storage: Storage = None) -> None:
    """List the studies in the storage with trial counts by state and the best value.

    Example: sweep ls --storage sqlite:///studies/sweep.db
    """
    from sweep import commands

    commands.list_studies(storage)


@app.command()
def export(
    name: StudyName,
    out: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
    storage: Storage = None,
) -> None:
    """Export a study's trials (params, user attributes, states) as CSV.

    Example: sweep export quickstart --out trials.csv
    """
    from sweep import commands

    commands.export(name, out, storage)


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
            parser=_parse_seeds, metavar="0,1,2", help="train.seed values (default: the trial's own; 0,1,2 with --top)."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=MAX_PROCESSES, help="Worker processes sharing the reruns.")] = 1,
    threads: Annotated[
        int | None, typer.Option(min=1, max=MAX_PROCESSES, help="Torch threads per rerun (default: the trial's own).")
    ] = None,
    again: Annotated[bool, typer.Option("--again", help="Re-train reruns that are stored already.")] = False,
    oversubscribe: Annotated[
        bool, typer.Option("--oversubscribe", help="Run more threads in all than this machine has cores.")
    ] = False,
    storage: Storage = None,
    as_json: AsJson = False,
) -> None:
    """Re-train trials from scratch with other seeds; results are stored on the study, reruns already
    stored are not repeated.

    Example: sweep rerun compare-cells --top 1 --seeds 0,1,2 --workers 2   (or: sweep rerun quickstart 7)
    """
    from sweep import commands

    commands.rerun(
        name,
        trial,
        list(seeds) if seeds else None,
        storage,
        as_json,
        top=top,
        workers=workers,
        threads=threads,
        again=again,
        oversubscribe=oversubscribe,
    )


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
    from sweep import commands

    start = time.perf_counter()
    out, n_figures = commands.report(names, out, storage, attach, artifacts)
    typer.echo(
        f"wrote {out} ({n_figures} figures, {out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f}s"
    )


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
    from sweep import commands

    commands.remove(name, storage, yes, artifacts)


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
    from sweep import commands

    commands.dashboard(storage, host, port, artifacts)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
