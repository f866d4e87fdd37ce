"""Subpackages that name their public API in ``__all__`` without importing it: a name is imported from
its module on first use (PEP 562), so a read-only command that needs one light module of a subpackage
never loads the rest: `sweep best` reads `sweep.reruns.stats` without the rerun workers, and with them torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A package's ``__getattr__``: each public name of ``names`` (name -> its module in the package)."""

    def attribute(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    return attribute
