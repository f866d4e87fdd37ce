"""Redraw docs/images/tensorboard.png, the README's TensorBoard picture: a small real sweep with a
TensorBoard run per trial, `tensorboard` on loopback, and Debian's Chromium driven by Playwright.

.venv/bin/python docs/tensorboard-picture.py    (about a minute on 2 cores; needs /usr/bin/chromium)
"""

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from playwright.sync_api import sync_playwright

PICTURE = Path(__file__).resolve().parent / "images" / "tensorboard.png"
BIN = Path(sys.executable).parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CHROMIUM_ARGS += ["--disable-component-update", "--no-first-run"]
SPEC = {
    "name": "tensorboard-demo",
    "n_trials": 6,
    "data": {"lengths": [1, 2, 3], "val_fraction": 0.2, "probe_lengths": [4]},
    "fixed": {"train.n_epochs": 12, "train.seed": 0, "train.device": "cpu", "train.batch_size": 32},
    "sampler": {"type": "random", "seed": 3},
    "space": {
        "model.model_type": {"choices": ["rnn", "lstm", "gru"]},
        "model.hidden_size": {"low": 16, "high": 64, "step": 16},
        "train.learning_rate": {"low": 3.0e-3, "high": 3.0e-2, "log": True},
    },
    "tensorboard": "tb",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def screenshot(url: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 640})
        page.goto(url)
        page.wait_for_selector("text=exact_match/val", timeout=60_000)
        page.get_by_role("combobox", name="Filter tags (regex)").fill("^(exact_match/|loss/val)")
        page.locator("input.slider-input[type=number]").first.fill("0")  # smoothing: the values as written
        page.get_by_text("Ignore outliers in chart scaling").click()
        page.get_by_role("button", name="Toggle settings side pane").click()
        page.wait_for_timeout(3000)  # the charts' last redraw
        PICTURE.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(PICTURE))
        browser.close()


with tempfile.TemporaryDirectory() as folder:
    (Path(folder) / "spec.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False))
    run = [str(BIN / "sweep"), "run", "spec.yaml", "--storage", f"sqlite:///{folder}/s.db", "--artifacts", "ckpt"]
    subprocess.run(run, cwd=folder, check=True)
    port = free_port()
    logdir = Path(folder, "tb", SPEC["name"])
    server = subprocess.Popen(
        [str(BIN / "tensorboard"), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
    )
    try:
        for _ in range(120):  # up in a few seconds
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        screenshot(f"http://127.0.0.1:{port}/#timeseries")
    finally:
        server.terminate()
        server.wait(timeout=30)
print(f"wrote {PICTURE}")
