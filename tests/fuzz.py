"""The fuzzing harness: every input surface of `sweep`, driven by hypothesis.

Every input, valid or broken, must end one of three ways: exit 0; exit 2 (a usage error) or 1 (an
OS error) with at most two lines on stderr; never a traceback, in a message or raised. And what is
stored must not change unless the command succeeded and is one that writes: `call` takes a digest
of every table of the SQLite storage and of every file of the artifact store before and after.

The commands run in this process (typer's CliRunner), in a sandbox folder made once per session: a
real study with finished trials and checkpoints, a trained run, CSV files. Two profiles (the
`hypothesis` settings registered in tests/conftest.py): `quick`, deterministic, inside `make test`;
`long`, random and much longer, in `make fuzz`. `COUNTS` keeps how many inputs each surface tried.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import os
import shlex
import sqlite3
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st
from sweep_helpers import spec_dict, write_spec
from typer.testing import CliRunner

from sweep.cli import app

COUNTS: collections.Counter[str] = collections.Counter()  # inputs tried, by surface
EXIT_CODES = (0, 1, 2)


@dataclass(frozen=True)
class Sandbox:
    """What the fuzzed commands work on; `url` is the storage every command is pointed at."""

    folder: Path
    url: str
    db: Path
    artifacts: Path
    checkpoint: Path  # a trained run's best.pt
    csv: Path  # a small valid CSV of 2-digit rows
    study: str  # a study with finished trials and a kept checkpoint

    @property
    def storage_args(self) -> list[str]:
        return ["--storage", self.url]


def make_sandbox(folder: Path) -> Sandbox:
    """A real study ("tiny", 2 finished trials, the best one's checkpoint kept) and a trained run."""
    spec = write_spec(folder, spec=spec_dict())
    url = f"sqlite:///{folder}/s.db"
    artifacts = folder / "ckpt"
    with _in(folder):
        done = CliRunner().invoke(app, ["run", str(spec), "--storage", url, "--artifacts", str(artifacts)])
        assert done.exit_code == 0, done.output
        trained = CliRunner().invoke(
            app,
            ["train", "train.lengths=2", "train.n_epochs=1", "model.hidden_size=8", "train.device=cpu"]
            + ["train.run_name=r", "train.num_threads=1"],
        )
        assert trained.exit_code == 0, trained.output
    csv = folder / "rows.csv"
    csv.write_text("12,3\n99,18\n07,7\n")
    return Sandbox(folder, url, folder / "s.db", artifacts, folder / "runs" / "r" / "best.pt", csv, "tiny")


@contextlib.contextmanager
def _in(folder: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def digest(box: Sandbox) -> str:
    """Every row of every table of the storage, and every file of the artifact store."""
    hashed = hashlib.sha256()
    if box.db.is_file():
        with contextlib.closing(sqlite3.connect(f"file:{box.db}?mode=ro", uri=True, timeout=30)) as db:
            tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in sorted(tables):
                rows = sorted(map(repr, db.execute(f'SELECT * FROM "{table}"')))
                hashed.update(f"{table}:{rows}".encode())
    for path in sorted(box.artifacts.rglob("*")) if box.artifacts.is_dir() else []:
        hashed.update(str(path).encode() + (path.read_bytes() if path.is_file() else b"/"))
    return hashed.hexdigest()


def call(box: Sandbox, surface: str, args: list[Any], writes: bool = False, stdin: str | None = None) -> Any:
    """Run `sweep ARGS` in the sandbox and check the property; returns typer's Result.

    ``writes``: a command that may change the storage when it succeeds (run, rerun, report, rm)."""
    COUNTS[surface] += 1
    args = [str(a).replace("\x00", "") for a in args]  # no argv can hold a NUL (files can: they are fuzzed too)
    shown = "sweep " + " ".join(shlex.quote(a[:80]) for a in args)
    before = digest(box)
    with _in(box.folder):
        result = CliRunner().invoke(app, args, input=stdin)
    error = result.exception
    if error is not None and not isinstance(error, SystemExit):
        trace = "".join(traceback.format_exception(*result.exc_info))
        raise AssertionError(f"{shown}\nraised {type(error).__name__}: {error}\n{trace}")
    assert result.exit_code in EXIT_CODES, (shown, result.exit_code, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) <= 2, (shown, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr, (shown, result.stdout + result.stderr)
    if result.exit_code != 0:
        assert lines, (shown, "a failure says why on stderr", result.stdout)
        _assert_right_hint(box, args, lines[-1], shown)
    if result.exit_code != 0 or not writes:
        assert digest(box) == before, (shown, "changed what is stored", result.stdout, result.stderr)
    return result


def _assert_right_hint(box: Sandbox, args: list[str], line: str, shown: str) -> None:
    """The line does not say a path that is there is missing, nor name an option the user did not use."""
    for arg in args:
        path = box.folder / arg if arg and not arg.startswith("-") else None
        if path is not None and os.path.lexists(path):
            assert f"{arg}: no such" not in line and f"no storage at {path.resolve()} " not in line, (shown, line)
    if "--device" in args:
        assert "train.device" not in line, (shown, line)
    if any(arg.startswith("train.device=") for arg in args):
        assert "--device" not in line, (shown, line)


# ---------------------------------------------------------------------------------------------
# Strategies: values of every kind, valid and broken

# Text as users and files give it, with what breaks parsers: control characters, NUL, surrogates
# are not allowed in argv, but YAML and JSON files can carry any of them.
weird_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["\udcff", "\udc80abc"]),  # bytes that are not UTF-8, as Python decodes them from argv
    st.sampled_from(["", " ", "\t", "\x00", "\n", "-", "--", "..", "/", "~", "%", "{}", "[]", "null", "None", "NaN"]),
    st.text(alphabet="0123456789-,.eE+ ", max_size=12),
    st.just("x" * 5000),
)
extreme_numbers = st.one_of(
    st.sampled_from([0, -1, 1, 2, -(2**63), 2**63, 2**64, 10**30, 1e308, -1e308, 5e-324, -0.0, 0.5, 1.5]),
    st.sampled_from([math.inf, -math.inf, math.nan]),
    st.integers(),
    st.floats(allow_subnormal=False),  # training sets flush-to-zero for the process (digitsum.train)
)
scalars = st.one_of(weird_text, extreme_numbers, st.booleans(), st.none())
yaml_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.one_of(weird_text, extreme_numbers), inner, max_size=3)
    ),
    max_leaves=8,
)


def text_of(value: Any) -> str:
    """How a value reads on a command line."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@dataclass(frozen=True)
class Nested:
    """A value nested `depth` mappings deep: written out by `as_yaml` as flow-style text, since
    PyYAML's own writer (like its reader) recurses and would give up long before."""

    depth: int


def as_yaml(value: Any) -> str:
    deep: list[Nested] = []

    def swap(item: Any) -> Any:
        if isinstance(item, Nested):
            deep.append(item)
            return f"__nested_{len(deep) - 1}__"
        if isinstance(item, dict):
            return {k: swap(v) for k, v in item.items()}
        return [swap(v) for v in item] if isinstance(item, list) else item

    text = yaml.safe_dump(swap(value), allow_unicode=True, sort_keys=False)
    for index, item in enumerate(deep):
        text = text.replace(f"__nested_{index}__", "{a: " * item.depth + "1" + "}" * item.depth)
    return text


def nested(depth: int) -> Nested:
    return Nested(depth)


def paths(box: Sandbox, *, existing_file: Path | None = None) -> st.SearchStrategy[str]:
    """Paths that are missing, a folder, a device, under a file, too long, or fine."""
    special = [
        box.folder / "missing" / "nothing.here",
        box.folder / "nothing.here",
        box.folder,  # a folder
        box.csv / "below-a-file",  # under a file
        "/dev/null",
        "/dev/zero",
        "/proc/self/status",
        "/proc/no-such/place",  # not writable, even as root
        box.folder / ("n" * 300),  # a name too long for the filesystem
        "",
        ".",
        "~",
    ]
    if existing_file is not None:
        special.append(existing_file)
    relative = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00/"), min_size=1, max_size=20)
    return st.one_of(st.sampled_from([str(p) for p in special]), relative)


def storage_urls(box: Sandbox) -> st.SearchStrategy[str]:
    """Storage URLs: the sandbox's, and broken ones (a server that does not answer is on loopback only)."""
    fixed = [
        box.url,
        "nonsense",
        "sqlite://",
        "sqlite:///:memory:",
        f"sqlite:///{box.folder}/missing.db",
        f"sqlite:///{box.folder}",  # a folder
        f"sqlite:///{box.csv}",  # a file that is not a database
        "sqlite:////dev/null",
        f"sqlite:///{box.csv}/below-a-file.db",
        "postgresql+psycopg://u:secret@127.0.0.1:1/db",  # nothing listens on port 1
        "postgresql://u@127.0.0.1:1/db",
        "mysql://u:p@127.0.0.1:1/db",
        "oracle://",
        f"journal:{box.folder}/missing.log",
        f"journal:{box.folder}",
        "journal:/dev/null",
        "://",
        "sqlite:///" + "x" * 300,
    ]
    return st.one_of(st.sampled_from(fixed), weird_text.filter(lambda t: "\x00" not in t))


devices = st.one_of(
    st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:7", "mps", "meta", "cpu:0", "xla", "CPU", " cpu", "gpu"]),
    st.sampled_from(["cuda:-1", "cuda:99999999999999999999", "vulkan", "hpu", "privateuseone", "cuda:x", ""]),
    weird_text,
)
seeds = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str), st.sampled_from(["0", "1e3", "0x1"]), weird_text
)
counts = st.one_of(
    st.integers(min_value=-5, max_value=5).map(str),
    st.sampled_from(["10000000000000000000000", "-0", "1.5", "nan", "inf", "1e3", "0x10", ""]),
    weird_text,
)
study_names = st.one_of(
    st.sampled_from(["tiny", "nope", "", " ", "a/b", "../x", "a:b", "-x", ".hidden", "x" * 300, "CON", "t\x01"]),
    weird_text,
)
