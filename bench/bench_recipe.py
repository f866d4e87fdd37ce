"""How long one training run of each length-generalization recipe takes, as users run it.

    .venv/bin/python bench/bench_recipe.py [--quick] [--seed 0]

For each `studies/recipes/*.yaml`, one `sweep train --config RECIPE train.seed=S` process, timed
from start to exit (data, training, every epoch's validation decode, the checkpoint), beside the
reference measured in the same run: `sweep train` with its defaults (LSTM 128, lengths 2-4, 40
epochs). docs/results.md promises each recipe in under 10 minutes on 2 cores; this prints whether it
was, and the ratio to the reference. One measurement each (a training run is minutes long).
--quick trains 2 epochs of each, as a smoke run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWEEP = str(Path(sys.executable).with_name("sweep"))
BUDGET_SECONDS = 600


def timed_train(args: list[str], log_path: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [SWEEP, "train", *args, f"train.log_path={log_path}", "--overwrite"], check=True, capture_output=True
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs of each, a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    epochs = ["train.n_epochs=2"] if args.quick else []
    recipes = sorted((ROOT / "studies" / "recipes").glob("*.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        reference = timed_train(["train.run_name=reference", *epochs], tmp)
        print(f"reference: sweep train (defaults{', 2 epochs' if epochs else ''}): {reference:.1f} s")
        print(f"{'recipe':<28} {'seconds':>8} {'x reference':>12}  under {BUDGET_SECONDS // 60} min")
        for recipe in recipes:
            seconds = timed_train(
                ["--config", str(recipe), f"train.seed={args.seed}", f"train.run_name={recipe.stem}", *epochs], tmp
            )
            verdict = "yes" if seconds < BUDGET_SECONDS else f"NO (+{seconds - BUDGET_SECONDS:.0f} s)"
            print(f"{recipe.stem:<28} {seconds:>8.1f} {seconds / reference:>12.2f}  {verdict}")


if __name__ == "__main__":
    main()
