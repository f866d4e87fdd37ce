"""The reference of every config key and study-spec key, made from their declarations.

`sweep keys` prints it; the README carries its Markdown form between two markers, and a test
checks that the two agree, so the README's key list cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from digitsum import config as cfg
from digitsum.keys import help_of, rule_of, show
from sweep.spec import ConstraintKeys, DataKeys, ObjectiveKeys, ParamKeys, SpecKeys

README_BEGIN = "<!-- sweep keys --markdown: begin (generated; a test checks it) -->"
README_END = "<!-- sweep keys --markdown: end -->"


def config_rows() -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, allowed, help) for every config key."""
    return [(k.name, k.type_name, show(k.default), k.rule.allowed, k.help) for k in cfg.schema().values()]


def spec_rows() -> list[tuple[str, str, str, str]]:
    """(key, default, allowed, help) for every study-spec key."""
    sections = (
        ("", SpecKeys),
        ("objectives[].", ObjectiveKeys),
        ("constraints.METRIC.", ConstraintKeys),
        ("data.", DataKeys),
        ("space.KEY.", ParamKeys),
    )
    return [
        (prefix + f.name, show(f.default), rule_of(f).allowed, help_of(f))
        for prefix, cls in sections
        for f in dataclasses.fields(cls)
    ]


def _markdown(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(tuple("---" for _ in header)), *(line((f"`{r[0]}`", *r[1:])) for r in rows)]


def _text(rows: Sequence[tuple[str, ...]]) -> list[str]:
    width = max(len(r[0]) for r in rows)
    return [
        f"  {r[0]:{width}s}  {r[-1]} (default {r[-3] if len(r) == 5 else r[1]}" + (f"; {r[-2]})" if r[-2] else ")")
        for r in rows
    ]


def key_tables(markdown: bool = False) -> str:
    """Both references, as Markdown tables or as text for a terminal."""
    config, spec = config_rows(), spec_rows()
    if markdown:
        lines = ["Config keys (`sweep train KEY=VALUE`, `--config FILE`, a spec's `fixed` and `space`):", ""]
        lines += _markdown(("key", "type", "default", "allowed", "what it does"), config)
        lines += [
            "",
            "Study-spec keys (`studies/*.yaml`; `space.KEY` is any config key above, `METRIC` an objective's metric):",
            "",
        ]
        lines += _markdown(("key", "default", "allowed", "what it does"), spec)
        return "\n".join(lines)
    lines = ["config keys (sweep train KEY=VALUE, --config FILE, a spec's fixed and space):", *_text(config)]
    lines += ["", "study-spec keys (space.KEY is any config key above):", *_text(spec)]
    return "\n".join(lines)
