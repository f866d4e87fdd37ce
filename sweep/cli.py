"""The `sweep` command line: parse, call the core or the sweep layer, print.

Every expected mistake (bad key, bad file, bad spec, unknown study, bad storage URL) ends as one
line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Callable, Optional

import typer

from digitsum.data import DataError
from digitsum.errors import UsageError

app = typer.Typer(
    help="Train, sweep and compare RNN, LSTM and GRU models on the digit-sum task.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

USER_ERRORS: tuple[type[Exception], ...] = (UsageError,)


def user_errors(command: Callable) -> Callable:
    """Turn the errors a user can fix into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        except OSError as error:  # disk full, permission denied: not a usage error, still no traceback
            typer.echo(f"error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), err=True)
            raise typer.Exit(1) from None

    return wrapper


def _load_config_file(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise DataError(f"{path}: no such config file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise DataError(f"{path}: not valid YAML or JSON ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise DataError(f"{path}: expected a mapping of config keys, like {{model: {{hidden_size: 64}}}}")
    return values


# ---------------------------------------------------------------------------------------------
# Core commands: the tutorial's scripts


@app.command()
@user_errors
def data(
    out: Path = typer.Argument(..., metavar="OUT.csv", help="CSV file to write (headerless x,y)."),
    lengths: str = typer.Option("2-4", help="Input lengths: 5, a range 2-4, or a list 2,4,6."),
    sample: Optional[int] = typer.Option(None, help="Draw a seeded sample of N rows per length instead of all."),
    seed: int = typer.Option(0, help="Seed of the sample."),
) -> None:
    """Write every digit string of the given lengths with its digit sum.

    Example: sweep data data/seq_len_4.csv --lengths 2-4
    """
    from digitsum.data import make_rows, parse_lengths, plan_rows, write_csv

    wanted = parse_lengths(lengths)
    for length, (count, sampled) in plan_rows(wanted, sample).items():
        if sampled and sample is None:
            typer.echo(f"length {length}: 10^{length} strings is too many; drawing a seeded sample of {count:,} (set --sample to change)")
    rows = make_rows(wanted, sample, seed)
    write_csv(rows, out)
    typer.echo(f"wrote {len(rows):,} rows (lengths {lengths}) to {out}")


@app.command(context_settings={"allow_extra_args": False})
@user_errors
def train(
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides as key=value, e.g. model.model_type=gru."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML or JSON file of config keys (nested or dotted)."),
) -> None:
    """Train one model, like the tutorial's train.py; writes <log_path>/<run_name>/.

    Example: sweep train model.model_type=lstm model.hidden_size=128 train.n_epochs=40
    """
    from digitsum import config as cfg
    from digitsum.train import train_run

    values = _load_config_file(config_file) if config_file else {}
    config = cfg.apply(cfg.from_dict(values), cfg.parse_overrides(overrides or []))
    m, t = config.model, config.train
    data_name = t.dataset_path or f"lengths {t.lengths} (generated)"
    typer.echo(f"{m.model_type} hidden {m.hidden_size} x{m.num_layers}, {t.n_epochs} epochs, batch {t.batch_size}, lr {t.learning_rate:g}, data {data_name}")
    best = [0.0]

    def show(result) -> None:
        best[0] = max(best[0], result.val_exact_match)
        typer.echo(
            f"epoch {result.epoch:3d}/{t.n_epochs}  train loss {result.train_loss:.4f}  val loss {result.val_loss:.4f}  "
            f"val exact {result.val_exact_match:7.2%}  best {best[0]:7.2%}  {result.seconds:5.1f}s"
        )

    start = time.perf_counter()
    result, run_dir = train_run(config, show)
    typer.echo(
        f"best val exact match {result.best_exact_match:.2%} at epoch {result.best_epoch}; "
        f"{result.n_parameters:,} parameters; {time.perf_counter() - start:.0f}s; checkpoint {run_dir / 'best.pt'}"
    )


@app.command()
@user_errors
def evaluate(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="A best.pt written by `sweep train` or a sweep."),
    data_csv: Path = typer.Argument(..., metavar="DATA.csv", help="Headerless x,y CSV, e.g. from `sweep data`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
) -> None:
    """Unrolled exact-match accuracy of a checkpoint, overall and per input length.

    Example: sweep evaluate runs/run/best.pt data/seq_len_5_only.csv
    """
    from digitsum.checkpoint import load_checkpoint
    from digitsum.data import encode, read_csv
    from digitsum.decode import accuracy
    from digitsum.train import resolve_device

    model, _ = load_checkpoint(checkpoint, resolve_device(device))
    rows = read_csv(data_csv)
    start = time.perf_counter()
    result = accuracy(model, encode(rows))
    seconds = time.perf_counter() - start
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "seconds": round(seconds, 4)}, indent=2))
        return
    typer.echo(f"exact match {result.exact_match:.2%} on {result.n_rows:,} rows ({seconds:.2f}s)")
    for length, value in result.by_length.items():
        typer.echo(f"  length {length:2d}: {value:7.2%}  ({result.rows_by_length[length]:,} rows)")


@app.command()
@user_errors
def predict(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="A best.pt written by `sweep train` or a sweep."),
    sequences: list[str] = typer.Argument(..., help="Digit strings, e.g. 1294 5678."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
) -> None:
    """Decode the digit sum of each sequence, and say whether it is right.

    Example: sweep predict runs/run/best.pt 1294 5678
    """
    from digitsum.checkpoint import load_checkpoint
    from digitsum.data import encode_prompts
    from digitsum.decode import answers_to_text, greedy_decode
    from digitsum.train import resolve_device

    prompts = encode_prompts(sequences)
    model, _ = load_checkpoint(checkpoint, resolve_device(device))
    answers = answers_to_text(greedy_decode(model, prompts))
    rows = [
        {"sequence": s, "answer": a, "expected": str(sum(map(int, s))), "correct": a == str(sum(map(int, s)))}
        for s, a in zip(sequences, answers)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        shown = row["answer"] if row["answer"] is not None else "(no answer)"
        verdict = "right" if row["correct"] else f"wrong, expected {row['expected']}"
        typer.echo(f"{row['sequence']} -> {shown}  ({verdict})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
