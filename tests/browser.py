"""Helpers for the report and dashboard tests: a tiny real study, the CLI, processes, headless Chromium.

The browser is the system's Debian Chromium driven by Playwright's sync API; nothing is ever
downloaded (no `playwright install`). Tests that need it take the `browser` fixture of their
module, which skips with a clear reason when Chromium or the playwright package is missing, so
the CLI-only tests still run on such a machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SWEEP = Path(sys.executable).parent / "sweep"

# ---------------------------------------------------------------------------------------------
# The tiny study shared by a test module

MODEL_TYPES = ("rnn", "lstm", "gru")
N_TRIALS = 6  # `balance` gives each model type 2
N_EPOCHS = 2
# The median pruner may stop a trial after its first epoch, so the shared study has pruned trials
# too, and the report and dashboard checks see them.
PRUNER_WARMUP_STEPS = 1


def tiny_spec(name: str) -> dict[str, Any]:
    """A compare-cells-like spec that trains in about a second per trial (lengths 1-2, hidden 8-16)."""
    return {
        "name": name,
        "description": "tiny compare-cells study for the report and dashboard tests",
        "metric": "val_exact_match",
        "n_trials": N_TRIALS,
        "data": {"lengths": [1, 2], "val_fraction": 0.2, "probe_lengths": [3]},
        "fixed": {
            "train.n_epochs": N_EPOCHS,
            "train.seed": 0,
            "train.device": "cpu",
            "train.batch_size": 16,
            "train.lr_schedule": "constant",
            "model.embedding_dim": 8,
        },
        "balance": "model.model_type",
        "sampler": {"type": "random", "seed": 3},
        "pruner": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": PRUNER_WARMUP_STEPS},
        "space": {
            "model.model_type": {"choices": list(MODEL_TYPES)},
            "model.hidden_size": {"low": 8, "high": 16},
            "train.learning_rate": {"low": 0.005, "high": 0.05, "log": True},
        },
    }


@dataclass(frozen=True)
class TinyStudy:
    directory: Path
    name: str
    url: str
    checkpoints: Path
    run_output: str


def make_tiny_study(directory: Path, name: str) -> TinyStudy:
    """`sweep run` (a real subprocess, cwd=directory) on the tiny spec, into directory/s.db."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = directory / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(name), sort_keys=False))
    url = f"sqlite:///{directory}/s.db"
    checkpoints = directory / "ckpt"
    done = run_sweep(directory, "run", spec, "--storage", url, "--artifacts", checkpoints, timeout=240)
    assert done.returncode == 0, f"sweep run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return TinyStudy(directory, name, url, checkpoints, done.stdout)


# ---------------------------------------------------------------------------------------------
# The CLI


def sweep_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SWEEP_STORAGE", None)  # every call names its storage
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_sweep(cwd: Path, *args: Any, timeout: float = 120) -> subprocess.CompletedProcess:
    """`sweep ARGS` as a real process; its exit code, stdout and stderr."""
    return subprocess.run(
        [str(SWEEP), *map(str, args)],
        cwd=cwd,
        env=sweep_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def invoke_sweep(*args: Any):
    """`sweep ARGS` in this process (typer's CliRunner): the same command, without paying the
    imports (torch, optuna, plotly) again for every call. Returns the click Result."""
    from typer.testing import CliRunner

    from sweep.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(stderr: str, stdout: str = "") -> str:
    """The only stderr line, which starts with "error:"; fails on a traceback or more lines."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr + stdout, stderr
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


FIGURES_PRINTED = re.compile(r"\((\d+) figures?, ")


def printed_figures(stdout: str) -> int:
    """The figure count `sweep report` prints: "wrote OUT (N figures, X MB) in Ys"."""
    match = FIGURES_PRINTED.search(stdout)
    assert match, f"no figure count in: {stdout!r}"
    return int(match.group(1))


def without_scripts(page: str) -> str:
    """The HTML with the bodies of <script> elements removed (the inline plotly.js bundle holds
    default URLs as string constants, e.g. its topojson CDN, that it never fetches for our charts)."""
    return re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", page, flags=re.S | re.I)


# ---------------------------------------------------------------------------------------------
# Processes and ports


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_sweep(cwd: Path, *args: Any, log: Path) -> subprocess.Popen:
    """Start `sweep ARGS` in the background; stdout and stderr go to `log` (no pipe to fill up)."""
    with open(log, "w") as handle:  # the child holds its own copy
        return subprocess.Popen(
            [str(SWEEP), *map(str, args)],
            cwd=cwd,
            env=sweep_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate the process by its PID, then kill it if it has not exited after `timeout` s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """Poll `url` until it answers (any HTTP status); fail early if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited with code {process.returncode} before answering:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()}")
            time.sleep(0.25)


@contextlib.contextmanager
def served_dashboard(cwd: Path, storage: str) -> Iterator[str]:
    """`sweep dashboard` on a free loopback port for the `with` block; yields its base URL."""
    port = free_port()
    log = cwd / "dashboard.log"
    process = start_sweep(cwd, "dashboard", "--storage", storage, "--host", "127.0.0.1", "--port", port, log=log)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/api/meta", process, log)
        yield base
    finally:
        stop_process(process)


def get_json(url: str, timeout: float = 30) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.status == 200, (url, response.status)
        return json.load(response)


# ---------------------------------------------------------------------------------------------
# Headless Chromium


def require_browser() -> None:
    """Skip (with the reason) where the system Chromium or the playwright package is missing."""
    if not Path(CHROMIUM).is_file() or not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package for the browser checks")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright package is missing: pip install -e .[dev] for the browser checks")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless system Chromium (never a downloaded one)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    """What a page did: console errors, uncaught exceptions, every request and failed response."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    bad_responses: list[tuple[int, str]] = field(default_factory=list)

    def errors(self, ignore: tuple[str, ...] = ()) -> list[str]:
        found = self.console_errors + self.page_errors + self.failed_requests
        return [e for e in found if not any(pattern in e for pattern in ignore)]


@contextlib.contextmanager
def open_page(browser: Any, url: str, timeout_ms: float = 45_000) -> Iterator[tuple[Any, PageLog]]:
    """A fresh context and page, logging from before the first request; navigates to `url`."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    log = PageLog()
    page.on(
        "console",
        lambda message: (
            message.type == "error"
            and log.console_errors.append(f"console error: {message.text} ({message.location.get('url', '')})")
        ),
    )
    page.on("pageerror", lambda error: log.page_errors.append(f"page error: {error}"))
    page.on("request", lambda request: log.requests.append(request.url))
    page.on(
        "requestfailed",
        lambda request: log.failed_requests.append(f"request failed: {request.url} ({request.failure})"),
    )
    page.on(
        "response",
        lambda response: response.status >= 400 and log.bad_responses.append((response.status, response.url)),
    )
    try:
        page.goto(url, wait_until="load", timeout=timeout_ms)
        yield page, log
    finally:
        context.close()


# JS: every plotly figure div has been drawn (plotly adds .js-plotly-plot and an svg.main-svg).
ALL_PLOTS_DRAWN = """() => {
    const divs = document.querySelectorAll('.plotly-graph-div');
    return divs.length > 0
        && [...divs].every(d => d.classList.contains('js-plotly-plot') && d.querySelector('svg.main-svg'));
}"""


def rendered_plots(page: Any) -> list[dict]:
    """Each `.js-plotly-plot` element: its title, whether it holds an svg.main-svg, its traces' names, and
    the tick labels Plotly drew on its log-scale y axes (`log_ticks`)."""
    return page.eval_on_selector_all(
        ".js-plotly-plot",
        """els => els.map(e => ({
            title: (e.layout && e.layout.title && (e.layout.title.text ?? e.layout.title)) || '',
            svg: e.querySelector('svg.main-svg') !== null,
            traces: (e.data || []).map(t => t.name || ''),
            log_ticks: Object.keys(e._fullLayout || {})
                .filter(k => /^yaxis\\d*$/.test(k) && e._fullLayout[k].type === 'log')
                .flatMap(k => [...e.querySelectorAll('.' + k.replace('axis', '') + 'tick text')]
                    .map(t => t.textContent)),
        }))""",
    )
