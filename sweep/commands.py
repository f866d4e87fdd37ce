"""What each `sweep` command does, once `sweep.cli` has parsed its arguments: call, then print.

Each function imports the heavy parts (torch, optuna) itself, so a command loads only what it
uses; errors a user can fix are raised as `UsageError` and printed by the CLI's error boundary.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from digitsum.errors import DataError

if TYPE_CHECKING:
    import optuna

    from digitsum.train import EpochResult


def _echo_json(value: Any) -> None:
    """JSON that every parser reads: an infinite value (a target never reached) is written as null."""
    typer.echo(json.dumps(_finite(value), indent=2))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Core commands


def _load_config_file(path: Path) -> dict[str, Any]:
    from digitsum.files import require_file
    from sweep.spec import read_yaml

    require_file(path, "config file", "give a YAML or JSON file of config keys, like {model: {hidden_size: 64}}")
    values = read_yaml(path, DataError) or {}
    if not isinstance(values, dict):
        raise DataError(f"{path}: expected a mapping of config keys, like {{model: {{hidden_size: 64}}}}")
    return values


def train_one(config_file: Path | None, overrides: list[str], overwrite: bool = False) -> None:
    from digitsum import config as cfg
    from digitsum.train import train_run

    values = _load_config_file(config_file) if config_file else {}
    given = cfg.parse_overrides(overrides)
    config = cfg.apply(cfg.from_dict(values), given)
    named = "train.run_name" in {**cfg.flatten(values), **given}
    config = _free_run_folder(config, named, overwrite)
    m, t = config.model, config.train
    data_name = t.dataset_path or f"lengths {t.lengths} (generated)"
    typer.echo(
        f"{m.model_type} hidden {m.hidden_size} x{m.num_layers}, {t.n_epochs} epochs, batch {t.batch_size}, "
        f"lr {t.learning_rate:g}, data {data_name}"
    )
    best = [0.0]

    def show(result: EpochResult) -> None:
        best[0] = max(best[0], result.val_exact_match)
        typer.echo(
            f"epoch {result.epoch:3d}/{t.n_epochs}  train loss {result.train_loss:.4f}  "
            f"val loss {result.val_loss:.4f}  "
            f"val exact {result.val_exact_match:7.2%}  best {best[0]:7.2%}  {result.seconds:5.1f}s"
        )

    start = time.perf_counter()
    result, run_dir = train_run(config, show)
    typer.echo(
        f"best val exact match {result.best_exact_match:.2%} at epoch {result.best_epoch}; "
        f"{result.n_parameters:,} parameters; {time.perf_counter() - start:.0f}s; checkpoint {run_dir / 'best.pt'}"
    )


def _free_run_folder(config: Any, named: bool, overwrite: bool) -> Any:
    """Never write over an earlier run unasked: an unnamed run takes the next free name (run-2, ...);
    a named one that exists is refused unless ``overwrite``."""
    from digitsum import config as cfg

    folder = Path(config.train.log_path) / config.train.run_name
    if not folder.is_dir() or not any(folder.iterdir()) or overwrite:
        return config
    if named:
        raise DataError(f"{folder} holds an earlier run; pick another train.run_name, or add --overwrite to replace it")
    number = 2
    while (free := folder.with_name(f"{folder.name}-{number}")).exists():
        number += 1
    typer.echo(f"{folder} holds an earlier run; this one goes to {free} (name it with train.run_name=...)")
    return cfg.apply(config, {"train.run_name": free.name})


@contextlib.contextmanager
def checkpoint_file(checkpoint: str, storage: str | None, artifacts: str | None) -> Iterator[Path]:
    """A checkpoint file's path, or ``STUDY:TRIAL`` (``STUDY:best``) fetched from the study's artifact store."""
    from sweep import artifacts as store_of

    path = Path(checkpoint)
    study_name, colon, trial = checkpoint.rpartition(":")
    if path.exists() or not colon or not study_name or not (trial.isdigit() or trial == "best"):
        yield path  # load_checkpoint names a missing file
        return
    from sweep.ledger import best_trial
    from sweep.records import TrialRecord
    from sweep.storage import load_study

    study = load_study(study_name, open_store(storage))
    trials = study.get_trials(deepcopy=False)  # `study.trials` would deep-copy every trial
    if trial == "best":
        try:
            frozen = best_trial(study)
        except ValueError:
            raise DataError(f"study {study_name!r} has no completed trial yet; run it with `sweep run`") from None
    elif int(trial) < len(trials):
        frozen = trials[int(trial)]
    else:
        raise DataError(f"study {study_name!r} has no trial {trial} (it has {len(trials)}); see `sweep ls`")
    store = store_of.store_for(artifacts, study, storage)
    with store_of.fetched(store, TrialRecord.read(frozen), frozen.number) as fetched:
        yield fetched


def evaluate(
    checkpoint: str,
    data_csv: Path,
    device: str,
    as_json: bool,
    storage: str | None = None,
    artifacts: str | None = None,
) -> None:
    from digitsum.checkpoint import load_checkpoint
    from digitsum.data import encode, read_csv
    from digitsum.decode import accuracy, answers_in_range
    from digitsum.device import resolve_device

    where = resolve_device(device, "--device")
    rows = read_csv(data_csv)
    with checkpoint_file(checkpoint, storage, artifacts) as path:
        model, payload = load_checkpoint(path, where)
    seen = _training_answers(payload["config"])
    start = time.perf_counter()
    result = accuracy(model, encode(rows), answers_in_range(rows.y, seen) if seen is not None else None)
    seconds = time.perf_counter() - start
    if as_json:
        _echo_json({**result.to_dict(), "seconds": round(seconds, 4)})
        return
    typer.echo(f"exact match {result.exact_match:.2%} on {result.n_rows:,} rows ({seconds:.2f}s)")
    inside = result.in_range
    for length, value in result.by_length.items():
        line = f"  length {length:2d}: {value:7.2%}  ({result.rows_by_length[length]:,} rows)"
        if inside is not None and length in inside.by_length:
            line += f"; in range {inside.by_length[length]:7.2%}  ({inside.rows_by_length[length]:,} rows)"
        typer.echo(line)
    if seen is not None:
        typer.echo(f"  in range: rows whose sum occurs in the model's training rows ({_sums_text(seen)})")


def _training_answers(config_values: dict[str, Any]) -> Any:
    """The digit sums of the rows the checkpoint's model trained on; None where they cannot be rebuilt
    (a training CSV that is not on this machine)."""
    from digitsum import config as cfg
    from digitsum.datasets import data_split
    from digitsum.errors import UsageError

    try:
        train, _ = data_split(cfg.from_dict(config_values).train)
    except (UsageError, OSError):
        return None
    return train.y


def _sums_text(seen: Any) -> str:
    import numpy as np

    sums = np.unique(seen)
    contiguous = len(sums) == int(sums[-1]) - int(sums[0]) + 1
    return f"sums {sums[0]}-{sums[-1]}" if contiguous else f"{len(sums)} distinct sums"


def predict(
    checkpoint: str,
    sequences: list[str],
    device: str,
    as_json: bool,
    storage: str | None = None,
    artifacts: str | None = None,
) -> None:
    from digitsum.checkpoint import load_checkpoint
    from digitsum.data import encode_prompts
    from digitsum.decode import answers_to_text, greedy_decode
    from digitsum.device import resolve_device

    prompts = encode_prompts(sequences)
    where = resolve_device(device, "--device")
    with checkpoint_file(checkpoint, storage, artifacts) as path:
        model, _ = load_checkpoint(path, where)
    answers = answers_to_text(greedy_decode(model, prompts))
    rows = []
    for sequence, answer in zip(sequences, answers, strict=True):
        expected = str(sum(map(int, sequence)))
        rows.append({"sequence": sequence, "answer": answer, "expected": expected, "correct": answer == expected})
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        shown = row["answer"] if row["answer"] is not None else "(no answer)"
        verdict = "right" if row["correct"] else f"wrong, expected {row['expected']}"
        typer.echo(f"{row['sequence']} -> {shown}  ({verdict})")


# ---------------------------------------------------------------------------------------------
# Sweep commands


def open_store(url: str | None, create: bool = False) -> optuna.storages.BaseStorage:
    """The storage a command works on; only ``create`` makes a storage file that is not there yet."""
    import optuna

    from sweep.storage import open_storage, require_existing

    if not create:
        require_existing(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happens
    return open_storage(url)


def _storage_text(url: str | None) -> str:
    from sweep.storage import default_url, safe_url

    return safe_url(url or default_url())


def prepare(
    spec_path: str | Path,
    storage: str | None,
    *,
    name: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    artifacts: str | None = None,
    threads: int | None = None,
    oversubscribe: bool = False,
) -> tuple[Any, optuna.Study]:
    """The checked plan of a run and its study, made or resumed (for `sweep run` and sweep.api.run)."""
    from sweep.artifacts import location_for
    from sweep.run import RunPlan, prepare_study
    from sweep.spec import check_study_name, load_spec

    if name is not None:
        check_study_name(name)
    spec = load_spec(spec_path)
    _check_cores(workers, threads, oversubscribe)
    chosen = location_for(artifacts, None, storage)  # recorded by a new study
    study = prepare_study(spec, open_store(storage, create=True), name or spec.name, chosen)
    location = location_for(artifacts, study, storage)
    _check_writable(location)
    plan = RunPlan(
        spec=spec,
        storage_url=storage,
        study_name=name or spec.name,
        n_trials=trials or spec.n_trials,
        timeout=timeout or spec.timeout,
        workers=workers,
        artifacts=location,
        threads=threads,
    )
    return plan, study


def run(
    spec_path: Path,
    storage: str | None,
    *,
    name: str | None,
    trials: int | None,
    timeout: float | None,
    workers: int,
    artifacts: str | None,
    threads: int | None,
    oversubscribe: bool = False,
) -> None:
    from sweep.ledger import FINISHED

    plan, study = prepare(
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
    from sweep.storage import close_study

    study_name = plan.study_name
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    close_study(study)  # the workers open their own; no idle connections held through the run
    where = f"study {study_name!r} in {_storage_text(storage)}"
    if finished >= plan.n_trials:
        typer.echo(
            f"{where} already has {finished} finished trials, the budget of {plan.n_trials}: "
            f"nothing to run (give --trials {finished + 10}, say, to add 10)"
        )
    else:
        typer.echo(
            f"{where}: {finished} of {plan.n_trials} trials finished; "
            f"{workers} worker(s) x {plan.threads_per_worker} thread(s)"
            + (f"; timeout {plan.timeout:.0f}s" if plan.timeout else "")
        )
        _run_with_progress(plan, finished)
    print_best(study_name, storage)


def _run_with_progress(plan: Any, finished: int) -> None:
    """run_study with a progress bar and a line per trial; Ctrl-C exits 130, a lost worker or storage 1."""
    from sweep.progress import TrialPrinter
    from sweep.run import run_study

    with TrialPrinter(plan.study_name, plan.n_trials, finished) as printer:
        try:
            run_study(plan, printer.on_trial)
        except KeyboardInterrupt:
            printer.stop()
            typer.echo("interrupted: finished trials are stored; run the same command to resume", err=True)
            raise typer.Exit(130) from None
        except RuntimeError as error:  # a worker failed, or the storage was lost (StorageLost)
            printer.stop()
            from sweep.cli import say_error

            say_error(str(error))
            raise typer.Exit(1) from None


def check(spec_path: Path) -> None:
    """Validate a spec and print what it will run, without training or opening a storage."""
    from digitsum import config as cfg
    from sweep.spec import load_spec

    spec = load_spec(spec_path)
    typer.echo(f"{spec_path}: study {spec.name!r}, valid")
    goals = ", ".join(f"{g.metric} ({g.direction})" for g in spec.goals)
    typer.echo(f"  objectives: {goals}; accuracies from each trial's {spec.value_from} epoch; target {spec.target:g}")
    for constraint in spec.constraints:
        typer.echo(f"  constraint: {constraint.name}")
    typer.echo(f"  search space ({len(spec.space)} dimensions):")
    width = max(len(p.key) for p in spec.space)
    for param in spec.space:
        typer.echo(f"    {param.key:{width}s}  {_dimension_text(param)}")
    fixed = ", ".join(f"{k}={v}" for k, v in cfg.changed_keys(spec.base).items())
    typer.echo(f"  fixed, where not the default: {fixed or 'nothing'} (defaults: sweep keys)")
    rule = spec.early_stop
    on_curve = ""
    if rule is not None:
        among = f"within each {rule.group_by}" if rule.group_by else "across all trials"
        on_curve = f"; the median rule on validation curves, {among}"
    typer.echo(f"  sampler: {_component_text(spec.sampler)}; pruner: {_component_text(spec.pruner)}{on_curve}")
    _print_data_and_budget(spec)


def _print_data_and_budget(spec: Any) -> None:
    from digitsum.datasets import data_split, probe_rows

    train, val = data_split(spec.base.train)
    probe = probe_rows(spec.probe)
    source = spec.base.train.dataset_path or f"lengths {spec.base.train.lengths}"
    typer.echo(
        f"  data: {source}: {len(train) + len(val):,} rows, {len(train):,} train and {len(val):,} validation"
        + (" (trials that search train.lengths differ)" if any(p.key == "train.lengths" for p in spec.space) else "")
    )
    if probe is not None:
        typer.echo(f"  probe: lengths {', '.join(map(str, spec.probe.lengths))}: {len(probe):,} rows")
    epochs = spec.base.train.n_epochs
    timeout = f"; no new trial after {spec.timeout:g} s" if spec.timeout else ""
    typer.echo(
        f"  budget: at most {spec.n_trials} trials x {epochs} epochs = {spec.n_trials * epochs:,} epochs{timeout}"
    )


def _dimension_text(param: Any) -> str:
    when = "".join(f" when {k} in {list(v)}" for k, v in param.when.items())
    if param.choices is not None:
        return f"choices {list(param.choices)}{when}"
    kind = "int" if param.is_int else "float"
    shown = [int(param.low), int(param.high)] if param.is_int else [param.low, param.high]
    extra = " log" if param.log else (f" step {param.step:g}" if param.step else "")
    return f"{kind} {shown[0]:g}..{shown[1]:g}{extra}{when}"


def _component_text(component: dict[str, Any]) -> str:
    settings = ", ".join(f"{k} {v}" for k, v in component.items() if k != "type")
    return f"{component['type']}" + (f" ({settings})" if settings else "")


def _check_cores(workers: int, threads: int | None, oversubscribe: bool) -> None:
    """Refuse more torch threads in all than this machine has cores, unless asked: they only contend."""
    from sweep.run import available_cores

    cores = available_cores()
    each = threads or max(1, cores // workers)
    if workers * each > cores and not oversubscribe:
        raise DataError(
            f"--workers {workers} x {each} thread(s) = {workers * each} threads on {cores} cores: every trial would "
            f"slow down (5-18x was seen here); use --workers {max(1, cores // each)}, or add --oversubscribe"
        )


def _check_writable(location: str) -> None:
    """Fail before the first trial, not inside every trial, when checkpoints cannot be written: the
    artifact folder, or the bucket (a missing one, or refused credentials)."""
    from sweep.artifacts import S3, check_bucket

    if location.startswith(S3):
        check_bucket(location)
        return
    folder = Path(location)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise DataError(
            f"cannot write checkpoints to {folder} ({error.strerror}); pass --artifacts DIR or s3://BUCKET/PREFIX"
        ) from None


def best_summary(study: optuna.Study) -> dict[str, Any]:
    """The best trial as `sweep best --json` prints it; ValueError when no trial is complete."""
    from optuna.trial import TrialState

    from sweep.artifacts import has_checkpoint
    from sweep.ledger import best_trial
    from sweep.records import StudyMeta, TrialRecord, read_reruns

    trial = best_trial(study)
    record = TrialRecord.read(trial)
    return {
        "study": study.study_name,
        "trial": trial.number,
        "value": trial.value,
        "metric": StudyMeta.read(study).metric,
        "params": trial.params,
        "val_exact_match": record.val_exact_match,
        "probe_exact_match": record.probe_exact_match,
        "probe_by_length": record.probe_by_length or None,
        "probe_in_range_exact_match": record.probe_in_range_exact_match,
        "probe_in_range_by_length": record.probe_in_range_by_length or None,
        "epochs": record.epochs_run,
        "n_parameters": record.n_parameters,
        "seconds_per_epoch": record.seconds_per_epoch,
        "checkpoint": _checkpoint_text(study, record),
        "checkpoint_exists": has_checkpoint(record),
        "n_complete": len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
        "over_seeds": _over_seeds(read_reruns(study), trial.number),
    }


def _checkpoint_text(study: optuna.Study, record: Any) -> str | None:
    """Where the trial's checkpoint is: ``artifact ID in LOCATION``, or a path (studies made before artifacts)."""
    from sweep.records import StudyMeta

    if record.artifact_id:
        return f"artifact {record.artifact_id} in {StudyMeta.read(study).artifacts or 'the default store'}"
    return record.checkpoint


def _over_seeds(reruns: list[Any], number: int) -> dict[str, Any] | None:
    """The trial's stored seed reruns (of ``reruns``, the study's): validation exact match mean and spread."""
    from sweep.compare import Spread

    runs = [r for r in reruns if r.trial == number]
    if not runs:
        return None
    spread = Spread(tuple(r.val_exact_match for r in runs))
    return {"seeds": [r.seed for r in runs], "val_exact_match_mean": spread.mean, "val_exact_match_stdev": spread.stdev}


def _seeds_text(over: dict[str, Any] | None) -> str:
    if over is None:
        return "no seed reruns (sweep rerun NAME TRIAL --seeds 0,1,2)"
    mean, sd, n = 100 * over["val_exact_match_mean"], 100 * over["val_exact_match_stdev"], len(over["seeds"])
    return f"{mean:.2f}% +- {sd:.2f} over {n} seeds"


def pareto_summary(study: optuna.Study) -> dict[str, Any]:
    """The Pareto set of a study with several objectives, as `sweep best --json` prints it."""
    from sweep.objectives import objectives_from_stored
    from sweep.records import StudyMeta, TrialRecord, model_type, read_reruns

    meta = StudyMeta.read(study)
    goals = objectives_from_stored(meta.objectives, meta.metric)
    reruns = read_reruns(study)  # one read of the study's attributes, not one per row
    rows = []
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        record = TrialRecord.read(trial)
        rows.append(
            {
                "trial": trial.number,
                "values": {str(goal.metric): value for goal, value in zip(goals, trial.values, strict=True)},
                "model_type": model_type(trial),
                "n_parameters": record.n_parameters,
                "params": trial.params,
                "checkpoint": _checkpoint_text(study, record),
                "over_seeds": _over_seeds(reruns, trial.number),
            }
        )
    return {
        "study": study.study_name,
        "objectives": [goal.to_dict() for goal in goals],
        "constraints": meta.constraints,
        "pareto": rows,
    }


def _print_pareto(summary: dict[str, Any]) -> None:
    names = [o["metric"] for o in summary["objectives"]]
    directions = ", ".join(f"{o['metric']} ({o['direction']})" for o in summary["objectives"])
    typer.echo(f"Pareto set of {summary['study']!r}: {len(summary['pareto'])} trial(s) on {directions}")
    typer.echo(f"{'trial':>6s}  {'model':5s} {'parameters':>10s}  " + "  ".join(f"{n:>17s}" for n in names))
    for row in summary["pareto"]:
        values = "  ".join(f"{row['values'][n]:17.6g}" for n in names)
        typer.echo(f"{row['trial']:6d}  {row['model_type']:5s} {row['n_parameters'] or 0:10,d}  {values}")
        typer.echo(f"{'':6s}  validation exact match {_seeds_text(row['over_seeds'])}")


def print_best(name: str, storage: str | None, as_json: bool = False) -> None:
    from sweep.storage import load_study

    study = load_study(name, open_store(storage))
    if len(study.directions) > 1:
        summary = pareto_summary(study)
        if not summary["pareto"]:
            raise DataError(f"study {name!r} has no completed (feasible) trial yet; run it with `sweep run`")
        if as_json:
            _echo_json(summary)
        else:
            _print_pareto(summary)
        return
    try:
        summary = best_summary(study)
    except ValueError:
        raise DataError(f"study {name!r} has no completed trial yet; run it with `sweep run`") from None
    if as_json:
        _echo_json(summary)
        return
    typer.echo(f"best of {name!r}: trial {summary['trial']}, {summary['metric']} {summary['value']:.4f}")
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
    typer.echo(f"  checkpoint: {summary['checkpoint']}{state}")
    typer.echo(f"  validation exact match {_seeds_text(summary['over_seeds'])}")


def list_studies(storage: str | None) -> None:
    """Each study's trial counts and best value, from counting queries: no study's trials are loaded."""
    from optuna.trial import TrialState

    from sweep.storage import best_value, trial_counts

    store = open_store(storage)
    summaries = store.get_all_studies()
    if not summaries:
        typer.echo(f"no studies yet in {_storage_text(storage)}; run `sweep run quickstart`")
        return
    typer.echo(f"studies in {_storage_text(storage)}:")
    typer.echo(f"{'study':24s} {'complete':>8s} {'pruned':>7s} {'fail':>5s} {'running':>7s} {'best':>8s}")
    for summary in summaries:
        study_id = summary._study_id
        counts = trial_counts(store, study_id)
        best = best_value(store, study_id) if len(summary.directions) == 1 else None
        best_text = f"{len(summary.directions)} obj." if len(summary.directions) > 1 else _number_text(best)
        typer.echo(
            f"{summary.study_name:24s} {counts[TrialState.COMPLETE]:8d} {counts[TrialState.PRUNED]:7d} "
            f"{counts[TrialState.FAIL]:5d} {counts[TrialState.RUNNING] + counts[TrialState.WAITING]:7d} {best_text:>8s}"
        )


def _number_text(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"


def export(name: str, out: Path, storage: str | None) -> None:
    from digitsum.files import atomic_path
    from sweep.records import trials_table
    from sweep.storage import load_study

    frame = trials_table(load_study(name, open_store(storage)))
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False)
    typer.echo(f"wrote {len(frame)} trials to {out}")


def rerun(
    name: str,
    number: int | None,
    seeds: list[int] | None,
    storage: str | None,
    as_json: bool,
    *,
    top: int | None = None,
    workers: int = 1,
    threads: int | None = None,
    again: bool = False,
    oversubscribe: bool = False,
) -> None:
    from digitsum.config import check_value as cfg_check_value
    from sweep.reruns import check_trial, choose_trials, pending, run_jobs, summary
    from sweep.run import available_cores
    from sweep.storage import load_study

    _check_cores(workers, threads, oversubscribe)
    study = load_study(name, open_store(storage))
    if (number is None) == (top is None):
        raise DataError("give a TRIAL number or --top K (the K best trials of each model type), not both or neither")
    if number is not None:
        check_trial(study, number)
    numbers = [number] if number is not None else [t.number for t in choose_trials(study, top or 1)]
    seed_list = seeds or ([_own_seed(study, number)] if number is not None else [0, 1, 2])
    for seed in seed_list:  # refused before anything is trained or printed
        cfg_check_value("train.seed", seed)
    jobs = pending(study, numbers, seed_list, again)
    threads_each = threads or (max(1, available_cores() // workers) if workers > 1 else 0)
    if not as_json:
        typer.echo(
            f"{len(numbers)} trial(s) x {len(seed_list)} seed(s): {len(jobs)} to train, "
            f"{len(numbers) * len(seed_list) - len(jobs)} stored already; {workers} worker(s)"
        )
    run_jobs(storage, name, jobs, workers, threads_each, None if as_json else _print_rerun)
    rows = summary(load_study(name, open_store(storage)), numbers, seed_list)
    if as_json:
        _echo_json({"study": name, **rows[0]} if number is not None else {"study": name, "trials": rows})
        return
    for row in rows:
        _print_rerun_summary(name, row)


def _own_seed(study: optuna.Study, number: int) -> int:
    """The seed the trial trained with: its parameter, else its study's base config's."""
    from sweep.records import StudyMeta

    trial = study.trials[number]
    base = StudyMeta.read(study).base_config or {}
    return int(trial.params.get("train.seed", base.get("train", {}).get("seed", 0)))


def _print_rerun(record: Any) -> None:
    typer.echo(f"  trained trial {record.trial}, seed {record.seed}: value {record.value:.4f}")


def _print_rerun_summary(name: str, row: dict[str, Any]) -> None:
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


def report(
    names: list[str], out: Path | None, storage: str | None, attach: bool, artifacts: str | None = None
) -> tuple[Path, int]:
    """Write the report; returns its path and number of figures."""
    from sweep.report import figures_for_dashboard, write_report
    from sweep.storage import load_study

    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"study {twice[0]!r} is named twice; name each study once")
    store = open_store(storage)
    studies = [load_study(n, store) for n in names]
    out = out or Path("reports") / report_file_name(names)
    n_figures = write_report(studies, out, _storage_text(storage), _artifact_stores(studies, storage, artifacts))
    if attach:
        import optuna_dashboard

        for study in studies:
            for index, figure in enumerate(figures_for_dashboard([study])):
                optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=f"sweep-{index}")
    return out, n_figures


def report_file_name(names: list[str]) -> str:
    """reports/A-vs-B.html's name: each study's name with anything but letters, digits, '.', '_' and '-'
    as '_' (studies named before names were checked), cut to what a file system takes."""
    import hashlib
    import re

    stem = "-vs-".join(re.sub(r"[^A-Za-z0-9._-]", "_", name) for name in names).lstrip(".") or "_"
    if len(stem) > 200:
        stem = f"{stem[:180]}-{hashlib.sha256(stem.encode()).hexdigest()[:8]}"
    return f"{stem}.html"


def _artifact_stores(studies: list[optuna.Study], storage: str | None, artifacts: str | None) -> dict[str, Any]:
    """Each study's artifact store, by study name."""
    from sweep.artifacts import store_for

    return {s.study_name: store_for(artifacts, s, storage) for s in studies}


def download_best(name: str, storage: str | None, folder: Path, artifacts: str | None) -> None:
    """Fetch the best trial's checkpoint (each Pareto trial's) into `folder`."""
    from sweep import artifacts as store_of
    from sweep.run import best_numbers
    from sweep.storage import load_study

    study = load_study(name, open_store(storage))
    store = store_of.store_for(artifacts, study, storage)
    folder.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    for number in sorted(best_numbers(study)):
        path = store_of.fetch(store, trials[number], folder)
        typer.echo(f"checkpoint of trial {number}: {path}  (sweep predict {path} 1294)")


def _bind_problem(host: str, port: int, error: Exception) -> str:
    """Why the dashboard cannot listen, and the hint that fits: the port is taken, or the host is wrong."""
    import errno
    import socket

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


def remove(name: str, storage: str | None, yes: bool, artifacts: str | None = None) -> None:
    """Delete a study and its checkpoints, after asking (or with ``yes``)."""
    import sys

    import optuna

    from sweep import artifacts as store_of
    from sweep.records import TrialRecord
    from sweep.storage import load_study

    store = open_store(storage)
    study = load_study(name, store)
    records = [TrialRecord.read(t) for t in study.get_trials(deepcopy=False)]
    stored = [r for r in records if r.artifact_id]
    files = [r for r in records if not r.artifact_id and r.checkpoint and Path(r.checkpoint).is_file()]
    n_trials = len(records)
    what = f"study {name!r} ({n_trials} trials) and its checkpoints"
    if not yes:
        if not sys.stdin.isatty():
            raise DataError(f"sweep rm deletes {what}; add --yes to confirm without a terminal")
        if not typer.confirm(f"Delete {what}?"):
            typer.echo("nothing deleted")
            return
    artifact_store = store_of.store_for(artifacts, study, storage) if stored else None
    optuna.delete_study(study_name=name, storage=store)
    for record in stored + files:
        store_of.remove(artifact_store, record)
    _remove_empty_folders(files, name)
    typer.echo(f"deleted study {name!r} ({n_trials} trials) and {len(stored) + len(files)} checkpoint(s)")


def _remove_empty_folders(records: list[Any], name: str) -> None:
    """The per-study checkpoint folders of a study made before artifacts, once empty."""
    import shutil

    for folder in {Path(r.checkpoint).parent for r in records}:
        if folder.name == name and folder.is_dir() and not any(folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)


def dashboard(storage: str | None, host: str, port: int, artifacts: str | None = None) -> None:
    import socket

    import optuna_dashboard

    from sweep.artifacts import open_store as open_artifacts

    store = open_store(storage)
    location = _dashboard_artifacts(store, storage, artifacts)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except (OSError, UnicodeError, TypeError, ValueError) as error:
            raise DataError(_bind_problem(host, port, error)) from None
    typer.echo(f"optuna-dashboard on {_storage_text(storage)}: http://{host}:{port}/  (Ctrl-C stops it)")
    typer.echo(f"checkpoints from the artifact store {location}")
    with contextlib.suppress(KeyboardInterrupt):
        optuna_dashboard.run_server(store, host=host, port=port, artifact_store=open_artifacts(location))


def _dashboard_artifacts(store: optuna.storages.BaseStorage, storage: str | None, artifacts: str | None) -> str:
    """One artifact store for the whole server: --artifacts, else the one the studies recorded, else
    the default. Studies that recorded different stores need --artifacts (one server per store)."""
    from sweep.artifacts import location_for

    if artifacts:
        return location_for(artifacts, None, storage)
    from sweep.records import recorded_artifacts

    recorded = {recorded_artifacts(s) for s in store.get_all_studies()} - {None}
    return str(recorded.pop()) if len(recorded) == 1 else location_for(None, None, storage)
