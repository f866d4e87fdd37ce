"""The samplers and pruners a spec may name: Optuna's classes, the settings YAML can spell, and which
kind of search each fits (the spec reference prints it).

A setting is a keyword of the class's constructor whose value YAML can write (a number, a string, a
list); the ones that take Python objects (``constraints_func``, ``gamma``, a mutation) are left out:
constraints reach every sampler through ``trial.set_constraint`` instead.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import optuna


@dataclass(frozen=True)
class Component:
    """One sampler or pruner type."""

    cls: type
    fits: str  # which kind of space or study it suits, one line for the reference

    @property
    def settings(self) -> tuple[str, ...]:
        """The constructor's keywords a spec may give."""
        return tuple(
            name
            for name, parameter in inspect.signature(self.cls).parameters.items()
            if name not in _NOT_SETTINGS and not any(word in str(parameter.annotation) for word in _OBJECT_TYPES)
        )


_NOT_SETTINGS = {"search_space", "wrapped_pruner"}  # the spec's space; `patient` wraps a pruner given as `wrapped`
_OBJECT_TYPES = ("Callable", "Sampler", "Mutation", "Crossover", "Pruner", "FrozenTrial")  # values YAML cannot write

SAMPLERS: dict[str, Component] = {
    "tpe": Component(
        optuna.samplers.TPESampler, "the default: any space (ranges, choices, when:), one or several objectives"
    ),
    "random": Component(optuna.samplers.RandomSampler, "a baseline for any space; workers need no coordination"),
    "grid": Component(
        optuna.samplers.GridSampler, "a few choices, every combination (unconditional choices only), then it stops"
    ),
    "bruteforce": Component(
        optuna.samplers.BruteForceSampler,
        "small discrete spaces, when: included (ranges need int or a step): each combination once, then it stops",
    ),
    "qmc": Component(
        optuna.samplers.QMCSampler,
        "ranges covered evenly (Sobol or Halton), a better baseline than random; choices are drawn at random",
    ),
    "gp": Component(
        optuna.samplers.GPSampler,
        "small continuous spaces (learning rate, sizes) and few trials (its cost grows with the trials stored); "
        "constraints and several objectives too",
    ),
    "cmaes": Component(optuna.samplers.CmaEsSampler, "continuous ranges (no when:), one objective, 100+ trials"),
    "nsgaii": Component(optuna.samplers.NSGAIISampler, "two objectives, population by population; many trials"),
    "nsgaiii": Component(
        optuna.samplers.NSGAIIISampler, "three or more objectives (reference points spread the front); many trials"
    ),
}
PRUNERS: dict[str, Component] = {
    "median": Component(
        optuna.pruners.MedianPruner, "stops a trial below the median of earlier trials at the same epoch"
    ),
    "percentile": Component(optuna.pruners.PercentilePruner, "median with another percentile: stricter or looser"),
    "successive_halving": Component(
        optuna.pruners.SuccessiveHalvingPruner, "many cheap trials: keeps the best share at each rung of epochs"
    ),
    "hyperband": Component(optuna.pruners.HyperbandPruner, "successive halving over several budgets at once"),
    "patient": Component(
        optuna.pruners.PatientPruner,
        "curves with plateaus: asks its `wrapped` pruner (none: prunes) only after `patience` epochs "
        "without a `min_delta` gain",
    ),
    "threshold": Component(
        optuna.pruners.ThresholdPruner, "stops diverged or stuck runs: a curve below `lower` after the warm-up"
    ),
    "none": Component(optuna.pruners.NopPruner, "every trial trains all its epochs"),
}
WRAPPED = "wrapped"  # patient's inner pruner, a pruner spec of its own


def make_pruner(body: dict[str, Any], n_epochs: int) -> optuna.pruners.BasePruner:
    """A pruner from its parsed spec body; hyperband's max_resource defaults to the epochs trained."""
    kind = body["type"]
    kwargs = {k: v for k, v in body.items() if k not in ("type", WRAPPED)}
    if kind == "hyperband":
        kwargs.setdefault("max_resource", n_epochs)
    if kind == "patient":
        wrapped = body.get(WRAPPED)
        kwargs["wrapped_pruner"] = make_pruner(wrapped, n_epochs) if wrapped else None
    return PRUNERS[kind].cls(**kwargs)
