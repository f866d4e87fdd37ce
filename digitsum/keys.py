"""Declaring a key once: its default, the values it allows and its help, on the dataclass field.

`ModelConfig` and `TrainConfig` (and the sweep layer's study spec) declare every field with `key`;
validation, error messages, `sweep keys` and the key tables of docs/keys.md all read this metadata.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """What values a key allows: a check on the converted value, and the words for it."""

    check: Callable[[Any], bool]
    allowed: str  # completes "expected ...", e.g. "an integer >= 1"
    choices: tuple[Any, ...] = ()  # for "did you mean ...?"


ANY = Rule(lambda value: True, "")


def between(low: int, high: int, note: str = "") -> Rule:
    """A whole number from ``low`` to ``high``: the top keeps a slip (hidden_size=1000000) from a crash
    or a run that never ends."""
    return Rule(lambda v: low <= v <= high, f"an integer from {low} to {high}{note}")


def within(low: float, high: float, *, open_low: bool = False, open_high: bool = False, note: str = "") -> Rule:
    """A number in an interval; the words use interval notation, e.g. "a number in (0, 10]"."""

    def check(v: float) -> bool:
        above = v > low if open_low else v >= low
        below = v < high if open_high else v <= high
        return above and below

    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    return Rule(check, f"a number in {interval}{note}")


def one_of(choices: Sequence[Any]) -> Rule:
    return Rule(lambda v: v in choices, f"one of {', '.join(map(str, choices))}", tuple(choices))


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``int | None`` -> (int, True); ``int`` -> (int, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def key(
    default: Any,
    help: str,
    rule: Rule = ANY,
    canonical: Callable[[Any], Any] | None = None,
    parse: Callable[[Any], Any] | None = None,
    member: bool = False,
) -> Any:
    """A dataclass field with its rule and help.

    ``canonical`` maps equivalent spellings to one value (lengths ``2-4`` and ``2,3,4``);
    ``parse`` turns a raw value of a type other than the annotation into one (None: not valid);
    ``member``: models trained as one computation may differ in it (`digitsum.members`).
    """
    metadata = {"rule": rule, "help": help, "canonical": canonical, "parse": parse, "member": member}
    return dataclasses.field(default=default, metadata=metadata)


def did_you_mean(value: Any, rule: Rule) -> str:
    """ "; did you mean lstm?" for a near miss among the rule's choices, else ""."""
    if not isinstance(value, str) or not rule.choices:
        return ""
    names = [str(c) for c in rule.choices]
    close = difflib.get_close_matches(value.strip(), names, n=1) or [
        n for n in names if n.lower() == value.strip().lower()
    ]
    return f"; did you mean {close[0]}?" if close else ""


def show(value: Any) -> str:
    """A default as users write it: none, true, "", [5, 6]."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return '""'
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def rule_of(field: dataclasses.Field) -> Rule:
    rule = field.metadata.get("rule", ANY)
    assert isinstance(rule, Rule)
    return rule


def member_of(field: dataclasses.Field) -> bool:
    return bool(field.metadata.get("member", False))


def help_of(field: dataclasses.Field) -> str:
    return str(field.metadata.get("help", ""))


def parse_of(field: dataclasses.Field) -> Callable[[Any], Any] | None:
    parse = field.metadata.get("parse")
    return parse if callable(parse) else None


def canonical_of(field: dataclasses.Field, value: Any) -> Any:
    canonical = field.metadata.get("canonical")
    return canonical(value) if canonical is not None and value is not None else value
