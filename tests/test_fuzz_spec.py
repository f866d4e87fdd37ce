"""Fuzz study specs: mutations of the shipped specs (and of the tests' tiny one) with wrong types,
unknown, missing or duplicated keys, extreme, NaN or inf numbers, non-ASCII and control characters,
deep nesting, empty and huge files; `sweep check` reads each, and `sweep run` the cheap ones.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzz import as_yaml, call, extreme_numbers, nested, weird_text, yaml_values
from hypothesis import given
from hypothesis import strategies as st
from sweep_helpers import spec_dict

pytestmark = pytest.mark.fuzz

STUDIES = Path(__file__).resolve().parents[1] / "studies"
SHIPPED = {path.name: yaml.safe_load(path.read_text()) for path in sorted(STUDIES.glob("*.yaml"))}
TINY = spec_dict()


def key_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path of keys (and list indexes) inside a spec."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += key_paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += key_paths(inner, (*prefix, index))
    return found


def set_at(spec: Any, where: tuple, value: Any) -> None:
    for step in where[:-1]:
        spec = spec[step]
    spec[where[-1]] = value


def delete_at(spec: Any, where: tuple) -> None:
    for step in where[:-1]:
        spec = spec[step]
    del spec[where[-1]]


@st.composite
def mutated(draw, base: dict) -> dict:
    """`base` with one to three mutations: a value replaced (any type, extreme numbers, odd text,
    deep nesting), a key removed, or an unknown key added anywhere."""
    spec = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        places = key_paths(spec)
        kind = draw(st.sampled_from(["replace", "replace", "number", "delete", "add", "deep"]))
        if not places or not isinstance(spec, dict):
            break
        where = draw(st.sampled_from(places))
        if kind == "replace":
            set_at(spec, where, draw(yaml_values))
        elif kind == "number":
            set_at(spec, where, draw(extreme_numbers))
        elif kind == "deep":
            set_at(spec, where, nested(draw(st.sampled_from([50, 500, 5000]))))
        elif kind == "delete":
            delete_at(spec, where)
        else:
            parent = spec
            for step in where[:-1]:
                parent = parent[step]
            if isinstance(parent, dict):
                parent[draw(weird_text)] = draw(yaml_values)
    return spec


@st.composite
def spec_texts(draw) -> tuple[bytes, dict | None]:
    """A spec file's bytes, and the mapping it holds when it is one."""
    kind = draw(st.sampled_from(["mutated"] * 6 + ["duplicate", "empty", "huge", "garbage", "bomb", "scalar"]))
    base = draw(st.sampled_from([TINY, *SHIPPED.values()]))
    if kind == "mutated":
        spec = draw(mutated(base))
        return _encoded(as_yaml(spec)), spec
    if kind == "duplicate":
        text = as_yaml(base)
        line = draw(st.sampled_from([ln for ln in text.splitlines() if ln and not ln.startswith(" ")]))
        return _encoded(text + line + "\n"), None
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n", b"# nothing\n", b"---\n", b"\xef\xbb\xbf"])), None
    if kind == "huge":
        return _encoded(as_yaml(base) + "# " + "x" * 2_000_000 + "\n" + "extra: [" + "1, " * 100_000 + "1]\n"), None
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=300)), None
    if kind == "bomb":  # YAML aliases: a small file whose tree has 10^9 leaves
        levels = "\n".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10))
        return _encoded(as_yaml(base) + "l0: &l0 [x]\n" + levels + "\n"), None
    return _encoded(as_yaml(draw(st.one_of(weird_text, extreme_numbers, st.lists(st.integers()))))), None


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8


def is_cheap(spec: Any) -> bool:
    """A valid spec whose trials are tiny whatever the sampler picks: `sweep run` can afford it."""
    from sweep.spec import SpecError, load_spec

    if not isinstance(spec, dict):
        return False
    try:
        parsed = load_spec_from(spec, load_spec)
    except SpecError:
        return False
    train = parsed.base.train
    lengths_ok = train.dataset_path is None and max(map(int, train.lengths.replace("-", ",").split(","))) <= 2
    small = all(
        p.key not in ("train.lengths", "train.dataset_path", "train.num_threads")
        and all(abs(v) <= 32 for v in [*(p.choices or ()), p.low or 0, p.high or 0] if isinstance(v, (int, float)))
        for p in parsed.space
    )
    model = parsed.base.model
    sizes = max(model.hidden_size, model.embedding_dim, model.head_size) <= 32 and model.num_layers <= 2
    return lengths_ok and small and sizes and train.n_epochs <= 3 and max(parsed.probe.lengths, default=0) <= 3


def load_spec_from(spec: dict, load_spec: Any) -> Any:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        file.write(as_yaml(spec))
    try:
        return load_spec(file.name)
    finally:
        Path(file.name).unlink()


@given(text=spec_texts(), number=st.integers(0, 10**6))
def test_spec_files(fuzz_box, text, number):
    box = fuzz_box
    content, spec = text
    path = box.folder / "specs" / f"fuzzed-{number}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    call(box, "specs", ["check", path])
    # A cheap valid spec runs one trial of a new study; any other is read, and refused or resumed under
    # the sandbox study's name, which has more finished trials than --trials 1 asks for: nothing trains.
    name = [] if is_cheap(spec) else ["--name", box.study]
    call(
        box,
        "specs",
        ["run", path, "--storage", box.url, "--trials", "1", "--artifacts", box.artifacts, *name],
        writes=True,
    )
