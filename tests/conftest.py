"""Shared helpers for the core (digitsum) tests: tiny configs and tiny data, so every test is fast."""

from __future__ import annotations

import multiprocessing.util
import os
import subprocess

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from digitsum import fused
from digitsum.config import Config, ModelConfig, TrainConfig
from digitsum.data import make_rows


def needed_by(model_type: str) -> dict:
    """The keys a model type cannot do without: an lrnn is linear up to its head, so it needs one."""
    return {"head_size": 16} if model_type == "lrnn" else {}


def _tiny_config(model: dict | None = None, **train) -> Config:
    """A config that trains in well under a second on one CPU thread (lengths 1-2, 110 rows)."""
    model_type = (model or {}).get("model_type", "gru")
    model_values = {
        "model_type": "gru",
        "hidden_size": 16,
        "embedding_dim": 8,
        **needed_by(model_type),
        **(model or {}),
    }
    train_values = {
        "lengths": "1-2",
        "n_epochs": 3,
        "learning_rate": 0.02,
        "batch_size": 16,
        "lr_schedule": "constant",
        "seed": 0,
        "device": "cpu",
        "num_threads": 1,
        **train,
    }
    return Config(model=ModelConfig(**model_values), train=TrainConfig(**train_values))


@pytest.fixture
def tiny_config():
    """``tiny_config(model={...}, **train_fields)`` -> Config (built directly, no config.py checks)."""
    return _tiny_config


@pytest.fixture(scope="session")
def tiny_rows():
    """Every string of length 1 and 2: 110 rows."""
    return make_rows([1, 2])


@pytest.fixture
def one_thread():
    """Run torch on one thread: with 2 cores shared with other work, more threads only contend."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------
# Tests that start processes, servers or a browser carry the `processes` mark, so the flake hunt
# (`make flakes`) can run exactly those many times. The mark is checked, not trusted: a test that
# starts a child process itself, or through one of its fixtures, fails here until it is marked.

_children = [0]  # child processes started so far in this pytest process
fused.load()  # loading the training kernel runs ninja and the compiler once per process: not a test's own


def _counting(start):
    def counted(*args, **kwargs):
        _children[0] += 1
        return start(*args, **kwargs)

    return counted


subprocess.Popen._execute_child = _counting(subprocess.Popen._execute_child)  # type: ignore[attr-defined]
multiprocessing.util.spawnv_passfds = _counting(multiprocessing.util.spawnv_passfds)  # multiprocessing's spawn
_process_fixtures: set[str] = set()  # fixtures that started one: every test using them depends on processes


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    before = _children[0]
    yield
    if _children[0] > before:
        _process_fixtures.add(fixturedef.argname)


@pytest.fixture(autouse=True)
def _processes_are_marked(request):
    before = _children[0]
    yield
    started = _children[0] > before or _process_fixtures.intersection(request.fixturenames)
    if started and request.node.get_closest_marker("processes") is None:
        pytest.fail(
            "this test starts processes, servers or a browser (or uses a fixture that does): "
            "mark it @pytest.mark.processes, so that `make flakes` runs it",
            pytrace=False,
        )


# ---------------------------------------------------------------------------------------------
# The fuzzers' profiles (tests/fuzz.py). `quick` runs in `make test`: derandomized, so every run
# tries the same inputs and a landing never fails on a new random one; no example database.
# `long` (`make fuzz`, SWEEP_FUZZ=long) draws new inputs each time and keeps the failing ones in
# .hypothesis/ (ignored by git) to try first next time.

_FUZZ_SETTINGS = {
    "deadline": None,  # a command's time depends on the machine; the suite's time is checked elsewhere
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}
settings.register_profile("quick", derandomize=True, database=None, max_examples=50, **_FUZZ_SETTINGS)
settings.register_profile(
    "long",
    max_examples=1000,
    database=DirectoryBasedExampleDatabase(".hypothesis/examples"),
    **_FUZZ_SETTINGS,
)
settings.load_profile(os.environ.get("SWEEP_FUZZ", "quick"))
if os.environ.get("SWEEP_FUZZ_EXAMPLES"):  # e.g. make fuzz SWEEP_FUZZ_EXAMPLES=5000
    settings.register_profile("chosen", settings.default, max_examples=int(os.environ["SWEEP_FUZZ_EXAMPLES"]))
    settings.load_profile("chosen")


def pytest_sessionfinish(session):
    """Under pytest-xdist, each worker hands its fuzzers' counts to the controller that prints them."""
    from fuzz import COUNTS

    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["fuzz_counts"] = dict(COUNTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    from fuzz import COUNTS

    COUNTS.update(getattr(node, "workeroutput", {}).get("fuzz_counts", {}))


def pytest_terminal_summary(terminalreporter):
    from fuzz import COUNTS

    if COUNTS:
        tried = ", ".join(f"{surface} {n}" for surface, n in sorted(COUNTS.items()))
        terminalreporter.write_line(f"fuzz ({settings.default.max_examples} examples a test): inputs tried: {tried}")


@pytest.fixture(scope="session")
def fuzz_box(tmp_path_factory):
    """The fuzzers' sandbox (tests/fuzz.py), made once; S3 pointed at a closed loopback port, so an
    s3:// input fails at once instead of looking for AWS beyond this machine."""
    from fuzz import make_sandbox

    aws = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_ACCESS_KEY_ID": "fuzz",
        "AWS_SECRET_ACCESS_KEY": "fuzz",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
    }
    saved = {name: os.environ.get(name) for name in [*aws, "SWEEP_STORAGE"]}
    os.environ.update(aws)
    os.environ.pop("SWEEP_STORAGE", None)
    try:
        yield make_sandbox(tmp_path_factory.mktemp("fuzz"))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# The files of the longest tests (servers, many processes, Slurm) are handed to the two pytest-xdist
# workers first, so the short files fill the gaps at the end instead of one worker finishing a long
# file alone. pytest-xdist deals the first files out in turns (worker A the 1st, 3rd, ...; B the 2nd,
# 4th, ...), so the order below pairs them: A gets PostgreSQL's many-worker tests, then Slurm and the
# signal tests (after them: each starts processes too); B the rest.
LONG_FIRST = (
    "test_postgres.py",
    "test_install.py",
    "test_slurm.py",
    "test_stack.py",
    "test_signals.py",
    "test_faults.py",
    "test_fuzz_spec.py",
    "test_run.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))  # stable: each file's order stays
