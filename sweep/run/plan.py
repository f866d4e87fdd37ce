"""What a run is: the study (made, or resumed if the spec's search matches the stored one), its
budget, workers and threads, and where checkpoints go; checked before any trial starts."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
import optuna_dashboard

from digitsum.errors import ConfigError, UsageError
from sweep.run.devices import parse_devices
from sweep.run.failures import StorageLost, lost_message
from sweep.run.machine import version_note, versions
from sweep.spec.enqueue import enqueue_params
from sweep.spec.files import load_spec
from sweep.spec.model import Param, SpecError, StudySpec
from sweep.spec.names import check_study_name
from sweep.store.artifacts import S3, check_bucket, location_for, new_study_location
from sweep.store.records import StudyMeta, queued_or_tried, write_artifacts, write_fingerprint, write_space
from sweep.store.storage import open_existing, patience_seconds, storage_error, study_names


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run a study, as `sweep run` takes it: each option named once, from the command line
    through `sweep.api` to the plan."""

    storage: str | None = None  # a storage URL; None: the embedded default (SQLite, sweep.store.storage)
    name: str | None = None  # the study's name; None: the spec's (another name starts another study)
    trials: int | None = None  # the study's total of finished trials; None: the spec's n_trials
    timeout: float | None = None  # no new trial after this many seconds; None: the spec's timeout
    workers: int = 1  # worker processes on this machine
    threads: int | None = None  # torch threads per worker; None: this machine's cores / workers
    artifacts: str | None = None  # where checkpoints go (a folder or s3://); None: the study's store
    oversubscribe: bool = False  # allow more threads in all than cores
    tensorboard: str | None = None  # a TensorBoard run per trial under TENSORBOARD/STUDY/; None: the spec's key
    stack: int | None = None  # trials a worker trains at once (sweep.run.stack); None: the spec's stack
    devices: str | None = None  # auto or cuda:0,cuda:1,...: workers placed round-robin (sweep.run.devices)

    def __post_init__(self) -> None:  # folders may be given as paths
        for name in ("artifacts", "tensorboard"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, str(value))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunPlan:
    spec: StudySpec
    storage_url: str | None
    study_name: str
    n_trials: int
    timeout: float | None
    workers: int
    artifacts: str  # the artifact store's location (sweep.store.artifacts)
    threads: int | None = None  # torch threads per worker; None: this machine's cores / workers
    # seconds a worker waits for a storage that stopped answering; read (and checked) when the plan is made
    patience: float = dataclasses.field(default_factory=patience_seconds)
    warm_starts: int = 0  # the spec's `enqueue:` entries this run queued (others were queued or run before)
    tensorboard: str | None = None  # the folder of this study's TensorBoard runs, one per trial; None: none
    notes: tuple[str, ...] = ()  # what the run says once before it starts (a missing optional package)
    stack: int = 1  # trials each worker trains at once (sweep.run.stack)
    devices: tuple[str, ...] = ()  # worker i on devices[i mod D], each its own process (sweep.run.devices)

    @property
    def threads_per_worker(self) -> int:
        return threads_per_worker(self.workers, self.threads)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, threads: int | None = None) -> int:
    """Torch threads for each of `workers` processes: `threads`, else this machine's cores shared out.
    More threads than cores, summed over processes, slowed epochs 5-18x here."""
    return threads or max(1, available_cores() // workers)


def check_cores(workers: int, threads: int | None, oversubscribe: bool) -> None:
    """Refuse more torch threads in all than this machine has cores, unless asked: they only contend."""
    cores, each = available_cores(), threads_per_worker(workers, threads)
    if workers * each > cores and not oversubscribe:
        raise UsageError(
            f"--workers {workers} x {each} thread(s) = {workers * each} threads on {cores} cores: every trial would "
            f"slow down (5-18x was seen here); use --workers {max(1, cores // each)}, or add --oversubscribe"
        )


def plan_run(spec_path: str | Path, options: RunOptions, trains_here: bool = True) -> tuple[RunPlan, optuna.Study]:
    """The checked plan of a run and its study, made or resumed. ``trains_here``: this machine's cores and
    devices are checked against the plan (not where a scheduler's nodes will train it)."""
    if options.name is not None:
        check_study_name(options.name)
    spec = load_spec(spec_path)
    if trains_here:
        check_cores(options.workers, options.threads, options.oversubscribe)
    devices = parse_devices(options.devices) if options.devices is not None else ()
    if spec.pbt is not None and (options.workers > 1 or (options.stack or 1) > 1 or devices):
        raise UsageError(
            "a pbt population trains as one computation in one worker: leave out --workers, --stack and --devices "
            "(islands of populations across workers are not built)"
        )
    if trains_here and not devices:  # --devices places each worker on its GPU itself, whatever train.device says
        _check_device(spec_path, spec.base.train.device)
    name = options.name or spec.name
    events, notes = tensorboard_folder(options.tensorboard or spec.tensorboard, name)
    storage = open_existing(options.storage, create=True)
    if name in study_names(storage):
        chosen = location_for(options.artifacts, None, options.storage)  # for one made before artifacts
    else:
        chosen = new_study_location(options.artifacts, options.storage)  # recorded by the new study
    try:
        study = prepare_study(spec, storage, name, chosen)
    except Exception as error:  # a file another program holds locked, a server gone: one line, not a traceback
        cause = storage_error(error)  # the database's own words, not Optuna's wrapper's
        if cause is None:
            raise
        raise StorageLost(lost_message(cause)) from None
    location = location_for(options.artifacts, study, options.storage)
    _check_writable(location)
    plan = RunPlan(
        spec=spec,
        storage_url=options.storage,
        study_name=name,
        n_trials=options.trials or spec.n_trials,
        timeout=options.timeout or spec.timeout,
        workers=options.workers,
        artifacts=location,
        threads=options.threads,
        tensorboard=events,
        notes=notes + tuple(n for n in [version_note(StudyMeta.read(study).versions, name), _resumes(study)] if n),
        stack=options.stack or spec.stack,
        devices=devices,
    )
    return plan, study


def _check_device(spec_path: str | Path, device: str) -> None:
    """A spec's train.device this machine lacks fails every trial at its start: say so once, before any."""
    from digitsum.device import resolve_device

    try:
        resolve_device(device, option="fixed.train.device")
    except ConfigError as error:
        raise ConfigError(f"{spec_path}: {error}") from None


def _resumes(study: optuna.Study) -> str | None:
    """One line where a pbt population stopped midway and goes on from its last interval's state."""
    saved = StudyMeta.read(study).pbt_state
    if saved is None:
        return None
    return (
        f"resuming the pbt population of {study.study_name!r} from epoch {saved['epoch']} (its state at the "
        f"last interval), not from epoch 1"
    )


def tensorboard_folder(parent: str | None, study_name: str) -> tuple[str | None, tuple[str, ...]]:
    """Where the study's TensorBoard runs go (``parent``/STUDY, checked writable now, not in every trial),
    or None; without the tensorboard package, None and the one line that says so."""
    from digitsum.tensorboard import missing

    if parent is None:
        return None, ()
    if (note := missing()) is not None:
        return None, (note,)
    folder = Path(parent) / study_name
    _check_folder(
        folder, "TensorBoard runs", "pass --tensorboard DIR or set the spec's tensorboard: to a folder you can write"
    )
    return str(folder), ()


def _check_writable(location: str) -> None:
    """Fail before the first trial, not inside every trial, when checkpoints cannot be written: the
    artifact folder, or the bucket (a missing one, or refused credentials)."""
    if location.startswith(S3):
        check_bucket(location)
        return
    _check_folder(Path(location), "checkpoints", "pass --artifacts DIR or s3://BUCKET/PREFIX")


def _check_folder(folder: Path, what: str, fix: str) -> None:
    """Make ``folder`` and write a file in it, or one UsageError line naming ``what`` and how to ``fix`` it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(f"cannot write {what} to {folder} ({error.strerror}); {fix}") from None


def prepare_study(spec: StudySpec, storage: optuna.storages.BaseStorage, name: str, artifacts: str) -> optuna.Study:
    """Create the study, or resume it if the stored one was made by the same search space; a new
    study records `artifacts`, its artifact store's location (so does one made before artifacts)."""
    existed = name in study_names(storage)
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=[goal.direction.value for goal in spec.goals],
        load_if_exists=True,
        sampler=spec.make_sampler(),
        pruner=spec.make_pruner(),
    )
    stored = StudyMeta.read(study).fingerprint
    if existed and stored is not None and not spec.matches(stored):
        raise SpecError(
            f"{spec.path}: study {name!r} in this storage was made with another metric, data or search space; "
            f"run with --name NEW_NAME to start a new study (the stored one is kept)"
        )
    if stored is None:
        # Enough to re-train any trial (`sweep rerun`) without the spec file.
        StudyMeta(
            fingerprint=spec.fingerprint(),
            spec_path=spec.path,
            description=spec.description,
            metric=spec.goals[0].metric.value,
            value_from=spec.value_from.value,
            base_config=spec.base.to_dict(),
            probe=spec.probe,
            target=spec.target,
            objectives=[goal.to_dict() for goal in spec.goals] if spec.objectives else None,
            constraints=[c.to_dict() for c in spec.constraints],
            artifacts=artifacts,
            space=[param.to_dict() for param in spec.space],
            seed_aggregate=spec.seed_aggregate.value,
            versions=versions(),
        ).write(study)
        study.set_metric_names([goal.metric.value for goal in spec.goals])
        optuna_dashboard.save_note(study, spec_note(spec))
    elif not stored.startswith("v2:"):  # made before fingerprints came from the validated spec
        write_fingerprint(study, spec.fingerprint())
    meta = StudyMeta.read(study)
    if stored is not None and meta.artifacts is None:  # made before artifacts
        write_artifacts(study, artifacts)
    if meta.space is None:  # made before the space was stored; the fingerprint matched, so it is this one
        write_space(study, [param.to_dict() for param in spec.space])
    return study


def warm_start(spec: StudySpec, study: optuna.Study) -> int:
    """Queue the spec's `enqueue:` entries that the study has not queued or run yet; how many were new."""
    new = [params for params in spec.enqueue if not queued_or_tried(study, params)]
    for params in new:
        study.enqueue_trial(params, skip_if_exists=True)
    return len(new)


def spec_note(spec: StudySpec) -> str:
    """The study's note in optuna-dashboard: which spec made it, and how to go on."""
    return (
        f"## {spec.name}\n\nMade by `sweep run {spec.path}`. {spec.description}\n\n"
        f"- objectives: {', '.join(f'`{g.metric}` ({g.direction})' for g in spec.goals)}; "
        f"accuracies are taken at each trial's {spec.value_from} epoch\n"
        + (f"- constraints: {', '.join(c.name for c in spec.constraints)}\n" if spec.constraints else "")
        + f"- sampler: `{spec.sampler['type']}`, pruner: `{spec.pruner['type']}`\n"
        f"- report: `sweep report {spec.name}`; best trial: `sweep best {spec.name}`\n"
    )


def enqueue_values(study: optuna.Study, values: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Queue a trial with these values of the stored study's searched keys (`sweep enqueue`): its params,
    and False when the study had queued or run them already."""
    from digitsum import config as cfg
    from sweep.run.trial import stored_base_config

    meta = StudyMeta.read(study)
    if meta.space is None or meta.base_config is None:
        raise UsageError(
            f"study {study.study_name!r} has no stored search space (made by an older version, or not by "
            "`sweep run`); resume it once with `sweep run SPEC` to record it"
        )
    base = cfg.from_dict(stored_base_config(meta.base_config))
    params = enqueue_params(values, [Param.from_dict(d) for d in meta.space], base, "", _key_error)
    if queued_or_tried(study, params):
        return params, False
    study.enqueue_trial(params, skip_if_exists=True)
    return params, True


def _key_error(key: str, message: str) -> UsageError:
    return UsageError(f"{key}: {message}" if key else message)
