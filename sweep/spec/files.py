"""Study spec files: a path or a shipped spec's name -> YAML -> a `StudySpec`."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import yaml

from digitsum.errors import UsageError
from digitsum.files import require_file
from sweep.spec.model import SpecError, StudySpec
from sweep.spec.parse import parse_spec


def load_spec(path: str | Path) -> StudySpec:
    """A spec file, or a shipped spec by name (``sweep run quickstart``)."""
    given = Path(path)
    if given.exists():  # a folder or a device is not taken for a shipped spec's name
        require_file(given, "study spec", "", SpecError)
    found = given if given.is_file() else shipped_specs().get(given.name.removesuffix(".yaml"))
    if found is None or (not given.is_file() and len(given.parts) > 1 and given.parent != Path("studies")):
        shipped = ", ".join(shipped_specs()) or "none found"
        raise SpecError(f"{given}: no such study spec; give a YAML file or a shipped spec's name ({shipped})")
    return parse_spec(read_yaml(found, SpecError), str(given))


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            name = self.construct_object(key_node, deep=deep)
            if name in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(None, None, f"line {line}: {name!r} is given twice; keep one")
            seen.add(name)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, error: type[UsageError] = UsageError) -> Any:
    """A YAML (or JSON) file's content; ``error`` names the file for bad text, bad YAML or a key given twice."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file; a study spec or config is YAML text") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except RecursionError:  # PyYAML reads nesting recursively
        raise error(f"{path}: nested too deeply to read; a spec or config is a few levels deep") from None
    except yaml.constructor.ConstructorError as problem:
        raise error(f"{path}: {problem.problem}") from None
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML ({' '.join(str(problem).split())[:160]})") from None
