"""The tutorial's scripts as commands: `data`, `train`, `evaluate`, `predict`, and `keys`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from digitsum.lengths import HOLD_LEVEL, IN_RANGE_SAMPLE
from sweep import api
from sweep.cli.app import app
from sweep.cli.options import MAX_SAMPLE, Artifacts, CheckpointArg, Device, Storage
from sweep.cli.output import echo_json


@app.command()
def data(
    out: Annotated[Path, typer.Argument(metavar="OUT.csv", help="CSV file to write (headerless x,y).")],
    lengths: Annotated[str, typer.Option(help="Input lengths: 5, a range 2-4, or a list 2,4,6.")] = "2-4",
    sample: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_SAMPLE, help="Draw a seeded sample of N rows per length instead of all."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of the sample.")] = 0,
    sums: Annotated[
        str | None,
        typer.Option(
            help="Only strings whose digit sum is in this range or list, e.g. 0-36 (what training on 1-4 digits "
            "shows): --sample strings per length (default 5,000), drawn uniformly among them.",
        ),
    ] = None,
) -> None:
    """Write every digit string of the given lengths with its digit sum.

    Example: sweep data data/seq_len_4.csv --lengths 2-4   (or: sweep data data/in-range-20.csv --lengths 20
    --sums 0-36: 5,000 twenty-digit strings a model trained on 1-4 digits can answer)
    """
    from digitsum.data import make_in_range_rows, make_rows, plan_rows, write_csv
    from digitsum.lengths import parse_lengths, parse_sums

    wanted = parse_lengths(lengths)
    if sums is not None:
        rows = make_in_range_rows(wanted, parse_sums(sums), sample or IN_RANGE_SAMPLE, seed)
        write_csv(rows, out)
        typer.echo(f"wrote {len(rows):,} rows (lengths {lengths}, digit sums {sums}) to {out}")
        return
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


TensorboardFlag = Annotated[
    bool,
    typer.Option(
        "--tensorboard/--no-tensorboard",
        help="Write TensorBoard event files into the run folder (needs the tensorboard extra).",
    ),
]


def _starter(tensorboard: bool, progress: _Progress) -> Callable[[Any, Path | None], None]:
    """`sweep train`'s first lines: a missing tensorboard package, a taken run folder, what it trains."""
    from digitsum.runs import run_folder
    from digitsum.tensorboard import missing

    def start(config: Any, taken: Path | None) -> None:
        if tensorboard and (note := missing()) is not None:  # said once, before training; training goes on
            typer.echo(note)
        if taken is not None:
            moved_to = run_folder(config)
            typer.echo(f"{taken} holds an earlier run; this one goes to {moved_to} (name it with train.run_name=...)")
        m, t = config.model, config.train
        progress.start(config)
        data_name = t.dataset_path or f"lengths {t.lengths} (generated)"
        typer.echo(
            f"{m.model_type} hidden {m.hidden_size} x{m.num_layers}, {t.n_epochs} epochs, batch {t.batch_size}, "
            f"lr {t.learning_rate:g}, data {data_name}"
        )

    return start


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
    tensorboard: TensorboardFlag = True,
    probe: Annotated[
        str | None,
        typer.Option(
            metavar="LENGTHS",
            help="Input lengths never trained on (5, 5-6), scored every epoch and logged: length generalization.",
        ),
    ] = None,
) -> None:
    """Train one model, like the tutorial's train.py; writes <log_path>/<run_name>/. `sweep keys` lists the keys.

    With train.n_seeds=K, K seeds train at once (one stacked computation) into seed-S/ folders.
    Ctrl-C (exit 130) or SIGTERM (exit 143) stops it and says where each model's best epoch so far is kept.

    Example: sweep train model.model_type=lstm model.hidden_size=128 train.n_epochs=40
    """
    progress = _Progress()
    start = _starter(tensorboard, progress)
    began = time.perf_counter()
    from sweep.run.signals import stop_on_signals

    with stop_on_signals(threading.Event()) as signals:
        try:
            trained = api.train(
                config_file, overrides or [], overwrite, progress.show, start, tensorboard, probe, signals.stop
            )
        except KeyboardInterrupt:
            progress.interrupted()
            raise typer.Exit(signals.stopped([]).exit_code) from None
    if len(trained.results) > 1:
        _print_seeds(trained, time.perf_counter() - began)
    else:
        _print_run(trained, time.perf_counter() - began, tensorboard)


class _Progress:
    """`sweep train`'s line per epoch, and each model's best so far (what Ctrl-C reports)."""

    def __init__(self) -> None:
        self.epochs = 0
        self.seeds: list[int] = []
        self.checkpoints: list[Path] = []
        self.best: list[tuple[float, int]] = []  # per model: (val exact match, epoch)
        self.done = 0

    def start(self, config: Any) -> None:
        from digitsum.members import config_seeds
        from digitsum.runs import member_folders

        self.epochs, self.seeds = config.train.n_epochs, config_seeds(config.train)
        self.checkpoints = [folder / "best.pt" for folder in member_folders(config)]
        self.best = [(-1.0, 0)] * len(self.seeds)

    def show(self, results: list[Any]) -> None:
        self.done = results[0].epoch
        self.best = [
            (r.val_exact_match, r.epoch) if r.val_exact_match > best[0] else best
            for r, best in zip(results, self.best, strict=True)
        ]
        if len(results) > 1:
            _show_seeds(results, self.epochs)
            return
        result = results[0]
        typer.echo(
            f"epoch {result.epoch:3d}/{self.epochs}  train loss {result.train_loss:.4f}  "
            f"val loss {result.val_loss:.4f}  "
            f"val exact {result.val_exact_match:7.2%}  best {self.best[0][0]:7.2%}  {result.seconds:5.1f}s"
            + (f"  probe {result.probe_exact_match:7.2%}" if result.probe is not None else "")
        )

    def interrupted(self) -> None:
        """Where each model's best epoch so far is kept (written as each became the best)."""
        if not self.done:
            typer.echo("interrupted before the first epoch ended: no checkpoint yet", err=True)
            return
        where = f"interrupted at epoch {self.done + 1}/{self.epochs}"
        kept = [
            f"best so far {path} (epoch {epoch}, val exact {value:.2%})"
            for path, (value, epoch) in zip(self.checkpoints, self.best, strict=True)
        ]
        if len(kept) == 1:
            typer.echo(f"{where}: {kept[0]}", err=True)
            return
        typer.echo(f"{where}; each seed's best model so far is kept:", err=True)
        for seed, line in zip(self.seeds, kept, strict=True):
            typer.echo(f"  seed {seed}: {line}", err=True)


def _print_run(trained: Any, seconds: float, tensorboard: bool) -> None:
    """The run's best epoch and checkpoint, and where its TensorBoard files are."""
    from digitsum.tensorboard import missing

    result = trained.result
    typer.echo(
        f"best val exact match {result.best_exact_match:.2%} at epoch {result.best_epoch}; "
        f"{result.n_parameters:,} parameters; {seconds:.0f}s; checkpoint {trained.checkpoints[0]}"
    )
    if tensorboard and missing() is None:
        typer.echo(f"TensorBoard: tensorboard --logdir {trained.run_dir.parent}")


def _show_seeds(results: list[Any], epochs: int) -> None:
    """One line per epoch of K seeds trained at once: each seed's validation exact match and their mean."""
    scores = [r.val_exact_match for r in results]
    probes = [r.probe for r in results if r.probe is not None]
    inside = [p.in_range.exact_match for p in probes if p.in_range is not None]
    probe = f"  probe mean {sum(p.exact_match for p in probes) / len(probes):6.2%}" if probes else ""
    probe += f" (in range {sum(inside) / len(inside):6.2%})" if inside and len(inside) == len(probes) else ""
    typer.echo(
        f"epoch {results[0].epoch:3d}/{epochs}  val exact per seed "
        + " ".join(f"{s:6.2%}" for s in scores)
        + f"  mean {sum(scores) / len(scores):6.2%}{probe}  {results[0].seconds:5.1f}s for all {len(scores)}"
    )


def _print_seeds(trained: Any, seconds: float) -> None:
    """Each seed's best epoch and checkpoint, then the mean, spread and worst seed over them."""
    from sweep.reruns.stats import Spread

    for seed, result, path in zip(trained.seeds, trained.results, trained.checkpoints, strict=True):
        typer.echo(
            f"seed {seed}: best val exact match {result.best_exact_match:.2%} at epoch {result.best_epoch}; "
            f"checkpoint {path}"
        )
    best = [r.best_exact_match for r in trained.results]
    typer.echo(
        f"best val exact match over {len(best)} seeds: {Spread(tuple(best)).text()}, worst {min(best):.2%}; "
        f"{trained.result.n_parameters:,} parameters each; {seconds:.0f}s for all"
    )


DataCsv = Annotated[
    Path | None,
    typer.Argument(metavar="[DATA.csv]", help="Headerless x,y CSV, e.g. from `sweep data` (or give --lengths)."),
]
CurveLengths = Annotated[
    str | None,
    typer.Option(
        help="Instead of a CSV: the length curve at these input lengths, e.g. 5,10,20,50,100: in-range exact "
        "match on --sample strings per length, drawn among those whose sum occurs in training."
    ),
]
CurveSample = Annotated[int, typer.Option(min=1, max=MAX_SAMPLE, help="Strings per length of --lengths.")]
CurveSeed = Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of --lengths' strings.")]


@app.command()
def evaluate(
    checkpoint: CheckpointArg,
    data_csv: DataCsv = None,
    lengths: CurveLengths = None,
    sample: CurveSample = IN_RANGE_SAMPLE,
    seed: CurveSeed = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    device: Device = "auto",
    storage: Storage = None,
    artifacts: Artifacts = None,
) -> None:
    """Unrolled exact-match accuracy of a checkpoint, overall and per input length.

    Example: sweep evaluate runs/run/best.pt data/seq_len_5_only.csv   (or: sweep evaluate quickstart:best data.csv;
    a train.n_seeds run folder, runs/run, scores every seed and prints the mean and spread;
    sweep evaluate runs/run --lengths 5,10,20,50,100: how far each seed counts)
    """
    from digitsum.device import resolve_device
    from digitsum.errors import UsageError

    where = resolve_device(device, "--device")
    if lengths is not None and data_csv is None:
        _length_curve(api.length_curve(checkpoint, lengths, sample, seed, where, storage, artifacts), as_json)
    elif lengths is not None or data_csv is None:
        raise UsageError("give a DATA.csv to score, or --lengths 5,10,20 for the length curve (not both)")
    elif Path(checkpoint).is_dir():  # a train.n_seeds run folder: every seed at once
        _evaluate_seeds(api.evaluate_seeds(checkpoint, data_csv, where), as_json)
    else:
        _evaluate_one(api.evaluate(checkpoint, data_csv, where, storage, artifacts), as_json)


def _evaluate_one(scored: Any, as_json: bool) -> None:
    """One checkpoint's exact match, per length, and in range."""
    result, seen = scored.accuracy, scored.training_sums
    if as_json:
        echo_json({**result.to_dict(), "seconds": round(scored.seconds, 4)})
        return
    typer.echo(f"exact match {result.exact_match:.2%} on {result.n_rows:,} rows ({scored.seconds:.2f}s)")
    inside = result.in_range
    for length, value in result.by_length.items():
        line = f"  length {length:2d}: {value:7.2%}  ({result.rows_by_length[length]:,} rows)"
        if inside is not None and length in inside.by_length:
            line += f"; in range {inside.by_length[length]:7.2%}  ({inside.rows_by_length[length]:,} rows)"
        typer.echo(line)
    if seen is not None:
        typer.echo(f"  in range: rows whose sum occurs in the model's training rows ({_sums_text(seen)})")


def _evaluate_seeds(scored: Any, as_json: bool) -> None:
    """Each seed's exact match, then their mean, spread and worst (`sweep evaluate RUN_FOLDER`)."""
    from sweep.reruns.stats import Spread

    values = [a.exact_match for a in scored.accuracies]
    spread = Spread(tuple(values))
    if as_json:
        per_seed = {str(seed): a.to_dict() for seed, a in zip(scored.seeds, scored.accuracies, strict=True)}
        echo_json({"per_seed": per_seed, "mean": spread.mean, "sd": spread.stdev, "worst": min(values)})
        return
    for seed, result in zip(scored.seeds, scored.accuracies, strict=True):
        lengths = ", ".join(f"length {n} {v:.2%}" for n, v in result.by_length.items())
        inside = f"; in range {result.in_range.exact_match:.2%}" if result.in_range is not None else ""
        typer.echo(f"seed {seed}: exact match {result.exact_match:.2%} ({lengths}){inside}")
    typer.echo(
        f"over {len(values)} seeds: {spread.text()}, worst {min(values):.2%}; {scored.accuracies[0].n_rows:,} rows, "
        f"all seeds decoded in {scored.seconds:.2f}s"
    )


def _length_curve(curve: Any, as_json: bool) -> None:
    """Each seed's in-range exact match per length, the mean and worst, and how far each holds (HOLD_LEVEL)."""
    held = curve.holds_up_to()
    if as_json:
        per_seed = {
            str(seed): {"by_length": dict(zip(map(str, curve.lengths), values, strict=True)), "holds_99_up_to": h}
            for seed, values, h in zip(curve.seeds, curve.exact_match, held, strict=True)
        }
        echo_json({"lengths": curve.lengths, "sample": curve.sample, "sums": curve.sums, "per_seed": per_seed,
                   "seconds": round(curve.seconds, 3)})  # fmt: skip
        return
    typer.echo(
        f"in-range exact match by input length: {curve.sample:,} strings per length, drawn uniformly among "
        f"those whose sum occurs in training ({_sums_text(curve.sums)}); {curve.seconds:.1f}s"
    )
    several = len(curve.seeds) > 1
    typer.echo(f"{'length':>7s} " + " ".join(f"{'seed ' + str(s):>9s}" for s in curve.seeds)
               + (f" {'mean':>8s} {'worst':>8s}" if several else ""))  # fmt: skip
    for i, length in enumerate(curve.lengths):
        values = [v[i] for v in curve.exact_match]
        extra = f" {sum(values) / len(values):8.2%} {min(values):8.2%}" if several else ""
        typer.echo(f"{length:7d} " + " ".join(f"{v:9.2%}" for v in values) + extra)
    holds = ", ".join(
        f"seed {s}: {f'{h} digits' if h is not None else f'not even {curve.lengths[0]}'}"
        for s, h in zip(curve.seeds, held, strict=True)
    )
    typer.echo(f"holds >= {HOLD_LEVEL:.0%} up to: {holds}")


def _sums_text(seen: Any) -> str:
    import numpy as np

    sums = np.unique(seen)
    contiguous = len(sums) == int(sums[-1]) - int(sums[0]) + 1
    return f"sums {sums[0]}-{sums[-1]}" if contiguous else f"{len(sums)} distinct sums"


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
    from digitsum.data import encode_prompts
    from digitsum.device import resolve_device

    encode_prompts(sequences)  # a bad sequence is named before the device or the checkpoint
    rows = api.answers(checkpoint, sequences, resolve_device(device, "--device"), storage, artifacts)
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        shown = row["answer"] if row["answer"] is not None else "(no answer)"
        verdict = "right" if row["correct"] else f"wrong, expected {row['expected']}"
        typer.echo(f"{row['sequence']} -> {shown}  ({verdict})")


@app.command()
def keys(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the Markdown tables of docs/keys.md instead.")
    ] = False,
) -> None:
    """Every config key (sweep train, --config, a spec's fixed and space) and every study-spec key.

    Example: sweep keys --markdown
    """
    from sweep.spec.reference import key_tables

    typer.echo(key_tables(markdown))
