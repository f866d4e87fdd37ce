"""Every benchmark, one after the other, each printing its own table (`make bench`).

    .venv/bin/python bench/run_all.py [--quick]

Run it on a quiet machine: a second busy process halves every figure on 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SWEEP = str(Path(sys.executable).with_name("sweep"))


def run(title: str, command: list[str]) -> None:
    print(f"\n=== {title} ===", flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"({time.perf_counter() - start:.0f}s)", flush=True)


def peak_memory_of_training(epochs: int) -> None:
    """Peak resident memory of one `sweep train` process (default model, lengths 2-4)."""
    print("\n=== peak memory of a training run ===", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [SWEEP, "train", f"train.n_epochs={epochs}", f"train.log_path={tmp}"], check=True, capture_output=True
        )
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB
    print(f"sweep train (LSTM 128, lengths 2-4, {epochs} epochs): peak RSS {peak_mb:.0f} MB, {seconds:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run of every benchmark")
    args = parser.parse_args()
    quick = ["--quick"] if args.quick else []
    start = time.perf_counter()
    peak_memory_of_training(2 if args.quick else 10)
    run("cli: how fast sweep answers", [sys.executable, str(HERE / "bench_cli.py"), *quick])
    run(
        "core: training, decoding, evaluation vs the tutorial-style reference",
        [sys.executable, str(HERE / "bench_core.py"), *quick],
    )
    run("sweep: trials per minute, 1 vs 2 workers, overhead", [sys.executable, str(HERE / "bench_sweep.py"), *quick])
    run(
        "recipe: one training run of each length-generalization recipe",
        [sys.executable, str(HERE / "bench_recipe.py"), *quick],
    )
    run(
        "scale: cost per trial over 10,000 trials (SQLite) and 2,000 on 8 workers (PostgreSQL), ours vs bare Optuna",
        [sys.executable, str(HERE / "bench_scale.py"), *quick],
    )
    for objectives in ("1", "3"):
        run(
            f"report: 500 trials, {objectives} objective(s)",
            [
                sys.executable,
                str(HERE / "bench_report.py"),
                "--objectives",
                objectives,
                *(["--trials", "100"] if args.quick else []),
            ],
        )
    run(
        "seeds: K = 1, 3, 8 members in one computation (time ratio, GFLOP/s and share of peak, memory), per model type",
        [sys.executable, str(HERE / "bench_seeds.py"), *quick],
    )
    run(
        "stack: trials per hour with --stack 1, 2, 4, 8 (GRU 48, a learning-rate x weight-decay search)",
        [sys.executable, str(HERE / "bench_stack.py"), *quick],
    )
    run(
        "stop rule: compare-cost.yaml to its budget, then with stop: (trials saved, hypervolume reached)",
        [sys.executable, str(HERE / "bench_stop.py"), *quick],
    )
    print(f"\nall benchmarks: {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
