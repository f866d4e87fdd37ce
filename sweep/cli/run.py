"""Run commands: `check` a spec, then `run` it (or resume it)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sweep import api
from sweep.cli.app import app
from sweep.cli.options import (
    MAX_PROCESSES,
    MAX_TRIALS,
    Artifacts,
    Oversubscribe,
    SpecPath,
    Storage,
    TensorboardDir,
)
from sweep.cli.study import print_best

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

Devices = Annotated[
    str | None,
    typer.Option(
        metavar="auto|cuda:0,cuda:1,...",
        help="GPUs for the workers, round-robin: worker i trains on device i mod D and sees only it "
        "(CUDA_VISIBLE_DEVICES); auto: every GPU here. Default: the spec's train.device, in every worker.",
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
    _print_at_once(spec)
    _print_data_and_budget(checked)
    try:
        location, why = api.checkpoints_location(spec, storage, artifacts)
        typer.echo(f"  checkpoints: {location} ({why})")
    except ArtifactError as refused:
        typer.echo(f"  checkpoints: none yet; `sweep run` would refuse: {refused}")


def _print_at_once(spec: Any) -> None:
    """What trains as one computation: a stack of trials, or a pbt population."""
    if spec.stack > 1:
        typer.echo(
            f"  stack: each worker trains up to {spec.stack} trials at once (those that share shapes and batch plan)"
        )
    if spec.pbt is not None:
        pbt = spec.pbt
        typer.echo(
            f"  pbt: {pbt.population} members as one computation, one trial each; every {pbt.interval} epochs the "
            f"bottom {pbt.quantile:.0%} copy a top member, then perturb by {list(pbt.perturb)} or resample "
            f"(chance {pbt.resample:g}), seed {pbt.seed}"
        )


def _print_data_and_budget(checked: api.SpecCheck) -> None:
    spec = checked.spec
    source = spec.base.train.dataset_path or f"lengths {spec.base.train.lengths}"
    searched = any(p.key == "train.lengths" for p in spec.space)
    typer.echo(
        f"  data: {source}: {checked.n_train + checked.n_val:,} rows, {checked.n_train:,} train and "
        f"{checked.n_val:,} validation" + (" (trials that search train.lengths differ)" if searched else "")
    )
    if checked.n_probe is not None:
        drawn = ", drawn among strings whose sum occurs in training" if spec.probe.in_range else ""
        typer.echo(f"  probe: lengths {', '.join(map(str, spec.probe.lengths))}: {checked.n_probe:,} rows{drawn}")
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
    devices: Devices = None,
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
        print_best(plan.study_name, storage)
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
