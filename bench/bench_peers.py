"""The quickstart's search run by the tools a user would pick instead, and by `sweep run`, side by side
(`make bench-peers`, in a venv of its own that adds Ray Tune).

    .venv-peers/bin/python bench/bench_peers.py [--trials 10] [--epochs 15] [--quick]

Every tool runs the same search: studies/quickstart.yaml's space (LSTM or GRU, 64-192 units, learning
rate, batch size), its number of trials and epochs, its TPE seed and startup trials, on the same
training and validation rows (the quickstart's split, written to CSV first), each scored by greedy
exact match on validation after every epoch. On this machine's cores:

- plain Optuna: bench/peers/plain_optuna.py, in the style of optuna-examples' pytorch_simple.py
  (torch.nn.LSTM/GRU, a DataLoader, trial.report and should_prune with the quickstart's median pruner),
  one process on every core;
- Ray Tune: bench/peers/ray_tune.py, OptunaSearch with ASHA on that same script, one trial per core;
- sweep run --stack 1, --stack 4 (one worker on every core) and --workers 2.

Each row is one run, started in a fresh process on a fresh storage and timed from its start to its
last trial (imports, Ray's start and the fused kernel's load included): one measurement each, so
differences of a few percent are noise. The best value is each tool's own best trial.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SWEEP = str(Path(sys.executable).with_name("sweep"))


def write_split(folder: Path) -> tuple[str, str]:
    """The quickstart's rows (lengths 2-4, 80/20 stratified split, seed 0) as the tutorial's CSVs."""
    from digitsum.config import TrainConfig
    from digitsum.data import write_csv
    from digitsum.datasets import data_split

    train, val = data_split(TrainConfig(lengths="2-4", train_split_fraction=0.8, seed=0))
    paths = str(folder / "train.csv"), str(folder / "val.csv")
    write_csv(train, paths[0])
    write_csv(val, paths[1])
    return paths


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def peer(script: str, csvs: tuple[str, str], trials: int, epochs: int) -> tuple[float, dict]:
    seconds, out = timed(
        [sys.executable, str(HERE / "peers" / script), *csvs, "--trials", str(trials), "--epochs", str(epochs)]
    )
    return seconds, json.loads(out.strip().splitlines()[-1])


def sweep(folder: Path, name: str, trials: int, options: list[str]) -> tuple[float, dict]:
    import optuna

    storage = f"sqlite:///{folder}/{name}.db"
    seconds, _ = timed(
        [SWEEP, "run", "studies/quickstart.yaml", "--storage", storage, "--artifacts", str(folder / name),
         "--trials", str(trials), "--timeout", "1000000", *options]
    )  # fmt: skip
    study = optuna.load_study(study_name="quickstart", storage=storage)
    states = [t.state for t in study.trials]
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    return seconds, {"trials": len(states), "complete": complete, "pruned": len(states) - complete,
                     "best": study.best_value}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="the quickstart's n_trials")
    parser.add_argument("--quick", action="store_true", help="2 trials each, to check that every tool runs")
    args = parser.parse_args()
    trials = 2 if args.quick else args.trials
    epochs = 15  # the quickstart's train.n_epochs, which sweep run takes from the spec
    cores = os.cpu_count() or 1
    print(f"the quickstart's search, {trials} trials of {epochs} epochs, on {cores} cores; one run per row", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        csvs = write_split(folder)
        runs = [
            ("plain Optuna (pytorch_simple style)", lambda: peer("plain_optuna.py", csvs, trials, epochs)),
            ("Ray Tune (OptunaSearch + ASHA)", lambda: peer("ray_tune.py", csvs, trials, epochs)),
            ("sweep run --stack 1", lambda: sweep(folder, "stack1", trials, ["--stack", "1"])),
            ("sweep run --stack 4", lambda: sweep(folder, "stack4", trials, ["--stack", "4"])),
            ("sweep run --workers 2", lambda: sweep(folder, "workers2", trials, ["--workers", "2"])),
        ]
        for title, run in runs:
            if title.startswith("Ray") and importlib.util.find_spec("ray") is None:
                print(f"{title}: not run: ray is not installed in this venv (`make bench-peers` installs it)")
                continue
            seconds, result = run()
            rows.append((title, seconds, result))
            print(f"{title}: {seconds:.0f} s", flush=True)
    print(f"\n{'tool':38s} {'wall s':>7s} {'trials/hour':>11s} {'done/pruned':>11s} {'best val exact match':>21s}")
    for title, seconds, r in rows:
        counts = f"{r['complete']}/{r['pruned']}"
        print(f"{title:38s} {seconds:7.0f} {r['trials'] / seconds * 3600:11.0f} {counts:>11s} {r['best']:21.2%}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
