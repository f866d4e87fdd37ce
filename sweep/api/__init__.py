"""The toolkit from Python (a notebook, a script, the `sweep` CLI): run a study, read its best trial,
write a report, load a checkpoint and predict. Every function returns values and prints nothing;
errors a user can fix raise `digitsum.errors.UsageError` with the one-line message the CLI shows,
and a run that stops raises `sweep.run.failures.RunFailed`.

Imports nothing heavy itself (each function imports what it uses), so `sweep --help` loads neither
torch nor optuna, and importing this module never loads typer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from sweep.report.frame import Section
    from sweep.reruns.jobs import Reruns
    from sweep.run.plan import RunOptions, RunPlan
    from sweep.spec.model import StudySpec
    from sweep.store.copy import Copied
    from sweep.store.records import RerunRecord

# the one-model half of the API (train, evaluate, predict) lives in sweep.api._models
from sweep.api._models import Trained, answers, evaluate, evaluate_seeds, length_curve, load_model, predict, train

__all__ = [
    "answers",
    "best",
    "check",
    "checkpoints_location",
    "copy",
    "dashboard",
    "download_best",
    "enqueue",
    "evaluate",
    "evaluate_seeds",
    "execute",
    "export",
    "length_curve",
    "load_model",
    "plan",
    "plan_reruns",
    "predict",
    "remove",
    "report",
    "report_sections",
    "rerun",
    "run",
    "SpecCheck",
    "stop_reason",
    "studies",
    "train",
    "Trained",
    "write_report",
]

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
    probe = probe_rows(loaded.probe, loaded.base.train)
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


def report_sections(names: list[str], storage: str | None = None, artifacts: str | None = None) -> list[Section]:
    """The report's sections (title, intro, Plotly figures, table HTML) in page order, to show in a notebook."""
    from sweep.report.page import stored_sections

    return stored_sections(names, storage, artifacts)


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
