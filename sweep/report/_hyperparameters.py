"""What mattered: Optuna's importance, parallel-coordinate and slice figures per study."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from sweep.report.frame import FEW_TRIALS, Section
from sweep.spec.objectives import sign


def hyperparameter_section(
    studies: list[optuna.Study], metric: str, loaded: dict[str, list[FrozenTrial]] | None = None
) -> Section:
    figures: list[go.Figure] = []
    notes: list[str] = []
    for study in studies:
        prefix = f"{study.study_name}: " if len(studies) > 1 else ""
        with warnings.catch_warnings():  # PED-ANOVA warns that it ranks low values: _first_objective negates
            warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes the importances")
            trials = (loaded or {}).get(study.study_name) or study.get_trials(deepcopy=False)
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            figures += _study_hyperparameter_figures(study, complete, prefix, metric, notes)
    intro = (
        "Which hyperparameters mattered (Optuna's default importance evaluator, PED-ANOVA in Optuna 5), every "
        "completed trial across its parameters, and the value against the most important ones."
    )
    if notes:
        intro += " " + " ".join(notes)
    return Section("Hyperparameters", intro, figures)


MAX_PLOTTED = 2_000  # completed trials Optuna's importance and per-trial figures are given, at most


def _plotted(study: optuna.Study, complete: list[FrozenTrial], notes: list[str]) -> optuna.Study:
    """The study itself, or above MAX_PLOTTED completed trials an in-memory one with the best half of
    MAX_PLOTTED and a seeded sample of the rest: Optuna's figures draw one line per trial and copy
    the whole study (30 s at 10,000 trials here), and the ranking of parameters needs no more."""
    if len(complete) <= MAX_PLOTTED:
        return study
    best_first = -sign(study.directions[0])
    ranked = sorted(complete, key=lambda t: (best_first * t.values[0], t.number))
    half = MAX_PLOTTED // 2
    rest = random.Random(0).sample(ranked[half:], MAX_PLOTTED - half)
    sample = optuna.create_study(directions=study.directions)
    sample.add_trials(sorted(ranked[:half] + rest, key=lambda t: t.number))
    notes.append(
        f"{study.study_name}: of its {len(complete):,} completed trials, these figures show {MAX_PLOTTED:,}: "
        f"the best {half:,} and a seeded sample of {MAX_PLOTTED - half:,} others."
    )
    return sample


def _study_hyperparameter_figures(
    study: optuna.Study, complete: list[FrozenTrial], prefix: str, metric: str, notes: list[str]
) -> list[go.Figure]:
    if len(complete) < 2 or not any(t.params for t in complete):
        notes.append(f"{study.study_name}: fewer than two completed trials, nothing to compare yet.")
        return []
    study = _plotted(study, complete, notes)
    if len(complete) < FEW_TRIALS:
        notes.append(
            f"{study.study_name}: importances rest on {len(complete)} completed trials only; read them as a hint."
        )
    target, ranked = _first_objective(study)
    figures = []
    with warnings.catch_warnings(record=True) as said:  # PED-ANOVA's caveats go in the report, not on stderr
        warnings.simplefilter("always", UserWarning)
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes the importances")
        try:
            importances = optuna.importance.get_param_importances(study, target=ranked)
        except (RuntimeError, ValueError) as error:  # e.g. every trial has the same parameters
            notes.append(f"{study.study_name}: importances unavailable ({error}).")
            importances = {}
        if importances:
            fig = optuna.visualization.plot_param_importances(study, target=ranked, target_name=metric)
            title = f"{prefix}hyperparameter importances (Optuna default evaluator)"
            figures.append(fig.update_layout(title=title, height=420))
    notes += sorted({f"{study.study_name}: {w.message}" for w in said if issubclass(w.category, UserWarning)})
    # Conditional parameters leave gaps; the parallel plot takes the unconditional ones.
    always = [p for p in complete[0].params if all(p in t.params for t in complete)]
    if len(always) >= 2:
        fig = optuna.visualization.plot_parallel_coordinate(study, params=always, target=target, target_name=metric)
        figures.append(fig.update_layout(title=f"{prefix}parallel coordinates (completed trials)", height=460))
    top = list(importances)[:3] or always[:3]
    if top:
        fig = optuna.visualization.plot_slice(study, params=top, target=target, target_name=metric)
        figures.append(fig.update_layout(title=f"{prefix}{metric} against the most important parameters", height=420))
    return figures


Target = Callable[[FrozenTrial], float] | None


def _first_objective(study: optuna.Study) -> tuple[Target, Target]:
    """Optuna's figures take one target: with several objectives, the first. Returns (what to plot,
    what to rank importances by: PED-ANOVA ranks low values, so a maximized objective is negated)."""
    if len(study.directions) == 1:
        return None, None
    best_first = -sign(study.directions[0])
    return (lambda t: t.values[0]), (lambda t: best_first * t.values[0])
