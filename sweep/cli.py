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


# ---------------------------------------------------------------------------------------------
# Sweep commands

STORAGE_HELP = "Optuna storage URL (default: $SWEEP_STORAGE or sqlite:///studies/sweep.db); journal:FILE for a journal file."
CHECKPOINT_DIR = Path("studies") / "checkpoints"


def _storage(url: Optional[str]):
    import optuna

    from sweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happens
    return open_storage(url)


@app.command()
@user_errors
def run(
    spec_path: Path = typer.Argument(..., metavar="STUDY.yaml", help="A study spec, e.g. studies/quickstart.yaml."),
    trials: Optional[int] = typer.Option(None, min=1, help="The study's total of finished trials (default: the spec's n_trials)."),
    timeout: Optional[float] = typer.Option(None, min=1, help="Stop starting trials after this many seconds (default: the spec's timeout)."),
    workers: int = typer.Option(1, min=1, help="Worker processes on this machine; torch threads are shared out among them."),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    name: Optional[str] = typer.Option(None, help="Study name (default: the spec's name); a new name starts a new study."),
    checkpoints: Path = typer.Option(CHECKPOINT_DIR, help="Folder for trial checkpoints."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch threads per worker (default: cores / workers)."),
) -> None:
    """Run (or resume) a study: train one model per trial, prune on unrolled validation accuracy.

    Example: sweep run studies/quickstart.yaml --workers 2
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sweep.run import RunPlan, prepare_study, run_study
    from sweep.spec import load_spec
    from sweep.storage import safe_url, default_url

    spec = load_spec(spec_path)
    _check_writable(checkpoints)
    study_name = name or spec.name
    study = prepare_study(spec, _storage(storage), study_name)
    plan = RunPlan(spec, storage, study_name, trials or spec.n_trials, timeout or spec.timeout, workers, checkpoints, threads)
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))
    typer.echo(
        f"study {study_name!r} in {safe_url(storage or default_url())}: {finished} of {plan.n_trials} trials finished; "
        f"{workers} worker(s) x {plan.threads_per_worker} thread(s)"
        + (f"; timeout {plan.timeout:.0f}s" if plan.timeout else "")
    )
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as progress:
        task = progress.add_task(study_name, total=plan.n_trials, completed=min(finished, plan.n_trials))

        def on_trial(trial, best) -> None:
            if trial.user_attrs.get("surplus"):
                return
            seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
            value = f"{trial.value:.4f}" if trial.value is not None else "-"
            if trial.state.name == "PRUNED" and trial.intermediate_values:
                value = f"{trial.intermediate_values[max(trial.intermediate_values)]:.4f}"
            best_text = f"{best:.4f}" if best is not None else "-"
            reason = trial.user_attrs.get("fail_reason") or trial.user_attrs.get("pruned_reason") or ""
            progress.console.print(
                f"trial {trial.number:4d}  {trial.user_attrs.get('model_type', '?'):4s}  {trial.state.name:8s}  "
                f"value {value}  best {best_text}  epochs {trial.user_attrs.get('epochs_run', 0):3d}  {seconds:6.1f}s"
                + (f"  ({reason})" if reason else ""),
                highlight=False, markup=False,
            )
            if trial.state.name in ("COMPLETE", "PRUNED"):
                progress.advance(task)

        try:
            run_study(plan, on_trial)
        except KeyboardInterrupt:
            progress.stop()
            typer.echo("interrupted: finished trials are stored; run the same command to resume", err=True)
            raise typer.Exit(130) from None
        except RuntimeError as error:  # a worker failed, or the storage was lost (StorageLost)
            progress.stop()
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
    _print_best(study_name, storage)


def _check_writable(folder: Path) -> None:
    """Fail before the first trial, not inside every trial, when checkpoints cannot be written."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise DataError(f"cannot write checkpoints to {folder} ({error.strerror}); pass --checkpoints DIR") from None


def _best_summary(study) -> dict:
    from optuna.trial import TrialState

    trial = study.best_trial
    checkpoint = trial.user_attrs.get("checkpoint")
    return {
        "study": study.study_name,
        "trial": trial.number,
        "value": trial.value,
        "metric": study.user_attrs.get("metric", "value"),
        "params": trial.params,
        "val_exact_match": trial.user_attrs.get("val_exact_match"),
        "probe_exact_match": trial.user_attrs.get("probe_exact_match"),
        "probe_by_length": trial.user_attrs.get("probe_by_length"),
        "epochs": trial.user_attrs.get("epochs_run"),
        "n_parameters": trial.user_attrs.get("n_parameters"),
        "seconds_per_epoch": trial.user_attrs.get("seconds_per_epoch"),
        "checkpoint": checkpoint,
        "checkpoint_exists": bool(checkpoint) and Path(checkpoint).is_file(),
        "n_complete": len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
    }


def _print_best(name: str, storage: Optional[str], as_json: bool = False) -> None:
    from sweep.storage import load_study

    study = load_study(name, _storage(storage))
    try:
        summary = _best_summary(study)
    except ValueError:
        raise DataError(f"study {name!r} has no completed trial yet; run it with `sweep run`") from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"best of {name!r}: trial {summary['trial']}, {summary['metric']} {summary['value']:.4f}")
    for key, value in summary["params"].items():
        typer.echo(f"  {key} = {value}")
    if summary["probe_exact_match"] is not None:
        typer.echo(f"  probe (unseen lengths) exact match: {summary['probe_exact_match']:.4f} {summary['probe_by_length']}")
    state = "" if summary["checkpoint_exists"] else " (not on this machine)"
    typer.echo(f"  checkpoint: {summary['checkpoint']}{state}")


@app.command()
@user_errors
def best(
    name: str = typer.Argument(..., help="Study name."),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the best trial of a study: value, parameters, probe accuracy, checkpoint.

    Example: sweep best quickstart --json
    """
    _print_best(name, storage, as_json)


@app.command("ls")
@user_errors
def list_studies(storage: Optional[str] = typer.Option(None, help=STORAGE_HELP)) -> None:
    """List the studies in the storage with trial counts by state and the best value.

    Example: sweep ls --storage sqlite:///studies/sweep.db
    """
    import optuna

    from sweep.storage import study_names

    store = _storage(storage)
    names = study_names(store)
    if not names:
        typer.echo("no studies yet; run `sweep run studies/quickstart.yaml`")
        return
    typer.echo(f"{'study':24s} {'complete':>8s} {'pruned':>7s} {'fail':>5s} {'running':>7s} {'best':>8s}")
    for study_name in names:
        study = optuna.load_study(study_name=study_name, storage=store)
        trials = study.get_trials(deepcopy=False)
        count = lambda state: sum(t.state.name == state for t in trials)  # noqa: E731
        values = [t.value for t in trials if t.state.name == "COMPLETE" and t.value is not None]
        best_text = f"{max(values):.4f}" if values else "-"
        typer.echo(
            f"{study_name:24s} {count('COMPLETE'):8d} {count('PRUNED'):7d} {count('FAIL'):5d} "
            f"{count('RUNNING') + count('WAITING'):7d} {best_text:>8s}"
        )


@app.command()
@user_errors
def export(
    name: str = typer.Argument(..., help="Study name."),
    out: Path = typer.Option(..., "--out", help="CSV file to write."),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
) -> None:
    """Export a study's trials (params, user attributes, states) as CSV.

    Example: sweep export quickstart --out trials.csv
    """
    import os
    import tempfile

    from sweep.storage import load_study

    frame = load_study(name, _storage(storage)).trials_dataframe(
        attrs=("number", "value", "state", "params", "user_attrs", "datetime_start", "datetime_complete", "duration")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_csv(tmp, index=False)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    typer.echo(f"wrote {len(frame)} trials to {out}")


@app.command()
@user_errors
def rerun(
    name: str = typer.Argument(..., help="Study name."),
    trial: int = typer.Argument(..., help="Trial number."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated train.seed values, e.g. 0,1,2 (default: the trial's own)."),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Re-train one trial's config from scratch and show stored and new values.

    Example: sweep rerun quickstart 7 --seeds 0,1,2
    """
    import statistics

    from sweep.objective import rerun as rerun_trial
    from sweep.storage import load_study

    study = load_study(name, _storage(storage))
    try:
        seed_list = [int(s) for s in seeds.split(",")] if seeds else None
    except ValueError:
        raise DataError(f"--seeds {seeds!r}: expected integers separated by commas, like 0,1,2") from None
    stored = next((t for t in study.get_trials(deepcopy=False) if t.number == trial), None)
    results = rerun_trial(study, trial, seed_list)
    values = [r["value"] for r in results]
    summary = {
        "study": name, "trial": trial, "stored_value": stored.value if stored else None,
        "stored_state": stored.state.name if stored else None, "runs": results,
        "mean": statistics.fmean(values), "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    stored_text = f"{summary['stored_value']:.4f}" if summary["stored_value"] is not None else "-"
    typer.echo(f"trial {trial} of {name!r}: stored value {stored_text} ({summary['stored_state']})")
    for r in results:
        probe = f"  probe {r['probe_exact_match']:.4f}" if r["probe_exact_match"] is not None else ""
        typer.echo(f"  seed {r['seed']}: value {r['value']:.4f}  val exact {r['val_exact_match']:.4f}{probe}  epochs {r['epochs']}")
    if len(values) > 1:
        typer.echo(f"  mean {summary['mean']:.4f}, stdev {summary['stdev']:.4f} over {len(values)} seeds")


@app.command()
@user_errors
def report(
    names: list[str] = typer.Argument(..., help="One or more study names; several are compared side by side."),
    out: Optional[Path] = typer.Option(None, "--out", help="HTML file (default: reports/<names>.html)."),
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    attach: bool = typer.Option(True, help="Also attach the comparison figures to each study for optuna-dashboard."),
) -> None:
    """Write one self-contained HTML report (plotly.js embedded: opens offline) comparing trials.

    Example: sweep report quickstart --out reports/quickstart.html
    """
    from sweep.report import figures_for_dashboard, write_report
    from sweep.storage import default_url, load_study, safe_url

    store = _storage(storage)
    studies = [load_study(n, store) for n in names]
    out = out or Path("reports") / f"{'-vs-'.join(names)}.html"
    start = time.perf_counter()
    n_figures = write_report(studies, out, safe_url(storage or default_url()))
    typer.echo(f"wrote {out} ({n_figures} figures, {out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f}s")
    if attach:
        import optuna_dashboard

        for study in studies:
            for index, figure in enumerate(figures_for_dashboard([study])):
                optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=f"sweep-{index}")


@app.command()
@user_errors
def dashboard(
    storage: Optional[str] = typer.Option(None, help=STORAGE_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to bind; loopback unless you mean to share it."),
    port: int = typer.Option(8080, min=1, max=65535, help="Port to listen on."),
) -> None:
    """Browse the studies in optuna-dashboard (the same storage `sweep run` writes).

    Example: sweep dashboard --port 8080   (then open http://127.0.0.1:8080)
    """
    import socket

    import optuna_dashboard

    from sweep.storage import default_url, safe_url

    store = _storage(storage)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise DataError(f"cannot listen on {host}:{port} ({error.strerror}); pick another --port") from None
    typer.echo(f"optuna-dashboard on {safe_url(storage or default_url())}: http://{host}:{port}/  (Ctrl-C stops it)")
    try:
        optuna_dashboard.run_server(store, host=host, port=port)
    except KeyboardInterrupt:
        pass


def main() -> None:
    app()


if __name__ == "__main__":
    main()
