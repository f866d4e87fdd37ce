"""Warm starts: parameter sets a study tries first (a spec's ``enqueue:``, or `sweep enqueue`).

An entry names values of the searched keys; the sampler fills in the ones it leaves out. A recipe
file (a config like `sweep train --config` takes) gives its searched keys and may hold the rest of a
config too: keys the study fixes are left out when they agree with it. Every value must lie in the
study's space, so a warm start is a point the search could have drawn itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from digitsum import config as cfg
from digitsum.config import Config
from digitsum.errors import UsageError, shown
from sweep.spec.model import Param, SpecError
from sweep.spec.reading import read_yaml

Fail = Callable[[str, str], UsageError]
# How a recipe ran, not what it trains: a warm start from a recipe file leaves these out.
RUN_KEYS = frozenset({"train.device", "train.num_threads", "train.run_name", "train.log_path"})


def enqueue_params(
    values: dict[str, Any], space: Sequence[Param], base: Config, where: str, fail: Fail, strict: bool = True
) -> dict[str, Any]:
    """The trial params of one warm start: each value checked against its dimension and its `when`.

    ``strict``: a key outside the space is an error (a parameter set); else it must agree with the
    study's fixed config (a recipe file), and is left out."""
    dimensions = {p.key: p for p in space}
    params: dict[str, Any] = {}
    for name, value in cfg.flatten(values).items():
        try:
            converted = cfg.check_value(name, value)
        except UsageError as error:
            raise fail(f"{where}{name}", str(error)) from None
        param = dimensions.get(name)
        if not strict and name in RUN_KEYS:
            continue
        if param is not None:
            params[name] = _in_dimension(param, converted, f"{where}{name}", fail)
        elif strict or cfg.canonical(name, converted) != cfg.canonical(name, cfg.as_flat(base)[name]):
            searched = ", ".join(dimensions)
            raise fail(
                f"{where}{name}",
                f"not searched by this study (fixed at {shown(cfg.as_flat(base)[name])}); "
                f"a warm start sets searched keys: {searched}",
            )
    if not params:
        raise fail(where.rstrip("."), f"sets none of the searched keys ({', '.join(dimensions)})")
    for param in space:
        if param.key in params and not param.active(params):
            needs = ", ".join(f"{k} in {list(v)}" for k, v in param.when.items())
            raise fail(f"{where}{param.key}", f"searched only when {needs}; set that too, or leave this key out")
    return params


def _in_dimension(param: Param, value: Any, where: str, fail: Fail) -> Any:
    """The value as the dimension stores it (a choice as spelled in the spec, a number of its type)."""
    if param.choices is not None:
        wanted = cfg.canonical(param.key, value)
        for choice in param.choices:
            if cfg.canonical(param.key, cfg.check_value(param.key, choice)) == wanted:
                return choice
        raise fail(where, f"{shown(value)} is not one of the searched choices {list(param.choices)}")
    number = float(value)
    on_step = (
        param.step is None or abs((number - param.low) / param.step - round((number - param.low) / param.step)) < 1e-9
    )
    if not param.low <= number <= param.high or not on_step or (param.is_int and not number.is_integer()):
        step = f" in steps of {param.step:g}" if param.step else ""
        kind = "an integer" if param.is_int else "a number"
        raise fail(
            where, f"{shown(value)} is outside the searched range: {kind} in {param.low:g}..{param.high:g}{step}"
        )
    return int(number) if param.is_int else number


def spec_enqueue(
    given: Any, space: Sequence[Param], base: Config, folder: Path | None, fail: Fail
) -> tuple[dict[str, Any], ...]:
    """A spec's ``enqueue:`` list: parameter sets, or paths of recipe files (relative to the spec)."""
    if given is None:
        return ()
    if not isinstance(given, list) or not given:
        raise fail("enqueue", "expected a list of parameter sets or recipe files, like [{model.hidden_size: 64}]")
    entries = []
    for index, entry in enumerate(given):
        where = f"enqueue[{index}]"
        if isinstance(entry, str):
            values = _recipe(Path(entry) if folder is None else folder / entry, where, fail)
            entries.append(enqueue_params(values, space, base, f"{where}.", fail, strict=False))
        elif isinstance(entry, dict) and entry:
            entries.append(enqueue_params(entry, space, base, f"{where}.", fail))
        else:
            raise fail(where, f"{shown(entry)}: expected a parameter set like {{model.hidden_size: 64}} or a file")
    return tuple(entries)


def _recipe(path: Path, where: str, fail: Fail) -> dict[str, Any]:
    if not path.is_file():
        raise fail(where, f"{path}: no such recipe file (a path relative to the spec)")
    values = read_yaml(path, SpecError)
    if not isinstance(values, dict):
        raise fail(where, f"{path}: expected a mapping of config keys, like {{model: {{hidden_size: 64}}}}")
    return values
