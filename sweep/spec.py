"""Study specs: YAML -> a validated search space, sampler, pruner and fixed config.

Every spec key is declared once, as a field of `SpecKeys`, `DataKeys` or `ParamKeys` (default,
allowed values, help); the parser, the error messages and `sweep keys` read those fields. Every
mistake is a `SpecError` whose one line names the file, the key and what is allowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import hashlib
import inspect
import json
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from digitsum import config as cfg
from digitsum.config import Config
from digitsum.errors import DataError, UsageError, shown
from digitsum.files import require_file
from digitsum.keys import Rule, between, did_you_mean, key, one_of, parse_of, rule_of, unwrap_optional
from digitsum.lengths import PROBE_SAMPLE, Probe, check_lengths, lengths_text, parse_lengths
from sweep.objectives import ACCURACY_METRICS, Constraint, CurveMedian, Direction, Metric, Name, Objective


class ValueFrom(Name):
    """Which epoch's metric is a trial's value."""

    BEST = "best"  # the best epoch by validation exact match
    LAST = "last"


class Keep(Name):
    """Which trials keep their checkpoints."""

    BEST = "best"
    ALL = "all"


METRICS = ACCURACY_METRICS  # what `metric:` (one objective, maximized) may name
VALUE_FROM = tuple(v.value for v in ValueFrom)
SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
}
PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}


class SpecError(UsageError):
    """A bad study spec."""


# ---------------------------------------------------------------------------------------------
# The spec's keys, declared once


def _lengths(value: Any) -> str | None:
    """[2, 3, 4], "2-4" or 5 -> train.lengths' spelling; None where it is none of these."""
    if isinstance(value, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        return lengths_text(value)
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _probe_lengths(value: Any) -> tuple[int, ...] | None:
    values = [value] if isinstance(value, int) else value
    if not isinstance(values, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in values):
        return None
    return tuple(values)


# A study's name becomes part of file names (reports/NAME.html, checkpoint folders) and of URLs
# (optuna-dashboard), and `STUDY:TRIAL` is split at its last colon: so a new name is plain.
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
STUDY_NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or a digit, like compare-cells"


def is_study_name(name: str) -> bool:
    return bool(_STUDY_NAME.fullmatch(name))


def check_study_name(name: str, option: str = "--name") -> str:
    """A name for a new study (or one to resume) as `sweep run` takes it; SpecError saying what is allowed.
    Studies stored under other names before this rule stay readable, exportable and removable."""
    if not is_study_name(name):
        raise SpecError(f"{option} {shown(name)}: a study name is {STUDY_NAME_RULE}")
    return name


def _mapping(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class SpecKeys:
    """The top level of a study spec."""

    name: str = key(
        "",
        "the study's name in the storage (required); --name overrides it",
        Rule(lambda v: not v.strip() or is_study_name(v.strip()), STUDY_NAME_RULE),  # empty: "required"
    )
    description: str = key("", "one line for reports and the dashboard note")
    metric: str = key(
        "val_exact_match",
        "the one objective, maximized (or give objectives); the probe_* metrics need data.probe_lengths",
        one_of(METRICS),
    )
    objectives: list[Any] | None = key(
        None,
        "several objectives (Optuna's multi-objective study, a Pareto front): [{metric: .., direction: ..}, ...]",
        parse=lambda v: v if isinstance(v, list) and v else None,
    )
    constraints: dict[str, Any] | None = key(
        None,
        "bounds a feasible trial meets, e.g. {n_parameters: {max: 20000}, val_exact_match: {min: 0.99}}",
        parse=_mapping,
    )
    value: str = key(
        "best", "which epoch's metric is the trial's value: the best by validation, or the last", one_of(VALUE_FROM)
    )
    n_trials: int = key(
        20, "finished trials the study runs to, over all workers; --trials overrides it", between(1, 1_000_000)
    )
    timeout: float | None = key(
        None,
        "seconds after which no new trial starts; --timeout overrides it",
        Rule(lambda v: v > 0, "seconds > 0, or leave it out for no limit"),
    )
    target: float = key(
        0.99,
        "validation exact match that counts as trained: each trial records the epoch and training seconds "
        "at which it first reached it",
        Rule(lambda v: 0 < v <= 1, "a number in (0, 1], e.g. 0.99"),
    )
    keep_checkpoints: str = key(
        "best", "keep the best trial's checkpoint only, or every trial's", one_of(tuple(k.value for k in Keep))
    )
    balance: str | None = key(None, "a choices parameter of space whose choices get equal numbers of trials")
    data: dict[str, Any] | None = key(None, "the rows trials train, validate and probe on (see data.*)", parse=_mapping)
    fixed: dict[str, Any] | None = key(
        None, "config keys set for every trial, e.g. {train.n_epochs: 30}", parse=_mapping
    )
    space: dict[str, Any] | None = key(
        None, "config keys to search: {choices: [...]} or {low: .., high: ..} each (required)", parse=_mapping
    )
    sampler: Any = key("tpe", f"Optuna sampler: a type ({', '.join(SAMPLERS)}) or {{type: .., its settings}}")
    pruner: Any = key("none", f"Optuna pruner: a type ({', '.join(PRUNERS)}) or {{type: .., its settings}}")


@dataclass(frozen=True)
class ObjectiveKeys:
    """One entry of ``objectives:``."""

    metric: str | None = key(None, "what the objective measures (required)", one_of(tuple(m.value for m in Metric)))
    direction: str | None = key(
        None,
        "maximize or minimize; default: maximize accuracies, minimize costs",
        one_of(tuple(d.value for d in Direction)),
    )


@dataclass(frozen=True)
class ConstraintKeys:
    """One entry of ``constraints:``, under a metric's name."""

    min: float | None = key(None, "the smallest feasible value", Rule(math.isfinite, "a number"))
    max: float | None = key(None, "the largest feasible value", Rule(math.isfinite, "a number"))


@dataclass(frozen=True)
class DataKeys:
    """``data:``, the rows of every trial."""

    lengths: str | None = key(
        None,
        "training input lengths, e.g. [2, 3, 4] or 2-4 (train.lengths)",
        Rule(lambda v: True, "lengths like [2, 3, 4] or 2-4"),
        parse=_lengths,
    )
    val_fraction: float | None = key(
        None,
        "the validation share, e.g. 0.2 (train.train_split_fraction = 1 - it)",
        Rule(lambda v: 0 < v < 1, "a number between 0 and 1, e.g. 0.2"),
    )
    dataset_path: str | None = key(None, "a headerless x,y CSV to train on instead (train.dataset_path)")
    probe_lengths: tuple[int, ...] = key(
        (),
        "unseen input lengths scored after training, e.g. [5, 6]",
        Rule(lambda v: True, "a list of lengths, e.g. [5, 6]"),
        parse=_probe_lengths,
    )
    probe_sample: int = key(
        PROBE_SAMPLE, "probe rows per length where there are more strings (a seeded sample)", between(1, 1_000_000)
    )


@dataclass(frozen=True)
class ParamKeys:
    """One entry of ``space:``, a search dimension over a config key."""

    choices: list[Any] | None = key(
        None,
        "values to choose from (categorical); or give low and high",
        Rule(bool, "a non-empty list"),
        parse=lambda v: v if isinstance(v, list) else None,
    )
    low: float | None = key(None, "the range's lower end", Rule(math.isfinite, "a number"))
    high: float | None = key(None, "the range's upper end", Rule(math.isfinite, "a number"))
    log: bool = key(False, "sample the range on a log scale (low > 0)", Rule(lambda v: True, "true or false"))
    step: float | None = key(None, "the range's step (not with log)", Rule(lambda v: v > 0, "a number > 0"))
    type: str | None = key(None, "int or float; default: the config key's type", one_of(("int", "float")))
    when: dict[str, Any] | None = key(
        None,
        "only search it when earlier choices took these values",
        Rule(lambda v: True, "a mapping like {model.model_type: [lstm, gru]}"),
        parse=_mapping,
    )


SPEC_SECTIONS = {"data", "fixed", "space", "sampler", "pruner", "objectives", "constraints"}  # parsed on their own


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def read_keys(cls: type, body: dict[str, Any], where: str, fail: Callable[[str, str], SpecError]) -> dict[str, Any]:
    """The declared fields of ``cls`` that ``body`` gives, type- and rule-checked; unknown keys refused."""
    names = field_names(cls)
    unknown = sorted(set(body) - set(names), key=str)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), names, n=1)
        hint = f"did you mean {close[0]}?" if close else f"allowed: {', '.join(sorted(names))}"
        raise fail(f"{where}{unknown[0]}", f"unknown key; {hint}")
    hints = _type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in body or f.name in SPEC_SECTIONS and cls is SpecKeys:
            continue
        raw, rule = body[f.name], rule_of(f)
        value = _strict(raw, hints[f.name], parse_of(f))
        if value is _INVALID or (value is not None and not rule.check(value)):
            raise fail(f"{where}{f.name}", f"{shown(raw)}: expected {rule.allowed}{did_you_mean(raw, rule)}")
        values[f.name] = value
    return values


_type_hints = functools.cache(typing.get_type_hints)  # read once per spec section, not per entry of space
_INVALID = object()


def _strict(value: Any, annotation: Any, parse: Callable[[Any], Any] | None) -> Any:
    """A YAML value as the field's type, with no conversion from text (YAML already typed it)."""
    if parse is not None:
        parsed = parse(value)
        return _INVALID if parsed is None else parsed
    base, optional = unwrap_optional(annotation)
    if value is None:
        return None if optional else _INVALID
    if base is bool:
        return value if isinstance(value, bool) else _INVALID
    if isinstance(value, bool):
        return _INVALID
    if base is int:
        return value if isinstance(value, int) else _INVALID
    if base is float:
        return float(value) if isinstance(value, (int, float)) else _INVALID
    if base is str:
        return value if isinstance(value, str) else _INVALID
    return value


# ---------------------------------------------------------------------------------------------
# The parsed spec


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

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.is_int:
            step = int(self.step) if self.step else 1
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

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
        goal = self.goals[0]
        return len(self.goals) == 1 and goal.metric.is_accuracy and goal.direction is Direction.MAXIMIZE

    @property
    def early_stop(self) -> CurveMedian | None:
        """The rule that stops hopeless trials where Optuna's pruners cannot (see sweep.objectives)."""
        if self.reports_per_epoch or self.pruner["type"] != "median":
            return None
        settings = {k: v for k, v in self.pruner.items() if k in ("n_startup_trials", "n_warmup_steps")}
        return CurveMedian(**settings, group_by=self.balance.key if self.balance else None)

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
        if kwargs.get("seed") is not None:
            kwargs["seed"] = (int(kwargs["seed"]) + worker + 100_003 * resumed_trials) % 2**32
        if kind == "grid":
            kwargs["search_space"] = {p.key: list(p.choices or ()) for p in self.space}
        return SAMPLERS[kind](**kwargs)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if not self.reports_per_epoch:
            return optuna.pruners.NopPruner()  # the trial applies `early_stop` itself
        kind = self.pruner["type"]
        kwargs = {k: v for k, v in self.pruner.items() if k != "type"}
        if kind == "hyperband":
            kwargs.setdefault("max_resource", self.base.train.n_epochs)
        return PRUNERS[kind](**kwargs)


# ---------------------------------------------------------------------------------------------
# Parsing


def load_spec(path: str | Path) -> StudySpec:
    """A spec file, or a shipped spec by name (``sweep run quickstart``)."""
    given = Path(path)
    if given.exists():  # a folder or a device is not taken for a shipped spec's name
        require_file(given, "study spec", "", SpecError)
    found = given if given.is_file() else shipped_specs().get(given.name.removesuffix(".yaml"))
    if found is None or (not given.is_file() and len(given.parts) > 1 and given.parent != Path("studies")):
        shipped = ", ".join(shipped_specs()) or "none found"
        raise SpecError(f"{given}: no such study spec; give a YAML file or a shipped spec's name ({shipped})")
    return parse_spec(read_yaml(found, SpecError), str(given))


def shipped_specs() -> dict[str, Path]:
    """The study specs that ship with the package, by name: installed as the package sweep.studies
    (pyproject.toml maps it to studies/), or studies/ beside the package in a source checkout."""
    import importlib.resources

    folders = [Path(__file__).resolve().parents[1] / "studies"]
    with contextlib.suppress(ModuleNotFoundError):  # an editable install: the folder above is the one
        folders.insert(0, Path(str(importlib.resources.files("sweep.studies"))))
    folder = next((f for f in folders if f.is_dir()), None)
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder else {}


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            name = self.construct_object(key_node, deep=deep)
            if name in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(None, None, f"line {line}: {name!r} is given twice; keep one")
            seen.add(name)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, error: type[UsageError] = UsageError) -> Any:
    """A YAML (or JSON) file's content; ``error`` names the file for bad text, bad YAML or a key given twice."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file; a study spec or config is YAML text") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except RecursionError:  # PyYAML reads nesting recursively
        raise error(f"{path}: nested too deeply to read; a spec or config is a few levels deep") from None
    except yaml.constructor.ConstructorError as problem:
        raise error(f"{path}: {problem.problem}") from None
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML ({' '.join(str(problem).split())[:160]})") from None


def parse_spec(raw: Any, source: str = "<spec>") -> StudySpec:
    def fail(name: str, message: str) -> SpecError:
        return SpecError(f"{source}: {name}: {message}")

    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a study spec is a YAML mapping with name, space, ...; see studies/quickstart.yaml")
    top = {**_defaults(SpecKeys), **read_keys(SpecKeys, raw, "", fail)}
    if not top["name"].strip():
        raise fail("name", "required: the study's name, e.g. name: quickstart")
    base, probe = _parse_data(raw.get("data"), fail)
    base = _apply_fixed(base, raw.get("fixed"), fail)
    space = _parse_space(raw.get("space"), fail)
    _check_set_once(raw, space, fail)
    _check_probe_is_unseen(base, probe, space, fail)
    sampler = _parse_component(raw.get("sampler") or "tpe", "sampler", SAMPLERS, fail)
    pruner = _parse_component(raw.get("pruner") or "none", "pruner", PRUNERS, fail)
    objectives = _parse_objectives(raw, fail)
    constraints = _parse_constraints(raw.get("constraints"), fail)
    balance = _check_combinations(top, space, sampler, probe, objectives, pruner, fail)
    _check_probe_metrics(top, probe, objectives, constraints, fail)
    spec = StudySpec(
        name=top["name"].strip(),
        path=source,
        description=top["description"].strip(),
        metric=Metric(top["metric"]),
        value_from=ValueFrom(top["value"]),
        n_trials=top["n_trials"],
        timeout=top["timeout"],
        base=base,
        probe=probe,
        sampler=sampler,
        pruner=pruner,
        space=space,
        keep_checkpoints=Keep(top["keep_checkpoints"]),
        target=top["target"],
        raw=raw,
        balance=balance,
        objectives=objectives,
        constraints=constraints,
    )
    try:  # build both once so a bad setting is a spec error now, not a crash in a worker
        spec.make_sampler()
        spec.make_pruner()
    except Exception as error:  # Optuna's and numpy's checks of the settings raise many kinds
        raise fail("sampler/pruner", " ".join(str(error).split())[:200]) from None
    return spec


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _check_probe_metrics(
    top: dict[str, Any],
    probe: Probe,
    objectives: tuple[Objective, ...],
    constraints: tuple[Constraint, ...],
    fail: Callable[[str, str], SpecError],
) -> None:
    """A probe metric (as the metric, an objective or a constraint) needs probe lengths to score."""
    if probe.lengths:
        return
    named = [
        ("objectives" if objectives else "metric", o.metric)
        for o in objectives or (Objective(Metric(top["metric"]), Direction.MAXIMIZE),)
    ]
    named += [(f"constraints.{c.metric}", c.metric) for c in constraints]
    where, metric = next(((w, m) for w, m in named if m.uses_probe), (None, None))
    if metric is not None:
        raise fail(str(where), f"{metric} needs data.probe_lengths, e.g. [5]")


def _check_combinations(
    top: dict[str, Any],
    space: tuple[Param, ...],
    sampler: dict[str, Any],
    probe: Probe,
    objectives: tuple[Objective, ...],
    pruner: dict[str, Any],
    fail: Callable[[str, str], SpecError],
) -> Param | None:
    """What no single key can check: the grid sampler, balance and the probe metric. Returns balance."""
    if sampler["type"] == "grid":
        bad = [p.key for p in space if p.choices is None or p.when]
        if bad:
            raise fail(f"space.{bad[0]}", "the grid sampler needs every parameter as unconditional choices: [...]")
    per_epoch = not objectives or (
        len(objectives) == 1 and objectives[0].metric.is_accuracy and objectives[0].direction is Direction.MAXIMIZE
    )
    if not per_epoch and pruner["type"] not in ("median", "none"):
        raise fail(
            "pruner.type",
            f"{pruner['type']!r}: Optuna's pruners need one accuracy objective; with these objectives, median "
            "stops a trial whose validation curve falls below the median of completed trials (or use none)",
        )
    if top["balance"] is None:
        return None
    balance = next((p for p in space if p.key == top["balance"]), None)
    if balance is None or balance.choices is None or balance.when:
        raise fail("balance", f"{top['balance']!r} must be an unconditional choices parameter of space")
    return balance


def _parse_objectives(raw: dict[str, Any], fail: Callable[[str, str], SpecError]) -> tuple[Objective, ...]:
    """``objectives:`` as Objectives; () when the spec gives ``metric:`` (or neither)."""
    given = raw.get("objectives")
    if given is None:
        return ()
    if "metric" in raw:
        raise fail("objectives", "give metric (one objective) or objectives, not both")
    if not isinstance(given, list) or not given:
        raise fail(
            "objectives",
            "expected a list like [{metric: val_exact_match}, {metric: n_parameters, direction: minimize}]",
        )
    objectives = []
    for index, body in enumerate(given):
        where = f"objectives[{index}]"
        body = {"metric": body} if isinstance(body, str) else body
        if not isinstance(body, dict):
            raise fail(where, "expected {metric: ..., direction: maximize or minimize}")
        values = read_keys(ObjectiveKeys, body, f"{where}.", fail)
        if values.get("metric") is None:
            raise fail(f"{where}.metric", f"required: one of {', '.join(m.value for m in Metric)}")
        metric = Metric(values["metric"])
        objectives.append(Objective(metric, Direction(values.get("direction") or metric.natural_direction)))
    metrics = [o.metric for o in objectives]
    if len(set(metrics)) < len(metrics):
        raise fail("objectives", "each metric may appear once")
    return tuple(objectives)


def _parse_constraints(given: Any, fail: Callable[[str, str], SpecError]) -> tuple[Constraint, ...]:
    if given is None:
        return ()
    names = [m.value for m in Metric]
    constraints = []
    for name, body in given.items():
        where = f"constraints.{name}"
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=1)
            raise fail(
                where, f"unknown metric; {f'did you mean {close[0]}?' if close else 'one of ' + ', '.join(names)}"
            )
        if not isinstance(body, dict):
            raise fail(where, f"{shown(body)}: expected bounds like {{max: 20000}} or {{min: 0.99}}")
        values = read_keys(ConstraintKeys, body, f"{where}.", fail)
        if values.get("min") is None and values.get("max") is None:
            raise fail(where, "give min, max or both, e.g. {max: 20000}")
        constraints.append(Constraint(Metric(name), values.get("min"), values.get("max")))
    return tuple(constraints)


def _parse_data(data: Any, fail: Callable[[str, str], SpecError]) -> tuple[Config, Probe]:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise fail("data", "expected a mapping like {lengths: [2, 3, 4], val_fraction: 0.2, probe_lengths: [5]}")
    given = read_keys(DataKeys, data, "data.", fail)
    values: dict[str, Any] = {}
    try:
        if "lengths" in given:
            parse_lengths(given["lengths"])
            values["train.lengths"] = given["lengths"]
        if "dataset_path" in given:
            values["train.dataset_path"] = given["dataset_path"]
        if "val_fraction" in given:
            values["train.train_split_fraction"] = round(1.0 - given["val_fraction"], 10)
        lengths = given.get("probe_lengths", ())
        probe = Probe(tuple(check_lengths(list(lengths))) if lengths else (), given.get("probe_sample", PROBE_SAMPLE))
        return cfg.apply(Config(), values), probe
    except (DataError, UsageError) as error:
        raise fail("data", str(error)) from None


# The config key each data entry sets: a spec may set a key in one place only.
DATA_SETS = {
    "lengths": "train.lengths",
    "dataset_path": "train.dataset_path",
    "val_fraction": "train.train_split_fraction",
}


def _check_set_once(raw: dict[str, Any], space: tuple[Param, ...], fail: Callable[[str, str], SpecError]) -> None:
    """Refuse a config key given twice (data and fixed, fixed and space): one of them would silently win."""
    data = raw.get("data") or {}
    fixed = cfg.flatten(raw.get("fixed") or {})
    places: dict[str, str] = {DATA_SETS[name]: f"data.{name}" for name in data if name in DATA_SETS}
    for name in fixed:
        if name in places:
            raise fail(f"fixed.{name}", f"also set by {places[name]}; keep one")
        places[name] = f"fixed.{name}"
    for param in space:
        if param.key in places:
            raise fail(f"space.{param.key}", f"also set by {places[param.key]}; a key is either fixed or searched")


def _check_probe_is_unseen(
    base: Config, probe: Probe, space: tuple[Param, ...], fail: Callable[[str, str], SpecError]
) -> None:
    """A probe measures lengths never seen in training: refuse one that overlaps the training lengths."""
    if not probe.lengths or base.train.dataset_path:
        return  # a CSV's lengths are known only when it is read
    searched = next((p for p in space if p.key == "train.lengths"), None)
    spellings = list(searched.choices or ()) if searched else [base.train.lengths]
    trained = {n for text in spellings for n in parse_lengths(str(text))}
    seen = sorted(trained & set(probe.lengths))
    if seen:
        raise fail("data.probe_lengths", f"{seen} are also training lengths; a probe scores lengths never trained on")


def _apply_fixed(base: Config, fixed: Any, fail: Callable[[str, str], SpecError]) -> Config:
    if fixed is None:
        return base
    if not isinstance(fixed, dict):
        raise fail("fixed", "expected a mapping of config keys, like {train.n_epochs: 30}")
    try:
        return cfg.apply(base, fixed)
    except UsageError as error:
        raise fail("fixed", str(error)) from None


def _parse_space(space: Any, fail: Callable[[str, str], SpecError]) -> tuple[Param, ...]:
    if not isinstance(space, dict) or not space:
        raise fail("space", "required: a mapping of config keys to {choices: [...]} or {low: .., high: ..}")
    params: dict[str, Param] = {}
    for name, body in space.items():
        where = f"space.{name}"
        try:
            declared = cfg.check_key(name)
        except UsageError as error:
            raise fail(where, str(error)) from None
        if not isinstance(body, dict):
            raise fail(where, "expected {choices: [...]} or {low: .., high: .., log: .., step: ..}")
        given = read_keys(ParamKeys, body, f"{where}.", fail)
        when = _parse_when(given.get("when"), params, where, fail)
        if "choices" in given:
            params[name] = _parse_choices(name, given, when, where, fail)
        else:
            params[name] = _parse_range(declared, given, when, where, fail)
    return tuple(params.values())


def _parse_choices(
    name: str,
    given: dict[str, Any],
    when: dict[str, tuple[Any, ...]],
    where: str,
    fail: Callable[[str, str], SpecError],
) -> Param:
    if set(given) - {"choices", "when", "type"}:
        raise fail(where, "give either choices or low/high, not both")
    for choice in given["choices"]:
        _check(name, choice, where, fail)
    if len({repr(c) for c in given["choices"]}) < len(given["choices"]):
        raise fail(f"{where}.choices", f"{shown(given['choices'])} lists a value twice; keep one")
    return Param(name, choices=tuple(given["choices"]), when=when)


def _parse_when(
    when: Any, seen: dict[str, Param], where: str, fail: Callable[[str, str], SpecError]
) -> dict[str, tuple[Any, ...]]:
    if when is None:
        return {}
    if not when:
        raise fail(f"{where}.when", "expected a mapping like {model.model_type: [lstm, gru]}")
    parsed = {}
    for name, values in when.items():
        values = tuple(values) if isinstance(values, list) else (values,)
        earlier = seen.get(name)
        if earlier is None or earlier.choices is None:
            raise fail(f"{where}.when", f"{shown(name)} must be a choices parameter listed earlier in space")
        stray = [v for v in values if v not in earlier.choices]
        if stray:
            raise fail(f"{where}.when", f"{shown(stray[0])} is not one of {name}'s choices {list(earlier.choices)}")
        parsed[name] = values
    return parsed


def _parse_range(
    declared: cfg.Key,
    given: dict[str, Any],
    when: dict[str, tuple[Any, ...]],
    where: str,
    fail: Callable[[str, str], SpecError],
) -> Param:
    if "low" not in given or "high" not in given:
        raise fail(where, "a range needs low and high (or give choices: [...])")
    low, high, log, step = given["low"], given["high"], given.get("log", False), given.get("step")
    if declared.type not in (int, float):
        raise fail(where, f"{declared.name} is not numeric; use choices: [...]")
    kind = given.get("type") or declared.type.__name__
    if kind == "float" and declared.type is int:
        raise fail(f"{where}.type", f"{kind!r}: {declared.name} takes int values")
    is_int = kind == "int"
    if is_int and not (low.is_integer() and high.is_integer()):
        raise fail(where, f"low and high must be integers for {declared.name}")
    if low > high:
        raise fail(where, f"low {_number(low)} > high {_number(high)}; swap them")
    if low == high or (step is not None and high - low < step):
        raise fail(where, f"the range {_number(low)}..{_number(high)} holds one value; put it in fixed instead")
    if log and low <= 0:
        raise fail(where, f"log scale needs low > 0 (got {_number(low)})")
    if log and step is not None:
        raise fail(where, "step and log cannot be combined (Optuna does not support it)")
    for bound in (low, high):
        _check(declared.name, int(bound) if is_int else bound, where, fail)
    number = int if is_int else float
    return Param(declared.name, low=number(low), high=number(high), log=log, step=step, is_int=is_int, when=when)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _check(name: str, value: Any, where: str, fail: Callable[[str, str], SpecError]) -> None:
    try:
        cfg.check_value(name, value)
    except UsageError as error:
        raise fail(where, str(error)) from None


def _parse_component(
    body: Any, what: str, kinds: dict[str, Callable[..., Any]], fail: Callable[[str, str], SpecError]
) -> dict[str, Any]:
    if isinstance(body, str):
        body = {"type": body}
    kind = body.get("type") if isinstance(body, dict) else body
    if not isinstance(body, dict) or not isinstance(kind, str) or kind not in kinds:
        close = difflib.get_close_matches(str(kind), kinds, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise fail(f"{what}.type", f"{shown(kind)} is not one of {', '.join(kinds)}{hint}")
    allowed = set(inspect.signature(kinds[body["type"]]).parameters) - {"search_space"}
    unknown = set(body) - allowed - {"type"}
    if unknown:
        raise fail(
            f"{what}.{sorted(map(str, unknown))[0]}",
            f"unknown setting for {body['type']}; allowed: {', '.join(sorted(allowed)) or 'none'}",
        )
    return dict(body)
