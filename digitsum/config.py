"""Dotted config keys (``model.hidden_size=64``): parse, type-check and range-check them.

`sweep train` overrides, `--config` files and study-spec search spaces all go through here, so
every key has one type, one range and one error message.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Callable

from digitsum.data import DataError, parse_lengths
from digitsum.errors import ConfigError
from digitsum.model import MODEL_TYPES, ModelConfig
from digitsum.train import LR_SCHEDULES, Config, TrainConfig


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _lengths_ok(value: str) -> bool:
    try:
        parse_lengths(value)
        return True
    except DataError:
        return False


# key -> (check, what is allowed)
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model.model_type": (lambda v: v in MODEL_TYPES, f"one of {', '.join(MODEL_TYPES)}"),
    "model.hidden_size": (lambda v: v >= 1, "an integer >= 1"),
    "model.num_layers": (lambda v: v >= 1, "an integer >= 1"),
    "model.dropout": (lambda v: 0.0 <= v < 1.0, "a number in [0, 1)"),
    "model.embedding_dim": (lambda v: v >= 0, "an integer >= 0 (0: one-hot input)"),
    "train.lengths": (_lengths_ok, "input lengths like 2-4, 5 or 2,4,6 (1 to 18)"),
    "train.n_epochs": (lambda v: v >= 1, "an integer >= 1"),
    "train.learning_rate": (lambda v: 0.0 < v <= 10.0, "a number in (0, 10], e.g. 0.003"),
    "train.train_split_fraction": (lambda v: 0.0 < v < 1.0, "a number between 0 and 1, exclusive (e.g. 0.8)"),
    "train.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "train.seed": (lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)"),
    "train.weight_decay": (lambda v: 0.0 <= v < 1e3, "a number >= 0 (e.g. 0.0001)"),
    "train.grad_clip": (lambda v: v >= 0.0, "a number >= 0 (0: no clipping)"),
    "train.answer_balance": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1] (0: off, 1: every sum equally often)"),
    "train.sum_state_weight": (lambda v: v >= 0.0, "a number >= 0 (0: off; 1 helped length generalization)"),
    "train.fused": (lambda v: isinstance(v, bool), "true or false"),
    "train.lr_schedule": (lambda v: v in LR_SCHEDULES, f"one of {', '.join(LR_SCHEDULES)}"),
    "train.device": (lambda v: bool(_DEVICE.fullmatch(v)), "auto, cpu, cuda, cuda:N or mps"),
    "train.num_threads": (lambda v: v >= 0, "an integer >= 0 (0: torch's default)"),
    "train.run_name": (lambda v: bool(re.fullmatch(r"[\w.-]+", v)), "letters, digits, '.', '_' or '-'"),
    "train.log_path": (lambda v: bool(v), "a folder path"),
    "train.dataset_path": (lambda v: v is None or bool(v), "a CSV path, or none to generate the data"),
}


def _field_types() -> dict[str, type]:
    types = {}
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        for f in dataclasses.fields(cls):
            types[f"{section}.{f.name}"] = f.type
    return types


def known_keys() -> list[str]:
    return list(_field_types())


def _convert(key: str, value: Any, type_name: str) -> Any:
    """Convert a string (from the command line) or a YAML/JSON value to the key's type."""
    text = value.strip() if isinstance(value, str) else None
    optional = "None" in type_name
    if optional and (value is None or (text is not None and text.lower() in ("none", "null", ""))):
        return None
    base = type_name.replace(" | None", "")
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if text is not None and text.lower() in ("true", "yes", "1", "on"):
                return True
            if text is not None and text.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if base == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(text) if text is not None else int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(text) if text is not None else float(value)
        if base == "str":
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{key}={value!r}: expected {_RULES.get(key, (None, base))[1]}")


def check_key(key: str) -> str:
    """The key's type name; raises ConfigError (with the closest known key) for an unknown key."""
    types = _field_types()
    if key not in types:
        close = difflib.get_close_matches(key, types, n=1) or [k for k in types if k.endswith("." + key)]
        hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(types)}"
        raise ConfigError(f"unknown config key {key!r}; {hint}")
    return str(types[key])


def check_value(key: str, value: Any) -> Any:
    """Convert and range-check one value for a dotted key; raises ConfigError naming the key."""
    converted = _convert(key, value, str(check_key(key)))
    check, allowed = _RULES.get(key, (lambda v: True, ""))
    if converted is not None and not check(converted) or converted is None and key != "train.dataset_path":
        raise ConfigError(f"{key}={value!r}: expected {allowed}")
    return converted


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"hidden_size": 64}} -> {"model.hidden_size": 64}; dotted keys pass through."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def apply(config: Config, values: dict[str, Any]) -> Config:
    """A new Config with the dotted ``values`` set (each checked)."""
    sections = {"model": {}, "train": {}}
    for key, value in flatten(values).items():
        converted = check_value(key, value)
        section, name = key.split(".", 1)
        sections[section][name] = converted
    return Config(
        model=dataclasses.replace(config.model, **sections["model"]),
        train=dataclasses.replace(config.train, **sections["train"]),
    )


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["model.hidden_size=64", ...]`` -> {"model.hidden_size": "64"}."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{item!r}: write overrides as key=value, like model.hidden_size=64")
        values[key.strip()] = value
    return values


def from_dict(values: dict[str, Any]) -> Config:
    return apply(Config(), values)
