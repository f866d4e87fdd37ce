"""Study commands: `check` a spec, `run` it, `enqueue` warm starts, read the `best` trial, list (`ls`),
`export`, `rm` and `copy` studies."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sweep import api
from sweep.cli.app import app
from sweep.cli.options import (
    MAX_PROCESSES,
    MAX_TRIALS,
    Artifacts,
    AsJson,
    Oversubscribe,
    SpecPath,
    Storage,
    StudyName,
    TensorboardDir,
)
from sweep.cli.output import echo_json, number_text, seeds_text

Trials = Annotated[
    int | None,
    typer.Option(min=1, max=MAX_TRIALS, help="The study's total of finished trials (default: the spec's n_trials)."),
]
Timeout = Annotated[
    float | None,
    typer.Option(min=1, help="Stop starting trials after this many seconds (default: the spec's timeout)."),
]
Workers = Annotated[
    int,
    typer.Option(
        min=1, max=MAX_PROCESSES, help="Worker processes on this machine; torch threads are shared out among them."
    ),
]
Threads = Annotated[
    int | None, typer.Option(min=1, max=MAX_PROCESSES, help="Torch threads per worker (default: cores / workers).")
]
Stack = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=64,
        help="Trials each worker trains at once, as one computation (those sharing shapes and batch plan; "
        "default: the spec's stack, 1).",
    ),
]


@app.command()
def check(spec_path: SpecPath, storage: Storage = None, artifacts: Artifacts = None) -> None:
    """Check a study spec without training: the resolved space, sampler, pruner, data sizes, budget, and
    where its checkpoints would go.

    Example: sweep check studies/compare-cost.yaml --storage postgresql+psycopg://sweep@db/sweep
    """
    from digitsum import config as cfg
    from sweep.store.artifacts import ArtifactError

    checked = api.check(spec_path)
    spec = checked.spec
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
    if spec.stop is not None:
        typer.echo(
            f"  stop: no new trial after {spec.stop.patience} finished trials in a row without a gain above "
            f"{spec.stop.min_delta:g}" + (" (share of the hypervolume)" if len(spec.goals) > 1 else "")
        )
    for params in spec.enqueue:
        typer.echo(f"  warm start: {' '.join(f'{k}={v}' for k, v in params.items())}")
    if spec.tensorboard is not None:
        typer.echo(f"  TensorBoard: a run per trial under {spec.tensorboard}/{spec.name}/")
    if spec.stack > 1:
        typer.echo(
            f"  stack: each worker trains up to {spec.stack} trials at once (those that share shapes and batch plan)"
        )
    _print_data_and_budget(checked)
    try:
        location, why = api.checkpoints_location(spec, storage, artifacts)
        typer.echo(f"  checkpoints: {location} ({why})")
    except ArtifactError as refused:
        typer.echo(f"  checkpoints: none yet; `sweep run` would refuse: {refused}")


def _print_data_and_budget(checked: api.SpecCheck) -> None:
    spec = checked.spec
    source = spec.base.train.dataset_path or f"lengths {spec.base.train.lengths}"
    searched = any(p.key == "train.lengths" for p in spec.space)
    typer.echo(
        f"  data: {source}: {checked.n_train + checked.n_val:,} rows, {checked.n_train:,} train and "
        f"{checked.n_val:,} validation" + (" (trials that search train.lengths differ)" if searched else "")
    )
    if checked.n_probe is not None:
        typer.echo(f"  probe: lengths {', '.join(map(str, spec.probe.lengths))}: {checked.n_probe:,} rows")
    epochs = spec.base.train.n_epochs
    timeout = f"; no new trial after {spec.timeout:g} s" if spec.timeout else ""
    typer.echo(
        f"  budget: at most {spec.n_trials} trials x {epochs} epochs = {spec.n_trials * epochs:,} epochs{timeout}"
    )
    seeds = spec.base.train.n_seeds
    if seeds > 1:
        typer.echo(
            f"  seeds: each trial trains {seeds} at once (seeds train.seed to train.seed + {seeds - 1}); its value "
            f"is their {spec.seed_aggregate.value}"
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


@app.command()
def run(
    spec_path: SpecPath,
    trials: Trials = None,
    timeout: Timeout = None,
    workers: Workers = 1,
    storage: Storage = None,
    name: Annotated[
        str | None, typer.Option(help="Study name (default: the spec's name); a new name starts a new study.")
    ] = None,
    artifacts: Artifacts = None,
    threads: Threads = None,
    oversubscribe: Oversubscribe = False,
    tensorboard: TensorboardDir = None,
    stack: Stack = None,
    devices: Annotated[
        str | None,
        typer.Option(
            metavar="auto|cuda:0,cuda:1,...",
            help="GPUs for the workers, round-robin: worker i trains on device i mod D and sees only it "
            "(CUDA_VISIBLE_DEVICES); auto: every GPU here. Default: the spec's train.device, in every worker.",
        ),
    ] = None,
) -> None:
    """Run (or resume) a study: train one model per trial, prune on unrolled validation accuracy.

    Ctrl-C (exit 130) or SIGTERM (exit 143, what schedulers send) stops the workers: running trials are
    failed and queued again with their parameters, and the same command resumes.

    Example: sweep run studies/quickstart.yaml --workers 2   (or --stack 4: four trials at once per worker;
    --workers 4 --devices auto: one worker per GPU on a 4-GPU machine)
    """
    from sweep.run.plan import RunOptions
    from sweep.store.storage import shown_url

    options = RunOptions(
        storage=storage,
        name=name,
        trials=trials,
        timeout=timeout,
        workers=workers,
        threads=threads,
        artifacts=artifacts,
        oversubscribe=oversubscribe,
        tensorboard=str(tensorboard) if tensorboard is not None else None,
        stack=stack,
        devices=devices,
    )
    plan, finished = api.plan(spec_path, options)
    _print_notes(plan)
    _run_if_budget_left(plan, finished, f"study {plan.study_name!r} in {shown_url(storage)}")
    from digitsum.errors import UsageError

    try:
        _print_best(plan.study_name, storage)
    except UsageError:  # the run went well; none of its trials completed (or met the constraints)
        typer.echo(f"no trial of {plan.study_name!r} has completed and met its constraints yet: no best to show")


def _run_if_budget_left(plan: Any, finished: int, where: str) -> None:
    """Run what is left of the budget, unless it is spent or the stop rule ended the study; say which."""
    stopped = api.stop_reason(plan) if finished < plan.n_trials else None
    if finished >= plan.n_trials:
        typer.echo(
            f"{where} already has {finished} finished trials, the budget of {plan.n_trials}: "
            f"nothing to run (give --trials {finished + 10}, say, to add 10)"
        )
    elif stopped is not None:
        typer.echo(f"{where} {stopped}: nothing to run (raise stop.patience in the spec, or drop stop:, to go on)")
    else:
        typer.echo(
            f"{where}: {finished} of {plan.n_trials} trials finished; "
            f"{plan.workers} worker(s) x {plan.threads_per_worker} thread(s)"
            + (f", {plan.stack} trials at once each" if plan.stack > 1 else "")
            + (f", on {', '.join(plan.devices)} round-robin" if plan.devices else "")
            + (f"; timeout {plan.timeout:.0f}s" if plan.timeout else "")
            + (f"; {plan.warm_starts} warm start(s) queued from enqueue:" if plan.warm_starts else "")
        )
        _run_with_progress(plan, finished)
        stopped = api.stop_reason(plan)
        if stopped is not None:
            typer.echo(f"ended early: {stopped}")


def _print_notes(plan: Any) -> None:
    """What the run says once before it starts: a missing optional package, where TensorBoard runs go."""
    for note in plan.notes:
        typer.echo(note)
    if plan.tensorboard is not None:
        typer.echo(f"TensorBoard: a run per trial in {plan.tensorboard}; tensorboard --logdir {plan.tensorboard}")


def _run_with_progress(plan: Any, finished: int) -> None:
    """The run with a progress bar and a line per trial; Ctrl-C exits 130, SIGTERM 143 (a failed run: the
    boundary, 1)."""
    from sweep.cli.progress import TrialPrinter
    from sweep.run.signals import EXIT_INTERRUPTED, EXIT_TERMINATED, Stopped

    with TrialPrinter(plan.study_name, plan.n_trials, finished) as printer:
        try:
            api.execute(plan, printer.on_trial)
        except KeyboardInterrupt as stopped:
            printer.stop()
            requeued = stopped.requeued if isinstance(stopped, Stopped) else []
            again = f"; {_trials(requeued)} queued again with the same parameters" if requeued else ""
            if isinstance(stopped, Stopped) and stopped.exit_code == EXIT_TERMINATED:
                typer.echo(f"terminated (SIGTERM){again}; run the same command to finish the study", err=True)
                raise typer.Exit(EXIT_TERMINATED) from None
            typer.echo(f"interrupted: finished trials are stored{again}; run the same command to resume", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None


def _trials(numbers: list[int]) -> str:
    return f"trial {numbers[0]}" if len(numbers) == 1 else "trials " + ", ".join(map(str, numbers))


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
    _print_best(name, storage, as_json)
    if download is not None:
        for number, path in api.download_best(name, download, storage, artifacts).items():
            typer.echo(f"checkpoint of trial {number}: {path}  (sweep predict {path} 1294)")


def _print_best(name: str, storage: str | None, as_json: bool = False) -> None:
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
    typer.echo(f"  validation exact match {seeds_text(summary['over_seeds'])}")


def _print_pareto(summary: dict[str, Any]) -> None:
    names = [o["metric"] for o in summary["objectives"]]
    directions = ", ".join(f"{o['metric']} ({o['direction']})" for o in summary["objectives"])
    typer.echo(f"Pareto set of {summary['study']!r}: {len(summary['pareto'])} trial(s) on {directions}")
    typer.echo(f"{'trial':>6s}  {'model':5s} {'parameters':>10s}  " + "  ".join(f"{n:>17s}" for n in names))
    for row in summary["pareto"]:
        values = "  ".join(f"{row['values'][n]:17.6g}" for n in names)
        typer.echo(f"{row['trial']:6d}  {row['model_type']:5s} {row['n_parameters'] or 0:10,d}  {values}")
        typer.echo(f"{'':6s}  validation exact match {seeds_text(row['over_seeds'])}")


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
