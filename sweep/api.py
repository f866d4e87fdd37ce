"""The toolkit from Python (a notebook, a script, the `sweep` CLI): run a study, read its best trial,
write a report, load a checkpoint and predict. Every function returns values and prints nothing;
errors a user can fix raise `digitsum.errors.UsageError` with the one-line message the CLI shows,
and a run that stops raises `sweep.run.failures.RunFailed`.

Imports nothing heavy itself (each function imports what it uses), so `sweep --help` loads neither
torch nor optuna, and importing this module never loads typer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    import torch
    from optuna.trial import FrozenTrial

    from digitsum.decode import Accuracy
    from digitsum.errors import UsageError
    from digitsum.model import DigitSumModel
    from digitsum.train import EpochResult, FitResult
    from sweep.reruns.jobs import Job
    from sweep.run.plan import RunPlan
    from sweep.spec.model import StudySpec
    from sweep.store.copy import Copied
    from sweep.store.records import RerunRecord

# ---------------------------------------------------------------------------------------------
# One model: the tutorial's scripts


@dataclass(frozen=True)
class Trained:
    results: tuple[FitResult, ...]  # each member's: one model, or each of train.n_seeds seeds in seed order
    run_dir: Path
    moved_to: Path | None  # the run went to this free folder: its name was taken by an earlier run
    seeds: tuple[int, ...]  # each member's train.seed
    checkpoints: tuple[Path, ...]  # each member's best.pt

    @property
    def result(self) -> FitResult:
        """The first member's (the only one's, for one model)."""
        return self.results[0]


def train(
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    on_epoch: Callable[[list[EpochResult]], None] | None = None,
    on_start: Callable[[Any, Path | None], None] | None = None,
    tensorboard: bool = True,
    probe: str | None = None,
) -> Trained:
    """Train like `sweep train`: a YAML/JSON file of config keys, then KEY=VALUE overrides; with
    ``train.n_seeds`` K, its K seeds at once. ``on_start`` hears the config and, where the run's folder
    held an earlier run, that folder; ``on_epoch`` each epoch's results, one per seed. ``tensorboard``:
    TensorBoard event files in the run folder too, where the optional package is installed
    (`digitsum.tensorboard.missing()` says why not, in one line). ``probe``: input lengths never
    trained on (``"5"``, ``"5-6"``), scored every epoch."""
    from digitsum import config as cfg
    from digitsum.errors import DataError
    from digitsum.lengths import Probe, parse_lengths
    from digitsum.members import config_seeds
    from digitsum.runs import member_folders, place_run, train_run

    try:  # a bad probe is named before any work
        probed = Probe(tuple(parse_lengths(probe))) if probe else None
    except DataError as error:
        raise DataError(f"probe {error}") from None

    values = _config_file_values(Path(config_file)) if config_file else {}
    given = cfg.parse_overrides(overrides or [])
    config = cfg.apply(cfg.from_dict(values), given)
    named = "train.run_name" in {**cfg.flatten(values), **given}
    taken = Path(config.train.log_path) / config.train.run_name
    config, moved_to = place_run(config, named, overwrite)
    if on_start is not None:
        on_start(config, taken if moved_to else None)
    results, run_dir = train_run(config, on_epoch, tensorboard, probed)
    checkpoints = tuple(folder / "best.pt" for folder in member_folders(config))
    return Trained(tuple(results), run_dir, moved_to, tuple(config_seeds(config.train)), checkpoints)


def _config_file_values(path: Path) -> dict[str, Any]:
    from digitsum.errors import ConfigError
    from digitsum.files import require_file
    from sweep.spec.reading import read_yaml

    require_file(
        path, "config file", "give a YAML or JSON file of config keys, like {model: {hidden_size: 64}}", ConfigError
    )
    values = read_yaml(path, ConfigError) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, like {{model: {{hidden_size: 64}}}}")
    return values


@dataclass(frozen=True)
class Evaluation:
    accuracy: Accuracy
    seconds: float
    training_sums: Any  # the digit sums the model trained on (numpy); None where they cannot be rebuilt


def evaluate(
    checkpoint: str | Path,
    data_csv: str | Path,
    device: str | torch.device = "auto",
    storage: str | None = None,
    artifacts: str | None = None,
) -> Evaluation:
    """Unrolled exact-match accuracy of a checkpoint on a CSV, overall, per length and in range."""
    from digitsum.checkpoint import load_checkpoint
    from digitsum.data import encode, read_csv
    from digitsum.decode import accuracy, answers_in_range

    where = _device(device)
    rows = read_csv(Path(data_csv))
    with _checkpoint_file(str(checkpoint), storage, artifacts) as path:
        model, payload = load_checkpoint(path, where)
    seen = _training_answers(payload["config"])
    start = time.perf_counter()
    result = accuracy(model, encode(rows), answers_in_range(rows.y, seen) if seen is not None else None)
    return Evaluation(result, time.perf_counter() - start, seen)


@dataclass(frozen=True)
class SeedsEvaluation:
    seeds: list[int]  # from the run folder's seed-S/ checkpoints
    accuracies: list[Accuracy]  # one per seed, in the same order
    seconds: float


def evaluate_seeds(run_dir: str | Path, data_csv: str | Path, device: str | torch.device = "auto") -> SeedsEvaluation:
    """Every seed of a `train.n_seeds` run folder on one CSV, scored at once (models of one shape)."""
    from digitsum.checkpoint import load_checkpoint
    from digitsum.data import encode, read_csv
    from digitsum.decode import answers_in_range, score_models
    from digitsum.errors import UsageError
    from digitsum.runs import seed_checkpoints

    found = seed_checkpoints(Path(run_dir))
    if not found:
        raise UsageError(f"{run_dir}: is a folder, not a checkpoint file (nor a train.n_seeds run: no seed-S/best.pt)")
    rows = read_csv(Path(data_csv))
    loaded = [load_checkpoint(path, _device(device)) for _, path in found]
    seen = [_training_answers(payload["config"]) for _, payload in loaded]
    masks = [answers_in_range(rows.y, s) if s is not None else None for s in seen]
    data = encode(rows).to(_device(device))
    start = time.perf_counter()
    scores = score_models([model for model, _ in loaded], data, masks)
    return SeedsEvaluation([seed for seed, _ in found], scores, time.perf_counter() - start)


def _training_answers(config_values: dict[str, Any]) -> Any:
    """The digit sums of the rows the checkpoint's model trained on; None where they cannot be rebuilt
    (a training CSV that is not on this machine)."""
    from digitsum import config as cfg
    from digitsum.datasets import data_split
    from digitsum.errors import UsageError

    try:
        train_rows, _ = data_split(cfg.from_dict(config_values).train)
    except (UsageError, OSError):
        return None
    return train_rows.y


def load_model(
    checkpoint: str | Path, device: str | torch.device = "cpu", storage: str | None = None, artifacts: str | None = None
) -> DigitSumModel:
    """A checkpoint's model, ready to predict (in eval mode): a file, or ``STUDY:TRIAL`` (``STUDY:best``)
    fetched from the study's artifact store."""
    from digitsum.checkpoint import load_checkpoint

    where = _device(device)
    with _checkpoint_file(str(checkpoint), storage, artifacts) as path:
        model, _ = load_checkpoint(path, where)
    return model


def predict(model: DigitSumModel, sequences: list[str]) -> list[str | None]:
    """Each digit string's decoded answer (greedy, token by token); None where it wrote no answer."""
    from digitsum.data import encode_prompts
    from digitsum.decode import answers_to_text, greedy_decode

    return answers_to_text(greedy_decode(model, encode_prompts(sequences)))


def answers(
    checkpoint: str | Path,
    sequences: list[str],
    device: str | torch.device = "auto",
    storage: str | None = None,
    artifacts: str | None = None,
) -> list[dict[str, Any]]:
    """Each sequence's decoded answer beside its digit sum, as `sweep predict --json` prints them."""
    from digitsum.data import encode_prompts
    from digitsum.decode import answers_to_text, greedy_decode

    prompts = encode_prompts(sequences)  # bad sequences are refused before the checkpoint is read
    decoded = answers_to_text(greedy_decode(load_model(checkpoint, device, storage, artifacts), prompts))
    rows = []
    for sequence, answer in zip(sequences, decoded, strict=True):
        expected = str(sum(map(int, sequence)))
        rows.append({"sequence": sequence, "answer": answer, "expected": expected, "correct": answer == expected})
    return rows


def _device(device: str | torch.device) -> torch.device:
    """A device as given (the CLI resolves ``--device`` itself, for its messages), or resolved by name."""
    import torch

    from digitsum.device import resolve_device

    return device if isinstance(device, torch.device) else resolve_device(device, "device")


@contextlib.contextmanager
def _checkpoint_file(checkpoint: str, storage: str | None, artifacts: str | None) -> Iterator[Path]:
    """A checkpoint file's path, or ``STUDY:TRIAL`` (``STUDY:best``) fetched from the study's artifact store."""
    path = Path(checkpoint)
    study_name, colon, trial = checkpoint.rpartition(":")
    if path.exists() or not colon or not study_name or not (trial.isdigit() or trial == "best"):
        yield path  # load_checkpoint names a missing file
        return
    from digitsum.errors import UsageError
    from sweep.spec.objectives import best_trial
    from sweep.store import artifacts as store_of
    from sweep.store.records import TrialRecord
    from sweep.store.storage import load_study, open_existing

    study = load_study(study_name, open_existing(storage))
    trials = study.get_trials(deepcopy=False)  # `study.trials` would deep-copy every trial
    if trial == "best":
        try:
            frozen = best_trial(study)
        except ValueError:
            raise UsageError(f"study {study_name!r} has no completed trial yet; run it with `sweep run`") from None
    elif int(trial) < len(trials):
        frozen = trials[int(trial)]
    else:
        raise UsageError(f"study {study_name!r} has no trial {trial} (it has {len(trials)}); see `sweep ls`")
    store = store_of.store_for(artifacts, study, storage)
    with store_of.fetched(store, TrialRecord.read(frozen), frozen.number) as fetched:
        yield fetched


# ---------------------------------------------------------------------------------------------
# Studies


@dataclass(frozen=True)
class SpecCheck:
    spec: StudySpec
    n_train: int
    n_val: int
    n_probe: int | None  # None: no probe lengths


def check(spec: str | Path) -> SpecCheck:
    """A spec validated, with its data's sizes, without training or opening a storage."""
    from digitsum.datasets import data_split, probe_rows
    from sweep.spec.files import load_spec

    loaded = load_spec(spec)
    train_rows, val_rows = data_split(loaded.base.train)
    probe = probe_rows(loaded.probe)
    return SpecCheck(loaded, len(train_rows), len(val_rows), len(probe) if probe is not None else None)


def plan(
    spec: str | Path,
    *,
    storage: str | None = None,
    name: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    threads: int | None = None,
    artifacts: str | Path | None = None,
    oversubscribe: bool = False,
    tensorboard: str | Path | None = None,
) -> tuple[RunPlan, int]:
    """A checked run plan, its study made or resumed, and how many of its trials are finished already.
    ``tensorboard`` (a folder; else the spec's key): a TensorBoard run per trial under FOLDER/STUDY/;
    the plan's ``notes`` say where the tensorboard package is missing."""
    from sweep.run.ledger import FINISHED
    from sweep.run.plan import plan_run, warm_start
    from sweep.store.storage import close_study

    made, study = plan_run(
        spec,
        storage,
        name=name,
        trials=trials,
        timeout=timeout,
        workers=workers,
        artifacts=str(artifacts) if artifacts else None,
        threads=threads,
        oversubscribe=oversubscribe,
        tensorboard=str(tensorboard) if tensorboard else None,
    )
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    if finished < made.n_trials:  # a study whose budget is spent runs nothing: queue nothing either
        made = dataclasses.replace(made, warm_starts=warm_start(made.spec, study))
    close_study(study)  # the workers open their own; no idle connections held through the run
    return made, finished


def execute(plan: RunPlan, on_trial: Callable[[FrozenTrial, float | None], None] | None = None) -> optuna.Study:
    """Run a plan's workers; ``on_trial`` hears of each finished trial, with the best value so far."""
    from sweep.run.launch import run_study

    return run_study(plan, on_trial)


def run(
    spec: str | Path,
    *,
    storage: str | None = None,
    name: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    workers: int = 1,
    threads: int | None = None,
    artifacts: str | Path | None = None,
    tensorboard: str | Path | None = None,
) -> optuna.Study:
    """Run (or resume) a study from a spec file or a shipped spec's name, like `sweep run`."""
    made, _ = plan(
        spec,
        storage=storage,
        name=name,
        trials=trials,
        timeout=timeout,
        workers=workers,
        threads=threads,
        artifacts=artifacts,
        tensorboard=tensorboard,
    )
    return execute(made)


def stop_reason(plan: RunPlan) -> str | None:
    """Why the plan's study ends short of its budget (its stop rule, or a sampler that tried every
    combination), in one line; None when it does not."""
    from sweep.run.launch import stop_reason as reason_of
    from sweep.store.storage import close_study

    if plan.spec.stop is None and plan.spec.sampler["type"] not in ("grid", "bruteforce"):
        return None  # nothing can end it early: no study to read
    study = _load(plan.study_name, plan.storage_url)
    try:
        return reason_of(plan, study)
    finally:
        close_study(study)


def enqueue(name: str, values: dict[str, Any], storage: str | None = None) -> tuple[dict[str, Any], bool]:
    """Queue a trial with these values of searched keys, to run first (`sweep enqueue`): its params, and
    False when the study had queued or run them already (Optuna's skip_if_exists)."""
    from digitsum import config as cfg
    from digitsum.errors import UsageError
    from sweep.run.trial import stored_base_config
    from sweep.spec.enqueue import enqueue_params
    from sweep.spec.model import Param
    from sweep.store.records import StudyMeta, queued_or_tried

    study = _load(name, storage)
    meta = StudyMeta.read(study)
    if meta.space is None or meta.base_config is None:
        raise UsageError(
            f"study {name!r} has no stored search space (made by an older version, or not by `sweep run`); "
            "resume it once with `sweep run SPEC` to record it"
        )
    base = cfg.from_dict(stored_base_config(meta.base_config))
    params = enqueue_params(values, [Param.from_dict(d) for d in meta.space], base, "", _key_error)
    if queued_or_tried(study, params):
        return params, False
    study.enqueue_trial(params, skip_if_exists=True)
    return params, True


def _key_error(key: str, message: str) -> UsageError:
    from digitsum.errors import UsageError

    return UsageError(f"{key}: {message}" if key else message)


def best(name: str, storage: str | None = None) -> dict[str, Any]:
    """The best trial as `sweep best --json` gives it (the Pareto set, for several objectives)."""
    from digitsum.errors import UsageError
    from sweep.report.best import best_summary, pareto_summary

    study = _load(name, storage)
    if len(study.directions) > 1:
        summary = pareto_summary(study)
        if not summary["pareto"]:
            raise UsageError(f"study {name!r} has no completed (feasible) trial yet; run it with `sweep run`")
        return summary
    try:
        return best_summary(study)
    except ValueError:
        raise UsageError(f"study {name!r} has no completed trial yet; run it with `sweep run`") from None


def download_best(
    name: str, folder: str | Path, storage: str | None = None, artifacts: str | None = None
) -> dict[int, Path]:
    """Fetch the best trial's checkpoint (each Pareto trial's) into ``folder``; paths by trial number."""
    from sweep.spec.objectives import best_numbers
    from sweep.store import artifacts as store_of

    study = _load(name, storage)
    store = store_of.store_for(artifacts, study, storage)
    Path(folder).mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    return {number: store_of.fetch(store, trials[number], Path(folder)) for number in sorted(best_numbers(study))}


def studies(storage: str | None = None) -> list[dict[str, Any]]:
    """Each study's trial counts by state and best value (one objective), from counting queries: no
    study's trials are loaded."""
    from sweep.store.storage import best_value, open_existing, trial_counts

    store = open_existing(storage)
    rows = []
    for summary in store.get_all_studies():
        study_id = summary._study_id
        several = len(summary.directions) > 1
        rows.append(
            {
                "study": summary.study_name,
                "n_objectives": len(summary.directions),
                "counts": {state.name: n for state, n in trial_counts(store, study_id).items()},
                "best": None if several else best_value(store, study_id),
            }
        )
    return rows


def export(name: str, out: str | Path, storage: str | None = None) -> int:
    """Write a study's trials (params, user attributes, states) as CSV; returns the number of rows."""
    from digitsum.files import atomic_path
    from sweep.store.records import trials_table

    frame = trials_table(_load(name, storage))
    with atomic_path(Path(out)) as tmp:
        frame.to_csv(tmp, index=False)
    return len(frame)


def remove(
    name: str,
    storage: str | None = None,
    artifacts: str | None = None,
    confirm: Callable[[str], bool] | None = None,
) -> tuple[int, int] | None:
    """Delete a study and its checkpoints; ``confirm`` is asked first with what would go (None when it
    says no). Returns the numbers of trials and checkpoints deleted."""
    import optuna

    from sweep.store import artifacts as store_of
    from sweep.store.records import TrialRecord
    from sweep.store.storage import load_study, open_existing

    store = open_existing(storage)
    study = load_study(name, store)
    records = [TrialRecord.read(t) for t in study.get_trials(deepcopy=False)]
    stored = [r for r in records if r.artifact_id]
    files = [r for r in records if not r.artifact_id and r.checkpoint and Path(r.checkpoint).is_file()]
    if confirm is not None and not confirm(f"study {name!r} ({len(records)} trials) and its checkpoints"):
        return None
    artifact_store = store_of.store_for(artifacts, study, storage) if stored else None
    optuna.delete_study(study_name=name, storage=store)
    for record in stored + files:
        store_of.remove(artifact_store, record)
    _remove_empty_folders([Path(r.checkpoint) for r in files if r.checkpoint], name)
    return len(records), len(stored) + len(files)


def _remove_empty_folders(checkpoints: list[Path], name: str) -> None:
    """The per-study checkpoint folders of a study made before artifacts, once empty."""
    import shutil

    for folder in {path.parent for path in checkpoints}:
        if folder.name == name and folder.is_dir() and not any(folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)


def copy(
    name: str,
    to: str,
    storage: str | None = None,
    artifacts: str | None = None,
    to_artifacts: str | None = None,
    to_name: str | None = None,
) -> Copied:
    """Copy a study, with its trials, study attributes, seed reruns and checkpoints, from ``storage``
    (and its artifact store, or ``artifacts``) to the storage ``to`` (its default store, or
    ``to_artifacts``), as ``to_name``; `sweep run` with the study's spec and ``to`` then resumes the copy."""
    from sweep.spec.names import check_study_name
    from sweep.store.copy import copy_study

    if to_name is not None:
        check_study_name(to_name, "--to-name")
    return copy_study(name, storage, to, to_name=to_name, artifacts=artifacts, to_artifacts=to_artifacts)


def _load(name: str, storage: str | None) -> optuna.Study:
    from sweep.store.storage import load_study, open_existing

    return load_study(name, open_existing(storage))


# ---------------------------------------------------------------------------------------------
# Seed reruns


@dataclass(frozen=True)
class Reruns:
    numbers: list[int]  # the trials re-trained
    seeds: list[int]
    jobs: list[Job]  # per trial, the seeds it has not trained yet (each job trains its seeds at once)
    threads: int  # torch threads per rerun; 0: each trial's own

    @property
    def runs(self) -> int:
        """How many (trial, seed) runs the jobs train."""
        return sum(len(job.seeds) for job in self.jobs)


def plan_reruns(
    name: str,
    trial: int | None = None,
    *,
    top: int | None = None,
    seeds: list[int] | None = None,
    storage: str | None = None,
    workers: int = 1,
    threads: int | None = None,
    again: bool = False,
    oversubscribe: bool = False,
) -> Reruns:
    """Which trials and seeds `sweep rerun` trains, checked before anything trains."""
    from sweep.reruns.jobs import pending
    from sweep.reruns.jobs import plan_reruns as chosen
    from sweep.run.plan import check_cores, threads_per_worker

    check_cores(workers, threads, oversubscribe)
    study = _load(name, storage)
    numbers, seed_list = chosen(study, trial, top, seeds)
    jobs = pending(study, numbers, seed_list, again)
    each = threads or (threads_per_worker(workers) if workers > 1 else 0)
    return Reruns(numbers, seed_list, jobs, each)


def rerun(
    name: str,
    reruns: Reruns,
    *,
    storage: str | None = None,
    workers: int = 1,
    on_result: Callable[[RerunRecord], None] | None = None,
) -> list[dict[str, Any]]:
    """Train the planned reruns (stored on the study as each ends); per trial, its runs, mean and spread."""
    from sweep.reruns.jobs import run_jobs, summary

    run_jobs(storage, name, reruns.jobs, workers, reruns.threads, on_result)
    return summary(_load(name, storage), reruns.numbers, reruns.seeds)


# ---------------------------------------------------------------------------------------------
# Reports and the dashboard


def report(names: list[str], out: str | Path | None = None, storage: str | None = None) -> Path:
    """Write the HTML report of one or more studies, like `sweep report`; returns its path."""
    path, _ = write_report(names, Path(out) if out else None, storage)
    return path


def write_report(
    names: list[str],
    out: Path | None = None,
    storage: str | None = None,
    attach: bool = True,
    artifacts: str | None = None,
) -> tuple[Path, int]:
    """Write the report (reports/<names>.html by default); returns its path and number of figures.
    With ``attach``, each study also gets the comparison figures for optuna-dashboard."""
    from digitsum.errors import UsageError
    from sweep.report.page import figures_for_dashboard, report_file_name
    from sweep.report.page import write_report as write
    from sweep.store.artifacts import store_for
    from sweep.store.storage import load_study, open_existing, shown_url

    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"study {twice[0]!r} is named twice; name each study once")
    store = open_existing(storage)
    loaded = [load_study(n, store) for n in names]
    out = out or Path("reports") / report_file_name(names)
    stores = {s.study_name: store_for(artifacts, s, storage) for s in loaded}
    n_figures = write(loaded, out, shown_url(storage), stores)
    if attach:
        import optuna_dashboard

        for study in loaded:
            for index, figure in enumerate(figures_for_dashboard([study])):
                optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=f"sweep-{index}")
    return out, n_figures


def dashboard(
    storage: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    artifacts: str | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve optuna-dashboard on the storage until Ctrl-C; ``on_listening`` hears the artifact store's
    location once the address is known to be free."""
    from sweep.report.dashboard import serve

    serve(storage, host, port, artifacts, on_listening)
