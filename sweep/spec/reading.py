"""YAML files as the spec layer reads them: one error line naming the file, and a key given twice refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from digitsum.errors import UsageError


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
