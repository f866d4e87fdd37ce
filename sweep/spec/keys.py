"""The study spec's keys, each declared once (default, help, rule): the parser, its error messages
and `sweep keys` read these fields."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from digitsum.errors import shown
from digitsum.keys import Rule, between, did_you_mean, key, one_of, parse_of, rule_of, unwrap_optional
from digitsum.lengths import PROBE_SAMPLE, lengths_text
from sweep.spec.components import PRUNERS, SAMPLERS
from sweep.spec.model import METRICS, SEED_AGGREGATES, VALUE_FROM, Keep, SpecError
from sweep.spec.names import STUDY_NAME_RULE, is_study_name
from sweep.spec.objectives import Direction, Metric


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


def _mapping(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _nonempty_list(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) and value else None


TENSORBOARD_FOLDER = "runs/tensorboard"  # `tensorboard: true` writes each study's trial runs under here


def _tensorboard(value: Any) -> bool | str | None:
    """true -> the default folder, a folder -> itself, false -> off (False); None where it is none of these."""
    if isinstance(value, bool):
        return TENSORBOARD_FOLDER if value else False
    return value.strip() if isinstance(value, str) and value.strip() else None


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
        parse=_nonempty_list,
    )
    constraints: dict[str, Any] | None = key(
        None,
        "bounds a feasible trial meets, e.g. {n_parameters: {max: 20000}, val_exact_match: {min: 0.99}}",
        parse=_mapping,
    )
    value: str = key(
        "best", "which epoch's metric is the trial's value: the best by validation, or the last", one_of(VALUE_FROM)
    )
    seed_aggregate: str = key(
        "mean",
        "with fixed train.n_seeds K > 1 (every trial trains K seeds at once): its value over them, reported "
        "every epoch and at the end: the mean, or min (the worst seed)",
        one_of(SEED_AGGREGATES),
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
    tensorboard: bool | str = key(
        False,
        f"TensorBoard event files, one run per trial (trial-NNNNN-MODEL-PARAMS): true writes them under "
        f"{TENSORBOARD_FOLDER}/STUDY/, a folder under FOLDER/STUDY/; --tensorboard DIR does the same. "
        "Not part of the search: a study resumes with it on or off",
        Rule(lambda v: True, "true, false or a folder"),
        parse=_tensorboard,
    )
    stack: int = key(
        1,
        "trials a worker trains at once, as one computation: those that share the model's shape and the batch "
        "plan stack, each reporting and pruned on its own; --stack overrides it. Not part of the search",
        between(1, 64),
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
    pruner: Any = key(
        "none",
        f"Optuna pruner: a type ({', '.join(PRUNERS)}) or {{type: .., its settings}}; "
        "patient wraps another: {type: patient, patience: 3, wrapped: {type: median}}",
    )
    enqueue: list[Any] | None = key(
        None,
        "warm starts the study tries first: parameter sets like {model.hidden_size: 64}, or recipe files "
        "(their searched keys; a path relative to the spec); a resumed study does not queue them twice",
        parse=_nonempty_list,
    )
    stop: dict[str, Any] | None = key(
        None,
        "end the search when it stops improving (see stop.*), e.g. {patience: 30, min_delta: 0.0005}",
        parse=_mapping,
    )
    pbt: dict[str, Any] | None = key(
        None,
        "population-based training (see pbt.*): the population trains as one computation, and every interval "
        "its worst members take the weights of its best and change their hyperparameters within space",
        parse=_mapping,
    )


def _pair(value: Any) -> tuple[float, float] | None:
    ok = isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
    return (float(value[0]), float(value[1])) if ok and not any(isinstance(v, bool) for v in value) else None


@dataclass(frozen=True)
class PBTKeys:
    """``pbt:``, population-based training (sweep.run.pbt)."""

    population: int | None = key(
        None, "members trained at once, one trial each; n_trials must equal it (required)", between(2, 256)
    )
    interval: int | None = key(None, "epochs between two exploit steps (required)", between(1, 100_000))
    quantile: float = key(
        0.25, "the share of members at the bottom that copy one at the top", Rule(lambda v: 0 < v <= 0.5, "in (0, 0.5]")
    )
    perturb: tuple[float, float] = key(
        (0.8, 1.25),
        "the factors a copied member's numeric hyperparameters are multiplied by, one drawn per key",
        Rule(lambda v: all(f > 0 for f in v), "two factors > 0, like [0.8, 1.25]"),
        parse=_pair,
    )
    resample: float = key(
        0.25, "the chance a hyperparameter is drawn anew from space instead", Rule(lambda v: 0 <= v <= 1, "in [0, 1]")
    )
    seed: int = key(0, "seeds the exploit and explore draws", between(0, 2**31 - 1))


@dataclass(frozen=True)
class StopKeys:
    """``stop:``, the rule that ends a search that stopped improving."""

    patience: int | None = key(
        None,
        "no new trial starts once this many finished trials in a row brought no gain (required)",
        between(1, 1_000_000),
    )
    min_delta: float = key(
        0.0,
        "the smallest gain that counts: in the value (one objective), or as a share of the Pareto front's "
        "hypervolume (several)",
        Rule(lambda v: 0 <= v < 1e6, "a number >= 0, e.g. 0.0005"),
    )


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
        "unseen input lengths, e.g. [5, 6]: scored at the best epoch, and every epoch where a probe metric or "
        "TensorBoard needs it",
        Rule(lambda v: True, "a list of lengths, e.g. [5, 6]"),
        parse=_probe_lengths,
    )
    probe_sample: int = key(
        PROBE_SAMPLE, "probe rows per length where there are more strings (a seeded sample)", between(1, 1_000_000)
    )
    probe_in_range: bool = key(
        False,
        "draw the probe among the strings whose sum occurs in training (uniformly; long lengths need it)",
        Rule(lambda v: isinstance(v, bool), "true or false"),
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


SPEC_SECTIONS = {
    "data",
    "fixed",
    "space",
    "sampler",
    "pruner",
    "objectives",
    "constraints",
    "enqueue",
    "stop",
    "pbt",
}  # parsed on their own


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
