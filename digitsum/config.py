"""The config: every key declared once (type, default, allowed values, help), and dotted overrides.

`sweep train` overrides (``model.hidden_size=64``), `--config` files and study specs all go
through here, so every key has one type, one range and one error message. To add a config key,
add a field with `key(...)` to `ModelConfig` or `TrainConfig`: its checks, its `sweep keys` line
and the table in docs/keys.md follow from that field. Imports no torch, so the CLI can check a config
(or a study spec) at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

from digitsum.errors import ConfigError, DataError, shown
from digitsum.keys import (
    Rule,
    between,
    canonical_of,
    did_you_mean,
    help_of,
    key,
    member_of,
    one_of,
    rule_of,
    unwrap_optional,
    within,
)
from digitsum.lengths import lengths_text, parse_lengths

MODEL_TYPES = ("rnn", "lstm", "gru", "lrnn")
NONLINEARITIES = ("tanh", "relu")
RECURRENT_INITS = ("default", "orthogonal", "identity")
LR_SCHEDULES = ("constant", "cosine")


def _lengths_ok(value: str) -> bool:
    try:
        parse_lengths(value)
        return True
    except DataError:
        return False


_LENGTHS = Rule(_lengths_ok, "input lengths like 2-4, 5 or 2,4,6 (1 to 10,000)")
# [0-9], not \d: \d takes other scripts' digits, which torch does not
DEVICE_RULE = Rule(
    lambda v: bool(re.fullmatch(r"auto|cpu|mps|cuda(:(0|[1-9][0-9]{0,2}))?", v)),  # as torch spells them
    "auto, cpu, cuda, cuda:N or mps",
    ("auto", "cpu", "cuda", "mps"),
)
_NAME = Rule(lambda v: bool(re.fullmatch(r"[\w.-]+", v)), "letters, digits, '.', '_' or '-'")


@dataclass(frozen=True)
class ModelConfig:
    model_type: str = key(
        "lstm",
        "the recurrent cell; lrnn: a linear RNN, one learned matrix per input (digitsum.lrnn)",
        one_of(MODEL_TYPES),
    )
    hidden_size: int = key(128, "units per recurrent layer", between(1, 16384))
    num_layers: int = key(1, "stacked recurrent layers", between(1, 64))
    dropout: float = key(
        0.0, "dropout between recurrent layers and before the head", within(0, 1, open_high=True), member=True
    )
    embedding_dim: int = key(
        16, "token embedding size; 0 feeds one-hot tokens, as the tutorial did", between(0, 4096, " (0: one-hot input)")
    )
    head_size: int = key(
        0, "units of a ReLU layer between the recurrent outputs and the logits; 0: a linear head", between(0, 16384)
    )
    nonlinearity: str = key(
        "tanh",
        "the plain RNN's activation (rnn only); relu with recurrent_init=identity is an IRNN",
        one_of(NONLINEARITIES),
    )
    recurrent_init: str = key(
        "default",
        "recurrent weights at initialization: torch's default (uniform), orthogonal, or identity (per gate)",
        one_of(RECURRENT_INITS),
    )
    forget_bias: float = key(
        0.0,
        "added at initialization to the LSTM forget gate's and the GRU update gate's bias; > 0 keeps more state",
        within(-10, 10, note=", e.g. 1"),
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    dataset_path: str | None = key(
        None,
        "headerless x,y CSV to train on; none generates every string of lengths",
        Rule(bool, "a CSV path, or none to generate the data"),
    )
    lengths: str = key(
        "2-4",
        "input lengths generated when dataset_path is none",
        _LENGTHS,
        canonical=lambda v: lengths_text(parse_lengths(v)),
    )
    n_epochs: int = key(40, "training epochs", between(1, 100_000))
    learning_rate: float = key(
        3e-3, "AdamW's peak learning rate", within(0, 10, open_low=True, note=", e.g. 0.003"), member=True
    )
    train_split_fraction: float = key(
        0.8,
        "share of rows in training; the rest is validation (stratified)",
        Rule(lambda v: 0.0 < v < 1.0, "a number between 0 and 1, exclusive (e.g. 0.8)"),
    )
    batch_size: int = key(64, "rows per training step", between(1, 2**20))
    weight_decay: float = key(
        0.0, "AdamW's weight decay", Rule(lambda v: 0.0 <= v < 1e3, "a number >= 0 (e.g. 0.0001)"), member=True
    )
    grad_clip: float = key(
        1.0, "max gradient norm; 0 turns clipping off", within(0, 1e6, note=" (0: no clipping)"), member=True
    )
    # cosine decay to 1% stops the late-training swings of a constant rate
    lr_schedule: str = key("cosine", "learning-rate schedule over all steps", one_of(LR_SCHEDULES), member=True)
    balance_lengths: bool = key(
        False, "draw every input length equally often", Rule(lambda v: True, "true or false"), member=True
    )
    answer_balance: float = key(
        0.0,
        "weigh each row by 1 / count(its sum) ^ answer_balance; 1: every sum equally often",
        within(0, 1, note=" (0: off, 1: every sum equally often)"),
        member=True,
    )
    sum_state_weight: float = key(
        0.0,
        "pull the hidden states of equal running sums together (length generalization)",
        within(0, 1000, note=" (0: off; 1-5 helped length generalization)"),
        member=True,
    )
    state_noise: float = key(
        0.0,
        "std of Gaussian noise added to the recurrent state at every training step; 0: off",
        within(0, 10, note=" (0: off; 0.01-0.05 were tried)"),
        member=True,
    )
    curriculum: float = key(
        0.0,
        "share of the epochs over which training grows from the shortest input length to all of them; 0: off",
        within(0, 1, note=" (0: off; 0.3: one more length every 30%/L of the epochs, for L lengths)"),
    )
    # A counter's validation exact match reaches 100% long before it counts far, so the first best epoch
    # is an early one; its last epoch counts further (docs/results.md: Counting far)
    keep_epoch: str = key(
        "best",
        "the epoch whose model a run keeps (best.pt, a trial's checkpoint and value): best, the first with the "
        "best validation exact match; or last",
        one_of(("best", "last")),
        member=True,
    )
    fused: bool = key(
        True,
        "the fused C++ CPU step for one-layer LSTMs and GRUs where it applies",
        Rule(lambda v: True, "true or false"),
    )
    seed: int = key(
        0,
        "seeds initialization, the split and the batch order",
        Rule(lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)"),
        member=True,
    )
    n_seeds: int = key(
        1,
        "models trained at once, with seeds seed, seed+1, ...: each the model a run with that seed trains, "
        "in one stacked computation (sweep train; in a spec's fixed, every trial: see seed_aggregate)",
        between(1, 64),
    )
    device: str = key("auto", "where to train: auto picks CUDA, then MPS, then the CPU", DEVICE_RULE)
    num_threads: int = key(0, "torch threads; 0 leaves torch's default", between(0, 1024, " (0: torch's default)"))
    run_name: str = key("run", "the run's folder under log_path (sweep train)", _NAME)
    log_path: str = key("runs", "where sweep train writes its run folders", Rule(bool, "a folder path"))


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {"model": asdict(self.model), "train": asdict(self.train)}


SECTIONS: dict[str, type] = {"model": ModelConfig, "train": TrainConfig}


# ---------------------------------------------------------------------------------------------
# The schema, read off the dataclasses


@dataclass(frozen=True)
class Key:
    """One dotted config key, as declared on its dataclass field."""

    name: str  # "model.hidden_size"
    type: type  # int, float, bool or str
    optional: bool  # None is allowed
    default: Any
    help: str
    rule: Rule
    field: dataclasses.Field
    member: bool  # models trained as one computation may differ in it (digitsum.members)

    @property
    def type_name(self) -> str:
        return self.type.__name__ + (" | None" if self.optional else "")


@functools.cache
def schema() -> dict[str, Key]:
    """Every config key, in declaration order."""
    keys = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            base, optional = unwrap_optional(hints[f.name])
            name = f"{section}.{f.name}"
            keys[name] = Key(name, base, optional, f.default, help_of(f), rule_of(f), f, member_of(f))
    return keys


def known_keys() -> list[str]:
    return list(schema())


def check_key(name: str) -> Key:
    """The key's declaration; ConfigError (with the closest known key) for an unknown key."""
    keys = schema()
    if not isinstance(name, str) or name not in keys:  # a YAML key can be a number, or null
        text = str(name)
        close = difflib.get_close_matches(text, keys, n=1) or [k for k in keys if k.endswith("." + text)]
        hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(keys)}"
        raise ConfigError(f"unknown config key {shown(name)}; {hint}")
    return keys[name]


def check_value(name: str, value: Any) -> Any:
    """Convert and range-check one value for a dotted key; ConfigError naming the key."""
    spec = check_key(name)
    converted = convert(value, spec.type, spec.optional)
    if converted is None and spec.optional:
        return None
    if converted is None or not spec.rule.check(converted):
        raise ConfigError(f"{name}={shown(value)}: expected {spec.rule.allowed}{did_you_mean(value, spec.rule)}")
    return converted


_NONE = ("none", "null", "")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


def convert(value: Any, to: type, optional: bool = False) -> Any:
    """A command-line string or a YAML/JSON value as ``to``; None where it cannot be one."""
    text = value.strip() if isinstance(value, str) else None
    if optional and (value is None or (text is not None and text.lower() in _NONE)):
        return None
    try:
        if to is bool:
            if isinstance(value, bool):
                return value
            lowered = text.lower() if text is not None else None
            return True if lowered in _TRUE else False if lowered in _FALSE else None
        if isinstance(value, bool) or value is None:
            return None
        if to is int:
            if isinstance(value, float) and not value.is_integer():
                return None
            return int(text) if text is not None else int(value)
        if to is float:
            return float(text) if text is not None else float(value)
        if to is str:
            return str(value) if isinstance(value, (str, int, float)) else None
    except (TypeError, ValueError):
        return None
    raise TypeError(f"no conversion to {to}")  # a field type this module does not know: a bug


def canonical(name: str, value: Any) -> Any:
    """One spelling for equivalent values (lengths ``2-4`` and ``2,3,4``), for fingerprints."""
    return canonical_of(check_key(name).field, value)


# ---------------------------------------------------------------------------------------------
# Dotted overrides


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"hidden_size": 64}} -> {"model.hidden_size": 64}; dotted keys pass through."""
    flat: dict[str, Any] = {}
    for name, value in mapping.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def apply(config: Config, values: dict[str, Any]) -> Config:
    """A new Config with the dotted ``values`` set (each checked)."""
    sections: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for name, value in flatten(values).items():
        converted = check_value(name, value)
        section, field_name = name.split(".", 1)
        sections[section][field_name] = converted
    model = dataclasses.replace(config.model, **sections["model"])
    check_model(model)
    return Config(model=model, train=dataclasses.replace(config.train, **sections["train"]))


def check_model(model: ModelConfig) -> None:
    """Keys that do not apply to this model type: one clear line instead of a silent no-op."""
    kind = model.model_type
    if model.nonlinearity != "tanh" and kind != "rnn":
        raise ConfigError(f"model.nonlinearity={model.nonlinearity} applies to model.model_type=rnn only")
    if model.forget_bias and kind not in ("lstm", "gru"):
        raise ConfigError(f"model.forget_bias applies to model.model_type=lstm or gru, not {kind}; leave it at 0")
    if kind != "lrnn":
        return
    if model.head_size == 0:
        raise ConfigError("model.model_type=lrnn is linear up to its head: give it model.head_size > 0, e.g. 128")
    if model.num_layers != 1:
        raise ConfigError("model.model_type=lrnn has one layer (stacked linear maps are one); use model.num_layers=1")
    if model.recurrent_init != "default":
        raise ConfigError(
            "model.recurrent_init applies to rnn, lstm and gru; an lrnn's transitions start as the identity"
        )


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["model.hidden_size=64", ...]`` -> {"model.hidden_size": "64"}."""
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{shown(item)}: write overrides as key=value, like model.hidden_size=64")
        values[name.strip()] = value
    return values


def from_dict(values: dict[str, Any]) -> Config:
    return apply(Config(), values)


def as_flat(config: Config) -> dict[str, Any]:
    """{"model.hidden_size": 128, ...}: every key of a config, dotted."""
    return flatten(config.to_dict())


def changed_keys(config: Config) -> dict[str, Any]:
    """The keys that differ from the defaults, in canonical spelling."""
    defaults = as_flat(Config())
    return {
        name: canonical(name, value)
        for name, value in as_flat(config).items()
        if canonical(name, value) != canonical(name, defaults[name])
    }
