"""YAML -> a validated `StudySpec`: every mistake is a `SpecError` whose one line names the file,
the key and what is allowed."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from digitsum import config as cfg
from digitsum.config import Config
from digitsum.errors import DataError, UsageError, shown
from digitsum.lengths import PROBE_SAMPLE, Probe, check_lengths, parse_lengths
from sweep.spec.components import PRUNERS, SAMPLERS, WRAPPED, Component
from sweep.spec.enqueue import spec_enqueue
from sweep.spec.keys import ConstraintKeys, DataKeys, ObjectiveKeys, ParamKeys, SpecKeys, StopKeys, read_keys
from sweep.spec.model import Keep, Param, SeedAggregate, SpecError, StopRule, StudySpec, ValueFrom
from sweep.spec.objectives import Constraint, Direction, Metric, Objective, reports_per_epoch
from sweep.spec.pbt import parse_pbt


def parse_spec(raw: Any, source: str = "<spec>", folder: Path | None = None) -> StudySpec:
    """A validated spec; ``folder`` is where its relative paths (enqueued recipe files) start."""

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
    if any(p.key == "train.n_seeds" for p in space):
        raise fail("space.train.n_seeds", "every trial trains the same number of seeds: give it in fixed")
    _check_probe_is_unseen(base, probe, space, fail)
    sampler = _parse_component(raw.get("sampler") or "tpe", "sampler", SAMPLERS, fail)
    pruner = _parse_component(raw.get("pruner") or "none", "pruner", PRUNERS, fail)
    objectives = _parse_objectives(raw, fail)
    constraints = _parse_constraints(raw.get("constraints"), fail)
    balance = _check_combinations(top, space, sampler, probe, objectives, pruner, fail)
    _check_probe_metrics(top, probe, objectives, constraints, fail)
    enqueue = spec_enqueue(raw.get("enqueue"), space, base, folder, fail)
    stop = _parse_stop(raw.get("stop"), fail)
    pbt = parse_pbt(raw.get("pbt"), top["n_trials"], space, base, pruner, len(objectives) > 1, fail)
    spec = StudySpec(
        **_top_level(top, source),
        base=base,
        probe=probe,
        sampler=sampler,
        pruner=pruner,
        space=space,
        raw=raw,
        balance=balance,
        objectives=objectives,
        constraints=constraints,
        enqueue=enqueue,
        stop=stop,
        pbt=pbt,
    )
    _check_builds(spec, fail)
    return spec


def _top_level(top: dict[str, Any], source: str) -> dict[str, Any]:
    """The StudySpec fields read straight off the spec's top-level keys."""
    return {
        "name": top["name"].strip(),
        "path": source,
        "description": top["description"].strip(),
        "metric": Metric(top["metric"]),
        "value_from": ValueFrom(top["value"]),
        "seed_aggregate": SeedAggregate(top["seed_aggregate"]),
        "n_trials": top["n_trials"],
        "timeout": top["timeout"],
        "keep_checkpoints": Keep(top["keep_checkpoints"]),
        "tensorboard": top["tensorboard"] or None,
        "target": top["target"],
        "stack": top["stack"],
    }


def _check_builds(spec: StudySpec, fail: Callable[[str, str], SpecError]) -> None:
    """Build the sampler and the pruner once, so a bad setting is a spec error now, not a crash in a worker."""
    try:
        spec.make_sampler()
        spec.make_pruner()
    except Exception as error:  # Optuna's and numpy's checks of the settings raise many kinds
        raise fail("sampler/pruner", " ".join(str(error).split())[:200]) from None


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
    if sampler["type"] == "bruteforce":
        bad = [p.key for p in space if p.choices is None and not p.is_int and p.step is None]
        if bad:
            raise fail(f"space.{bad[0]}", "the bruteforce sampler tries every value: give a float range a step")
    if objectives and not reports_per_epoch(objectives) and pruner["type"] not in ("median", "none"):
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


def _parse_stop(given: Any, fail: Callable[[str, str], SpecError]) -> StopRule | None:
    if given is None:
        return None
    if not isinstance(given, dict):
        raise fail("stop", f"{shown(given)}: expected {{patience: 30, min_delta: 0.0005}}")
    values = read_keys(StopKeys, given, "stop.", fail)
    if values.get("patience") is None:
        raise fail("stop.patience", "required: finished trials without a gain before the search ends, e.g. 30")
    return StopRule(values["patience"], values.get("min_delta", 0.0))


def _parse_constraints(given: Any, fail: Callable[[str, str], SpecError]) -> tuple[Constraint, ...]:
    if given is None:
        return ()
    if not isinstance(given, dict):
        raise fail("constraints", f"{shown(given)}: expected bounds by metric, like {{n_parameters: {{max: 20000}}}}")
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
        probe = Probe(
            tuple(check_lengths(list(lengths))) if lengths else (),
            given.get("probe_sample", PROBE_SAMPLE),
            given.get("probe_in_range", False),
        )
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
    body: Any, what: str, kinds: dict[str, Component], fail: Callable[[str, str], SpecError]
) -> dict[str, Any]:
    if isinstance(body, str):
        body = {"type": body}
    kind = body.get("type") if isinstance(body, dict) else body
    if not isinstance(body, dict) or not isinstance(kind, str) or kind not in kinds:
        close = difflib.get_close_matches(str(kind), kinds, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise fail(f"{what}.type", f"{shown(kind)} is not one of {', '.join(kinds)}{hint}")
    allowed = set(kinds[kind].settings) | ({WRAPPED} if kind == "patient" else set())
    unknown = set(body) - allowed - {"type"}
    if unknown:
        raise fail(
            f"{what}.{sorted(map(str, unknown))[0]}",
            f"unknown setting for {kind}; allowed: {', '.join(sorted(allowed)) or 'none'}",
        )
    parsed = dict(body)
    if parsed.get(WRAPPED) is not None:  # patient waits, then asks the pruner it wraps
        parsed[WRAPPED] = _parse_component(parsed[WRAPPED], f"{what}.{WRAPPED}", kinds, fail)
    return parsed
