"""How the commands print: one-line errors, JSON every parser reads, numbers as the tables show them."""

from __future__ import annotations

import json
import math
from typing import Any

import typer

from digitsum.errors import one_line


def say_error(message: str) -> None:
    """One line on stderr (`one_line`); "error:" in red on a terminal (click drops the colour when piped)."""
    typer.echo(typer.style("error:", fg="red", bold=True) + " " + one_line(message), err=True)


def echo_json(value: Any) -> None:
    """JSON that every parser reads: an infinite value (a target never reached) is written as null."""
    typer.echo(json.dumps(_finite(value), indent=2))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def number_text(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"


def seeds_text(over: dict[str, Any] | None, study: str, trial: int) -> str:
    """A trial's seed reruns as ``99.50% +- 0.10 over 3 seeds`` (sweep.report.best.over_seeds)."""
    if over is None:
        return f"not measured yet (sweep rerun {study} {trial} --seeds 0,1,2)"
    mean, sd, n = 100 * over["val_exact_match_mean"], 100 * over["val_exact_match_stdev"], len(over["seeds"])
    return f"{mean:.2f}% +- {sd:.2f} over {n} seeds"
