"""Trials per hour with `--stack` 1, 2, 4 and 8: a learning-rate by weight-decay search at a fixed
architecture (GRU 48, batch 32, lengths 2-4, 10 epochs; random sampler, no pruner, so every run trains
the same number of epochs), one worker on 2 threads, SQLite.

    .venv/bin/python bench/bench_stack.py [--trials 16] [--rounds 2] [--quick]

Each run is a fresh study in a fresh process (`sweep.api.plan` and `execute`: the worker's warm-up, the
asks and tells, every trial's records and checkpoint), timed from the plan to the last trial; the stack
sizes run in interleaved rounds (1, 2, 4, 8, then again) and the fastest of each counts. Issue 30's
target: --stack 4 at least 1.6x the trials per hour of --stack 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

STACKS = (1, 2, 4, 8)
TARGET = 1.6  # --stack 4 against --stack 1


def spec(trials: int, epochs: int) -> dict:
    return {
        "name": "stack-bench",
        "n_trials": trials,
        "data": {"lengths": [2, 3, 4]},
        "fixed": {
            "model.model_type": "gru", "model.hidden_size": 48, "train.batch_size": 32, "train.n_epochs": epochs,
        },
        "sampler": {"type": "random", "seed": 7},
        "pruner": {"type": "none"},
        "space": {
            "train.learning_rate": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
            "train.weight_decay": {"low": 1.0e-5, "high": 1.0e-1, "log": True},
        },
    }  # fmt: skip


def one(stack: int, trials: int, epochs: int) -> float:
    """Run the search here on a fresh storage; seconds from the plan to the last trial."""
    from sweep import api

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.yaml"
        path.write_text(yaml.safe_dump(spec(trials, epochs)))
        start = time.perf_counter()
        plan, _ = api.plan(path, storage=f"sqlite:///{folder}/s.db", artifacts=f"{folder}/ckpt", stack=stack, threads=2)
        api.execute(plan)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs of each stack size; the fastest counts")
    parser.add_argument("--quick", action="store_true", help="8 trials of 2 epochs, stacks 1 and 4, one round")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    trials, epochs, stacks, rounds = (
        (8, 2, (1, 4), 1) if args.quick else (args.trials, args.epochs, STACKS, args.rounds)
    )
    if args.one:
        print(json.dumps(one(args.one, trials, epochs)))
        return
    print(
        f"stacked trials: GRU 48, batch 32, lengths 2-4, {epochs} epochs, {trials} trials of a learning-rate x "
        f"weight-decay search, 1 worker x 2 threads; the fastest of {rounds} interleaved round(s)"
    )
    best: dict[int, float] = {}
    for _ in range(rounds):
        for stack in stacks:
            command = [sys.executable, __file__, "--one", str(stack), "--trials", str(trials), "--epochs", str(epochs)]
            out = subprocess.run(command, check=True, capture_output=True, text=True)
            seconds = json.loads(out.stdout.strip().splitlines()[-1])
            best[stack] = min(best.get(stack, seconds), seconds)
    print(f"{'stack':>5s} {'seconds':>8s} {'trials/hour':>12s} {'vs stack 1':>11s} {'target':>8s}")
    for stack in stacks:
        rate = trials / best[stack] * 3600
        gain = best[1] / best[stack]
        target = f">= {TARGET:.1f}x" if stack == 4 else ""
        print(f"{stack:5d} {best[stack]:8.1f} {rate:12,.0f} {gain:10.2f}x {target:>8s}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
