"""Study specs: YAML -> a validated search space, sampler, pruner and fixed config.

Every mistake is a `SpecError` whose one line names the file, the key and what is allowed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from digitsum import config as cfg
from digitsum.data import DataError, check_lengths, parse_lengths
from digitsum.errors import UsageError
from digitsum.train import Config

METRICS = ("val_exact_match", "probe_exact_match")
VALUE_FROM = ("best", "last")  # the trial's value: its best epoch, or its last
SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
}
PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "none": optuna.pruners.NopPruner,
}
TOP_KEYS = {
    "name", "description", "metric", "value", "n_trials", "timeout", "data", "fixed", "sampler", "pruner",
    "space", "keep_checkpoints", "balance",
}
DATA_KEYS = {"lengths", "val_fraction", "probe_lengths", "probe_sample", "dataset_path"}
PARAM_KEYS = {"choices", "low", "high", "log", "step", "type", "when"}


class SpecError(UsageError):
    """A bad study spec."""


@dataclass(frozen=True)
class Param:
    """One search dimension over a dotted config key."""

    key: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    is_int: bool = False
    when: dict[str, tuple] = field(default_factory=dict)  # only suggested when these keys took these values

    def active(self, chosen: dict[str, Any]) -> bool:
        return all(chosen.get(key) in values for key, values in self.when.items())

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.is_int:
            step = int(self.step) if self.step else 1
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class ProbeSpec:
    lengths: tuple[int, ...] = ()
    sample: int = 10_000  # rows per length where 10**length is more than this


@dataclass(frozen=True)
class StudySpec:
    name: str
    path: str
    description: str
    metric: str
    value_from: str
    n_trials: int
    timeout: float | None
    base: Config  # defaults + data + fixed values
    probe: ProbeSpec
    sampler: dict
    pruner: dict
    space: tuple[Param, ...]
    keep_checkpoints: str
    raw: dict
    balance: Param | None = None  # a choices parameter whose choices get equal numbers of trials

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every active parameter, in spec order, so conditions can refer to earlier keys."""
        chosen: dict[str, Any] = {}
        for param in self.space:
            if param.active(chosen):
                chosen[param.key] = param.suggest(trial)
        return chosen

    def config_for(self, params: dict[str, Any]) -> Config:
        return cfg.apply(self.base, params)

    def fingerprint(self) -> str:
        """What a stored study must match to be resumed: metric and search space."""
        shape = {key: self.raw.get(key) for key in ("metric", "value", "space", "data", "fixed", "balance")}
        return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def make_sampler(self, worker: int = 0, resumed_trials: int = 0) -> optuna.samplers.BaseSampler:
        """The spec's sampler, its seed offset per worker and per resume point (deterministically),
        so parallel workers and a resumed study do not repeat the trials already drawn."""
        kind = self.sampler["type"]
        kwargs = {k: v for k, v in self.sampler.items() if k != "type"}
        if kwargs.get("seed") is not None:
            kwargs["seed"] = (int(kwargs["seed"]) + worker + 100_003 * resumed_trials) % 2**32
        if kind == "grid":
            kwargs["search_space"] = {p.key: list(p.choices) for p in self.space}
        return SAMPLERS[kind](**kwargs)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        kind = self.pruner["type"]
        kwargs = {k: v for k, v in self.pruner.items() if k != "type"}
        if kind == "hyperband":
            kwargs.setdefault("max_resource", self.base.train.n_epochs)
        return PRUNERS[kind](**kwargs)


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such study spec; the shipped ones are in studies/*.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML ({' '.join(str(error).split())[:160]})") from None
    return parse_spec(raw, str(path))


def parse_spec(raw: Any, source: str = "<spec>") -> StudySpec:
    def fail(key: str, message: str) -> SpecError:
        return SpecError(f"{source}: {key}: {message}")

    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a study spec is a YAML mapping with name, space, ...; see studies/quickstart.yaml")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise fail(sorted(unknown)[0], f"unknown key; allowed: {', '.join(sorted(TOP_KEYS))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail("name", "required: the study's name, e.g. name: quickstart")
    metric = raw.get("metric", "val_exact_match")
    if metric not in METRICS:
        raise fail("metric", f"{metric!r} is not one of {', '.join(METRICS)}")
    value_from = raw.get("value", "best")
    if value_from not in VALUE_FROM:
        raise fail("value", f"{value_from!r} is not one of {', '.join(VALUE_FROM)} (which epoch's accuracy is the trial's value)")
    n_trials = _positive_int(raw.get("n_trials", 20), "n_trials", fail)
    timeout = raw.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise fail("timeout", f"{timeout!r}: expected seconds > 0, or leave it out for no limit")
    keep = raw.get("keep_checkpoints", "best")
    if keep not in ("best", "all"):
        raise fail("keep_checkpoints", f"{keep!r} is not one of best, all")

    base, probe = _parse_data(raw.get("data") or {}, fail)
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise fail("fixed", "expected a mapping of config keys, like {train.n_epochs: 30}")
    try:
        base = cfg.apply(base, fixed)
    except UsageError as error:
        raise fail("fixed", str(error)) from None

    space = _parse_space(raw.get("space"), fail)
    sampler = _parse_component(raw.get("sampler") or {"type": "tpe"}, "sampler", SAMPLERS, fail)
    pruner = _parse_component(raw.get("pruner") or {"type": "none"}, "pruner", PRUNERS, fail)
    if sampler["type"] == "grid":
        bad = [p.key for p in space if p.choices is None or p.when]
        if bad:
            raise fail(f"space.{bad[0]}", "the grid sampler needs every parameter as unconditional choices: [...]")
    balance = None
    if raw.get("balance") is not None:
        balance = next((p for p in space if p.key == raw["balance"]), None)
        if balance is None or balance.choices is None or balance.when:
            raise fail("balance", f"{raw['balance']!r} must be an unconditional choices parameter of space")
    if metric == "probe_exact_match" and not probe.lengths:
        raise fail("metric", "probe_exact_match needs data.probe_lengths, e.g. [5]")
    spec = StudySpec(
        name=name.strip(), path=source, description=str(raw.get("description", "")).strip(), metric=metric,
        value_from=value_from, n_trials=n_trials, timeout=float(timeout) if timeout else None, base=base,
        probe=probe, sampler=sampler, pruner=pruner, space=space, keep_checkpoints=keep, raw=raw, balance=balance,
    )
    try:  # build both once so a bad setting is a spec error now, not a crash in a worker
        spec.make_sampler()
        spec.make_pruner()
    except (TypeError, ValueError) as error:
        raise fail("sampler/pruner", " ".join(str(error).split())[:200]) from None
    return spec


def _positive_int(value: Any, key: str, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(key, f"{value!r}: expected an integer >= 1")
    return value


def _parse_data(data: Any, fail) -> tuple[Config, ProbeSpec]:
    if not isinstance(data, dict):
        raise fail("data", "expected a mapping like {lengths: [2, 3, 4], val_fraction: 0.2, probe_lengths: [5]}")
    unknown = set(data) - DATA_KEYS
    if unknown:
        raise fail(f"data.{sorted(unknown)[0]}", f"unknown key; allowed: {', '.join(sorted(DATA_KEYS))}")
    values: dict[str, Any] = {}
    try:
        if "lengths" in data:
            lengths = data["lengths"]
            text = ",".join(map(str, lengths)) if isinstance(lengths, list) else str(lengths)
            parse_lengths(text)
            values["train.lengths"] = text
        if "dataset_path" in data:
            values["train.dataset_path"] = data["dataset_path"]
        if "val_fraction" in data:
            fraction = data["val_fraction"]
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
                raise fail("data.val_fraction", f"{fraction!r}: expected a number between 0 and 1, e.g. 0.2")
            values["train.train_split_fraction"] = round(1.0 - fraction, 10)
        probe_lengths = data.get("probe_lengths", [])
        if isinstance(probe_lengths, int):
            probe_lengths = [probe_lengths]
        if not isinstance(probe_lengths, list) or not all(isinstance(n, int) for n in probe_lengths):
            raise fail("data.probe_lengths", f"{probe_lengths!r}: expected a list of lengths, e.g. [5, 6]")
        probe = ProbeSpec(tuple(check_lengths(probe_lengths)) if probe_lengths else (), data.get("probe_sample", 10_000))
        if isinstance(probe.sample, bool) or not isinstance(probe.sample, int) or probe.sample < 1:
            raise fail("data.probe_sample", f"{probe.sample!r}: expected an integer >= 1")
        return cfg.apply(Config(), values), probe
    except (DataError, UsageError) as error:
        if isinstance(error, SpecError):
            raise
        raise fail("data", str(error)) from None


def _parse_space(space: Any, fail) -> tuple[Param, ...]:
    if not isinstance(space, dict) or not space:
        raise fail("space", "required: a mapping of config keys to {choices: [...]} or {low: .., high: ..}")
    params: list[Param] = []
    seen: dict[str, Param] = {}
    for key, body in space.items():
        where = f"space.{key}"
        try:
            field_type = cfg.check_key(key).replace(" | None", "")
        except UsageError as error:
            raise fail(where, str(error)) from None
        if not isinstance(body, dict):
            raise fail(where, "expected {choices: [...]} or {low: .., high: .., log: .., step: ..}")
        unknown = set(body) - PARAM_KEYS
        if unknown:
            raise fail(f"{where}.{sorted(unknown)[0]}", f"unknown key; allowed: {', '.join(sorted(PARAM_KEYS))}")
        when = _parse_when(body.get("when"), seen, where, fail)
        if "choices" in body:
            choices = body["choices"]
            if not isinstance(choices, list) or not choices:
                raise fail(f"{where}.choices", "expected a non-empty list")
            for choice in choices:
                _check(key, choice, where, fail)
            if set(body) - {"choices", "when", "type"}:
                raise fail(where, "give either choices or low/high, not both")
            param = Param(key, choices=tuple(choices), when=when)
        else:
            param = _parse_range(key, field_type, body, when, where, fail)
        params.append(param)
        seen[key] = param
    return tuple(params)


def _parse_when(when: Any, seen: dict[str, Param], where: str, fail) -> dict[str, tuple]:
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        raise fail(f"{where}.when", "expected a mapping like {model.model_type: [lstm, gru]}")
    parsed = {}
    for key, values in when.items():
        values = tuple(values) if isinstance(values, list) else (values,)
        earlier = seen.get(key)
        if earlier is None or earlier.choices is None:
            raise fail(f"{where}.when", f"{key!r} must be a choices parameter listed earlier in space")
        stray = [v for v in values if v not in earlier.choices]
        if stray:
            raise fail(f"{where}.when", f"{stray[0]!r} is not one of {key}'s choices {list(earlier.choices)}")
        parsed[key] = values
    return parsed


def _parse_range(key: str, field_type: str, body: dict, when: dict, where: str, fail) -> Param:
    if "low" not in body or "high" not in body:
        raise fail(where, "a range needs low and high (or give choices: [...])")
    low, high = body["low"], body["high"]
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail(f"{where}.{name}", f"{value!r}: expected a number")
    if field_type not in ("int", "float"):
        raise fail(where, f"{key} is not numeric; use choices: [...]")
    declared = body.get("type", field_type)
    if declared not in ("int", "float") or (declared == "float" and field_type == "int"):
        raise fail(f"{where}.type", f"{declared!r}: {key} takes {field_type} values")
    is_int = declared == "int"
    if is_int and not (float(low).is_integer() and float(high).is_integer()):
        raise fail(where, f"low and high must be integers for {key}")
    if low > high:
        raise fail(where, f"low {low} > high {high}; swap them")
    log = body.get("log", False)
    if not isinstance(log, bool):
        raise fail(f"{where}.log", f"{log!r}: expected true or false")
    if log and low <= 0:
        raise fail(where, f"log scale needs low > 0 (got {low})")
    step = body.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise fail(f"{where}.step", f"{step!r}: expected a number > 0")
        if log:
            raise fail(where, "step and log cannot be combined (Optuna does not support it)")
    for value in (low, high):
        _check(key, int(value) if is_int else float(value), where, fail)
    return Param(key, low=low, high=high, log=log, step=step, is_int=is_int, when=when)


def _check(key: str, value: Any, where: str, fail) -> None:
    try:
        cfg.check_value(key, value)
    except UsageError as error:
        raise fail(where, str(error)) from None


def _parse_component(body: Any, what: str, kinds: dict, fail) -> dict:
    if isinstance(body, str):
        body = {"type": body}
    if not isinstance(body, dict) or body.get("type") not in kinds:
        kind = body.get("type") if isinstance(body, dict) else body
        raise fail(f"{what}.type", f"{kind!r} is not one of {', '.join(kinds)}")
    allowed = set(inspect.signature(kinds[body["type"]]).parameters) - {"search_space"}
    unknown = set(body) - allowed - {"type"}
    if unknown:
        raise fail(f"{what}.{sorted(unknown)[0]}", f"unknown setting for {body['type']}; allowed: {', '.join(sorted(allowed)) or 'none'}")
    return dict(body)
