"""Sweep throughput: trials per minute with 1 worker x 2 threads vs 2 workers x 1 thread, and the
share of a run that is not training (storage, sampling, pruning checks, reporting, process start).

    .venv/bin/python bench/bench_sweep.py [--trials 16] [--epochs 15] [--quick]

Both runs use the same fixed small spec on a fresh SQLite file, through the real `sweep run` command:
a grid of 16 configurations and no pruner, so with 16 trials both runs train exactly the same models.
Trials run 15 epochs, as long as the quickstart's (~4 s each with the fused training step); with
much shorter trials the fixed costs per worker and per trial dominate (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

SPEC = """
name: bench-sweep
n_trials: {trials}
data: {{lengths: [2, 3, 4], val_fraction: 0.2}}
fixed: {{train.n_epochs: {epochs}, train.seed: 0, train.batch_size: 64}}
sampler: {{type: grid, seed: 5}}
pruner: {{type: none}}
space:
  model.model_type: {{choices: [lstm, gru]}}
  model.hidden_size: {{choices: [32, 64]}}
  train.learning_rate: {{choices: [0.002, 0.004, 0.006, 0.01]}}
"""
TARGET_SPEEDUP = 1.6
TARGET_OVERHEAD = 0.05


def run(workers: int, threads: int, trials: int, epochs: int, folder: Path) -> dict:
    folder.mkdir(parents=True)
    spec = folder / f"spec-{workers}.yaml"
    spec.write_text(SPEC.format(trials=trials, epochs=epochs))
    storage = f"sqlite:///{folder}/w{workers}.db"
    sweep = str(Path(sys.executable).with_name("sweep"))
    start = time.perf_counter()
    subprocess.run(
        [
            sweep,
            "run",
            str(spec),
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--storage",
            storage,
            "--artifacts",
            str(folder / f"ckpt{workers}"),
        ],
        check=True,
        cwd=folder,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name="bench-sweep", storage=storage)
    trials_done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    training = sum(t.user_attrs["seconds_per_epoch"] * t.user_attrs["epochs_run"] for t in trials_done)
    in_trials = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials_done)
    return {
        "wall": wall,
        "trials": len(trials_done),
        "per_minute": 60 * len(trials_done) / wall,
        "training": training,
        "in_trials": in_trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each set-up, alternated; the fastest counts")
    parser.add_argument("--quick", action="store_true", help="4 trials of 2 epochs, once")
    args = parser.parse_args()
    trials, epochs, repeats = (4, 2, 1) if args.quick else (args.trials, args.epochs, args.repeats)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ones, twos = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):  # alternated, so a slow spell of the machine hits both set-ups
            ones.append(run(1, 2, trials, epochs, Path(tmp) / f"one-{repeat}"))
            twos.append(run(2, 1, trials, epochs, Path(tmp) / f"two-{repeat}"))
    one = min(ones, key=lambda r: r["wall"])
    two = min(twos, key=lambda r: r["wall"])
    speedup = two["per_minute"] / one["per_minute"]
    # With one worker, everything that is not an epoch (fit's own set-up included) is overhead.
    overhead = 1 - one["training"] / one["wall"]
    in_trial = 1 - one["training"] / one["in_trials"]
    walls = lambda runs: ", ".join(f"{r['wall']:.1f}" for r in runs)  # noqa: E731
    print(
        f"sweep benchmark: {trials} trials of {epochs} epochs (LSTM/GRU hidden 32-64, lengths 2-4), SQLite; "
        f"fastest of {repeats} run(s) each"
    )
    print(f"{'what':44s} {'measured':>12s} {'target':>10s}")
    print(f"{'1 worker x 2 threads, trials/min':44s} {one['per_minute']:12.1f} {'':>10s}")
    print(f"{'2 workers x 1 thread, trials/min':44s} {two['per_minute']:12.1f} {'':>10s}")
    print(f"{'speed-up of 2 workers over 1':44s} {speedup:11.2f}x {f'>= {TARGET_SPEEDUP}x':>10s}")
    print(
        f"{'sweep overhead inside trials (1 worker)':44s} {100 * in_trial:11.1f}% "
        f"{f'< {100 * TARGET_OVERHEAD:.0f}%':>10s}"
    )
    print(f"{'all non-training time, process start incl.':44s} {100 * overhead:11.1f}% {'':>10s}")
    print(f"wall seconds per run: 1 worker {walls(ones)}; 2 workers {walls(twos)}")


if __name__ == "__main__":
    main()
