"""Study spec files: a path or a shipped spec's name -> YAML -> a `StudySpec`."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from digitsum.files import require_file
from sweep.spec.model import SpecError, StudySpec
from sweep.spec.parse import parse_spec
from sweep.spec.reading import read_yaml


def load_spec(path: str | Path) -> StudySpec:
    """A spec file, or a shipped spec by name (``sweep run quickstart``)."""
    given = Path(path)
    if given.exists():  # a folder or a device is not taken for a shipped spec's name
        require_file(given, "study spec", "", SpecError)
    found = given if given.is_file() else shipped_specs().get(given.name.removesuffix(".yaml"))
    if found is None or (not given.is_file() and len(given.parts) > 1 and given.parent != Path("studies")):
        shipped = ", ".join(shipped_specs()) or "none found"
        raise SpecError(f"{given}: no such study spec; give a YAML file or a shipped spec's name ({shipped})")
    return parse_spec(read_yaml(found, SpecError), str(given), folder=found.parent)


def shipped_specs() -> dict[str, Path]:
    """The study specs that ship with the package, by name: studies/ beside the package in a source
    checkout, else the package sweep.studies that pyproject.toml installs from it."""
    checkout = Path(__file__).resolve().parents[2] / "studies"
    if checkout.is_dir():
        return {p.stem: p for p in sorted(checkout.glob("*.yaml"))}
    try:  # a folder without __init__.py: `files` gives a MultiplexedPath, which is no os path, so list it
        found = [Path(str(entry)) for entry in importlib.resources.files("sweep.studies").iterdir()]
    except ModuleNotFoundError:
        return {}
    return {p.stem: p for p in sorted(found) if p.suffix == ".yaml"}
