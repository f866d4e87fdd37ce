"""Shared helpers for the core (digitsum) tests: tiny configs and tiny data, so every test is fast."""

from __future__ import annotations

import multiprocessing.util
import subprocess

import pytest
import torch

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
