"""The toolkit from Python (a notebook, a script, the `sweep` CLI): run a study, read its best trial,
write a report, load a checkpoint and predict. Every function returns values and prints nothing;
errors a user can fix raise `digitsum.errors.UsageError` with the one-line message the CLI shows,
and a run that stops raises `sweep.run.failures.RunFailed`.

Imports nothing heavy itself (each function imports what it uses), so `sweep --help` loads neither
torch nor optuna, and importing this module never loads typer.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    import torch
    from optuna.trial import FrozenTrial

    from digitsum.evaluation import Evaluation, SeedsEvaluation
    from digitsum.model import DigitSumModel
    from digitsum.train import EpochResult, FitResult
    from sweep.reruns.jobs import Reruns
    from sweep.run.plan import RunOptions, RunPlan
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
    stop: threading.Event | None = None,
) -> Trained:
    """Train like `sweep train`: a YAML/JSON file of config keys, then KEY=VALUE overrides; with
    ``train.n_seeds`` K, its K seeds at once. ``on_start`` hears the config and, where the run's folder
    held an earlier run, that folder; ``on_epoch`` each epoch's results, one per seed. ``tensorboard``:
    TensorBoard event files in the run folder too, where the optional package is installed
    (`digitsum.tensorboard.missing()` says why not, in one line). ``probe``: input lengths never
    trained on (``"5"``, ``"5-6"``), scored every epoch. ``stop`` set (a signal's handler sets it) ends
    the training before its next step with `digitsum.train.Interrupted`; each seed's best so far is kept."""
    from digitsum import config as cfg
    from digitsum.errors import DataError
    from digitsum.lengths import Probe, parse_lengths
    from digitsum.members import config_seeds
    from digitsum.runs import member_folders, place_run, run_folder, train_run

    try:  # a bad probe is named before any work
        probed = Probe(tuple(parse_lengths(probe))) if probe else None
    except DataError as error:
        raise DataError(f"probe {error}") from None

    values = _config_file_values(Path(config_file)) if config_file else {}
    given = cfg.parse_overrides(overrides or [])
    config = cfg.apply(cfg.from_dict(values), given)
    named = "train.run_name" in {**cfg.flatten(values), **given}
    taken = run_folder(config)
    config, moved_to = place_run(config, named, overwrite)
    if on_start is not None:
        on_start(config, taken if moved_to else None)
    results, run_dir = train_run(config, on_epoch, tensorboard, probed, stop)
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


def evaluate(
    checkpoint: str | Path,
    data_csv: str | Path,
    device: str | torch.device = "auto",
    storage: str | None = None,
    artifacts: str | None = None,
) -> Evaluation:
    """Unrolled exact-match accuracy of a checkpoint (a file, or ``STUDY:TRIAL``) on a CSV, overall, per
    length and in range."""
    from digitsum.checkpoint import load_checkpoint
    from digitsum.data import read_csv
    from digitsum.evaluation import evaluate_model
    from sweep.report.best import trial_checkpoint

    rows = read_csv(Path(data_csv))
    with trial_checkpoint(str(checkpoint), storage, artifacts) as path:
        model, payload = load_checkpoint(path, _device(device))
    return evaluate_model(model, payload["config"], rows)


def evaluate_seeds(run_dir: str | Path, data_csv: str | Path, device: str | torch.device = "auto") -> SeedsEvaluation:
    """Every seed of a `train.n_seeds` run folder on one CSV, scored at once (models of one shape)."""
    from digitsum.data import read_csv
    from digitsum.evaluation import evaluate_run

    return evaluate_run(Path(run_dir), read_csv(Path(data_csv)), _device(device))


def load_model(
    checkpoint: str | Path, device: str | torch.device = "cpu", storage: str | None = None, artifacts: str | None = None
) -> DigitSumModel:
    """A checkpoint's model, ready to predict (in eval mode): a file, or ``STUDY:TRIAL`` (``STUDY:best``)
    fetched from the study's artifact store."""
    from digitsum.checkpoint import load_checkpoint
    from sweep.report.best import trial_checkpoint

    where = _device(device)
    with trial_checkpoint(str(checkpoint), storage, artifacts) as path:
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


def checkpoints_location(spec: StudySpec, storage: str | None = None, artifacts: str | None = None) -> tuple[str, str]:
    """Where `sweep run` would store this spec's study's checkpoints (the store it recorded, for a study
    that exists), and why there. A new study on a server storage with no store given raises
    `sweep.store.artifacts.ArtifactError` (it would be refused)."""
    from sweep.store.artifacts import where_checkpoints_go

    return where_checkpoints_go(spec.name, storage, artifacts)


def plan(spec: str | Path, options: RunOptions | None = None, **changes: Any) -> tuple[RunPlan, int]:
    """A checked run plan, its study made or resumed, and how many of its trials are finished already.
    ``options`` (`sweep.run.plan.RunOptions`), or its fields as keywords: ``api.plan(spec, trials=20)``;
    the plan's ``notes`` say where the tensorboard package is missing."""
    from sweep.run.ledger import FINISHED
    from sweep.run.plan import RunOptions, plan_run, warm_start
    from sweep.store.storage import close_study

    made, study = plan_run(spec, dataclasses.replace(options or RunOptions(), **changes))
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    if finished < made.n_trials:  # a study whose budget is spent runs nothing: queue nothing either
        made = dataclasses.replace(made, warm_starts=warm_start(made.spec, study))
    close_study(study)  # the workers open their own; no idle connections held through the run
    return made, finished


def execute(plan: RunPlan, on_trial: Callable[[FrozenTrial, float | None], None] | None = None) -> optuna.Study:
    """Run a plan's workers; ``on_trial`` hears of each finished trial, with the best value so far.
    Ctrl-C or SIGTERM raises `sweep.run.signals.Stopped` (a KeyboardInterrupt) once the running trials
    are failed and queued again; its ``requeued`` names them."""
    from sweep.run.launch import run_study

    return run_study(plan, on_trial)


def run(spec: str | Path, options: RunOptions | None = None, **changes: Any) -> optuna.Study:
    """Run (or resume) a study from a spec file or a shipped spec's name, like `sweep run`: ``options``
    (`sweep.run.plan.RunOptions`), or its fields as keywords: ``api.run("quickstart", trials=1)``."""
    made, _ = plan(spec, options, **changes)
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
    from sweep.run.plan import enqueue_values

    return enqueue_values(_load(name, storage), values)


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
    study's trials are loaded, but a constrained study's, whose best is the best feasible trial."""
    from sweep.spec.objectives import best_trial
    from sweep.store.queries import study_rows
    from sweep.store.storage import load_study, open_existing

    store = open_existing(storage)
    rows = study_rows(store)
    for row in rows:
        if row.pop("constrained") and row["n_objectives"] == 1:
            try:
                row["best"] = best_trial(load_study(row["study"], store)).value
            except ValueError:  # no feasible trial
                row["best"] = None
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
    from sweep.store.removal import remove_study

    return remove_study(name, storage, artifacts, confirm)


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
    from sweep.reruns.jobs import plan_reruns as planned
    from sweep.run.plan import check_cores

    check_cores(workers, threads, oversubscribe)
    return planned(_load(name, storage), trial, top, seeds, workers, threads, again)


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
    from sweep.report.page import report_studies

    return report_studies(names, out, storage, attach, artifacts)


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
