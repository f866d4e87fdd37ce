"""The parsed study spec: its search dimensions (`Param`), the sampler and pruner it builds, and the
fingerprint a stored study must match to be resumed. `sweep.spec.parse` makes one from YAML.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna

from digitsum import config as cfg
from digitsum.config import Config
from digitsum.errors import UsageError
from digitsum.lengths import Probe
from sweep.spec.components import SAMPLERS, make_pruner
from sweep.spec.objectives import (
    ACCURACY_METRICS,
    Constraint,
    CurveMedian,
    Direction,
    Metric,
    Name,
    Objective,
    reports_per_epoch,
)


class ValueFrom(Name):
    """Which epoch's metric is a trial's value."""

    BEST = "best"  # the best epoch by validation exact match
    LAST = "last"


class SeedAggregate(Name):
    """A trial's value over its seeds (``fixed: {train.n_seeds: K}``), at every epoch and at the end."""

    MEAN = "mean"
    MIN = "min"  # the worst seed: a recipe that must hold on every seed

    def of(self, values: list[float]) -> float:
        """The mean or the smallest of ``values``; NaN where one is (a probe with no in-range rows)."""
        if any(math.isnan(v) for v in values):
            return math.nan
        return statistics.fmean(values) if self is SeedAggregate.MEAN else min(values)


class Keep(Name):
    """Which trials keep their checkpoints."""

    BEST = "best"
    ALL = "all"


METRICS = ACCURACY_METRICS  # what `metric:` (one objective, maximized) may name
VALUE_FROM = tuple(v.value for v in ValueFrom)
SEED_AGGREGATES = tuple(a.value for a in SeedAggregate)


@dataclass(frozen=True)
class StopRule:
    """No new trial starts once the best value (the hypervolume, for several objectives) has not
    improved by ``min_delta`` over the last ``patience`` finished trials."""

    patience: int
    min_delta: float = 0.0


@dataclass(frozen=True)
class PBTRule:
    """Population-based training (``pbt:``): ``population`` members, one trial each, trained as one
    computation; every ``interval`` epochs the bottom ``quantile`` copy a member of the top one, then
    perturb each hyperparameter by a factor of ``perturb`` or, with chance ``resample``, draw it anew."""

    population: int
    interval: int
    quantile: float = 0.25
    perturb: tuple[float, float] = (0.8, 1.25)
    resample: float = 0.25
    seed: int = 0


class SpecError(UsageError):
    """A bad study spec."""


@dataclass(frozen=True)
class Param:
    """One search dimension over a dotted config key."""

    key: str
    choices: tuple[Any, ...] | None = None
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    is_int: bool = False
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # only suggested when these keys took these values

    def active(self, chosen: dict[str, Any]) -> bool:
        return all(chosen.get(name) in values for name, values in self.when.items())

    def values(self) -> tuple[Any, ...] | None:
        """Every value it can take (choices, or a range of ints or with a step); None for a continuous range."""
        if self.choices is not None:
            return self.choices
        step = self.step or (1 if self.is_int else None)
        if step is None:
            return None
        count = int((self.high - self.low) / step + 1e-9) + 1
        return tuple(self.low + i * step for i in range(count))

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.is_int:
            step = int(self.step) if self.step else 1
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def to_dict(self) -> dict[str, Any]:
        """What the dimension is, as stored on the study (JSON values)."""
        return {**dataclasses.asdict(self), "when": {k: list(v) for k, v in self.when.items()}}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Param:
        choices = stored.get("choices")
        when = {k: tuple(v) for k, v in (stored.get("when") or {}).items()}
        return cls(**{**stored, "choices": tuple(choices) if choices is not None else None, "when": when})

    def shape(self) -> dict[str, Any]:
        """What the dimension searches, in one spelling (for the fingerprint)."""
        number = int if self.is_int else float
        return {
            "key": self.key,
            "choices": None
            if self.choices is None
            else [cfg.canonical(self.key, cfg.check_value(self.key, c)) for c in self.choices],
            "range": None
            if self.choices is not None
            else [number(self.low), number(self.high), self.log, self.step, self.is_int],
            "when": {name: list(values) for name, values in sorted(self.when.items())},
        }


@dataclass(frozen=True)
class StudySpec:
    name: str
    path: str
    description: str
    metric: Metric
    value_from: ValueFrom
    n_trials: int
    timeout: float | None
    base: Config  # defaults + data + fixed values
    probe: Probe
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    space: tuple[Param, ...]
    keep_checkpoints: Keep
    raw: dict[str, Any]
    target: float = 0.99
    objectives: tuple[Objective, ...] = ()  # () means `metric`, maximized
    constraints: tuple[
        Constraint, ...
    ] = ()  # only for studies stored with the first fingerprint (`legacy_fingerprint`)
    balance: Param | None = None  # a choices parameter whose choices get equal numbers of trials
    tensorboard: str | None = None  # the folder whose STUDY/ holds a TensorBoard run per trial; None: off
    enqueue: tuple[dict[str, Any], ...] = ()  # warm starts: params the study tries first (sweep.spec.enqueue)
    stop: StopRule | None = None  # ends the search when it stops improving
    pbt: PBTRule | None = None  # population-based training (sweep.run.pbt)
    seed_aggregate: SeedAggregate = SeedAggregate.MEAN  # a trial's value over its train.n_seeds seeds
    stack: int = 1  # trials a worker trains at once (sweep.run.stack); not part of the fingerprint

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every active parameter, in spec order, so conditions can refer to earlier keys."""
        chosen: dict[str, Any] = {}
        for param in self.space:
            if param.active(chosen):
                chosen[param.key] = param.suggest(trial)
        return chosen

    @property
    def goals(self) -> tuple[Objective, ...]:
        """What the study optimizes: its objectives, or its one metric, maximized."""
        return self.objectives or (Objective(self.metric, Direction.MAXIMIZE),)

    @property
    def measured(self) -> tuple[Metric, ...]:
        """Every metric a trial must measure: its objectives' and its constraints'."""
        return tuple(dict.fromkeys([*(g.metric for g in self.goals), *(c.metric for c in self.constraints)]))

    @property
    def reports_per_epoch(self) -> bool:
        """One accuracy objective, maximized: Optuna's pruners see its curve via trial.report."""
        return reports_per_epoch(self.goals)

    @property
    def early_stop(self) -> CurveMedian | None:
        """The rule that stops hopeless trials where Optuna's pruners cannot (see sweep.spec.objectives)."""
        if self.reports_per_epoch or self.pruner["type"] != "median":
            return None
        settings = {k: v for k, v in self.pruner.items() if k in ("n_startup_trials", "n_warmup_steps")}
        return CurveMedian(**settings, group_by=self.balance.key if self.balance else None)

    def combinations(self, limit: int = 1_000_000) -> int | None:
        """How many distinct trials the space holds (`when` counted); None if continuous or over ``limit``."""

        def count(index: int, chosen: dict[str, Any]) -> int:
            if index == len(self.space):
                return 1
            param = self.space[index]
            if not param.active(chosen):
                return count(index + 1, chosen)
            values = param.values() or ()
            if param.when or any(param.key in p.when for p in self.space[index + 1 :]):
                return sum(count(index + 1, {**chosen, param.key: v}) for v in values)
            return len(values) * count(index + 1, chosen)

        if any(p.values() is None for p in self.space) or math.prod(len(p.values() or ()) for p in self.space) > limit:
            return None
        return count(0, {})

    def model_types(self) -> tuple[str, ...]:
        """The model types its trials can train."""
        param = next((p for p in self.space if p.key == "model.model_type" and p.choices), None)
        return tuple(dict.fromkeys(param.choices)) if param and param.choices else (self.base.model.model_type,)

    def config_for(self, params: dict[str, Any]) -> Config:
        return cfg.apply(self.base, params)

    def fingerprint(self) -> str:
        """What a stored study must match to be resumed: metric, data, fixed values, search space.

        Taken from the validated spec, so equivalent spellings (``lengths: 2-4`` or ``[2, 3, 4]``,
        a fixed value equal to its default, ``val_fraction`` or ``train.train_split_fraction``)
        give the same fingerprint; the name, the sampler and the pruner may change on resume."""
        shape: dict[str, Any] = {
            "metric": self.metric.value,
            "value": self.value_from.value,
            "config": cfg.changed_keys(self.base),
            "probe": [list(self.probe.lengths), self.probe.sample] if self.probe.lengths else None,
            "space": [param.shape() for param in self.space],
            "balance": self.balance.key if self.balance else None,
        }
        if self.target != 0.99:  # added later: studies made before it keep their fingerprint
            shape["target"] = self.target
        if self.seed_aggregate is not SeedAggregate.MEAN:
            shape["seed_aggregate"] = self.seed_aggregate.value
        if self.probe.in_range:  # other probe rows: other values
            shape["probe_in_range"] = True
        if self.pbt is not None:  # a population's trials change their hyperparameters as they train
            shape["pbt"] = dataclasses.asdict(self.pbt)
        if self.objectives or self.constraints:
            shape["objectives"] = [o.to_dict() for o in self.goals]
            shape["constraints"] = [c.to_dict() for c in self.constraints]
        digest = hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()
        return f"v2:{digest[:16]}"

    def legacy_fingerprint(self) -> str:
        """The fingerprint of studies made before the validated one: a hash of the raw YAML."""
        shape = {name: self.raw.get(name) for name in ("metric", "value", "space", "data", "fixed", "balance")}
        return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def matches(self, stored: str) -> bool:
        """Whether a study stored with fingerprint ``stored`` was made by this spec's search."""
        return stored == (self.fingerprint() if stored.startswith("v2:") else self.legacy_fingerprint())

    def make_sampler(self, worker: int = 0, resumed_trials: int = 0) -> optuna.samplers.BaseSampler:
        """The spec's sampler, its seed offset per worker and per resume point (deterministically),
        so parallel workers and a resumed study do not repeat the trials already drawn."""
        kind = self.sampler["type"]
        kwargs = {k: v for k, v in self.sampler.items() if k != "type"}
        # qmc's workers share one sequence through the storage: a seed per worker would scramble each differently
        if kwargs.get("seed") is not None and kind != "qmc":
            kwargs["seed"] = (int(kwargs["seed"]) + worker + 100_003 * resumed_trials) % 2**32
        if kind == "grid":
            kwargs["search_space"] = {p.key: list(p.choices or ()) for p in self.space}
        return SAMPLERS[kind].cls(**kwargs)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if not self.reports_per_epoch:
            return optuna.pruners.NopPruner()  # the trial applies `early_stop` itself
        return make_pruner(self.pruner, self.base.train.n_epochs)
