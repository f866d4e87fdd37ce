"""The seed table of docs/results.md (Seeds inside the search): in-range exact match per input length
of every seed of one or more `train.n_seeds` run folders, as mean +- sd, worst seed and each seed.

    .venv/bin/python docs/seed-table.py data/eval.csv runs/counter-seeds runs/counter-fresh

Each run folder is scored with `sweep evaluate`'s own function (sweep.api.evaluate_seeds: every
seed at once, in range by each seed's own training rows). Prints a Markdown table.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweep import api


def row(run_dir: str, data_csv: str) -> tuple[list[str], list[int]]:
    """One run folder's cells (one per input length) and its seeds."""
    scored = api.evaluate_seeds(run_dir, data_csv, "cpu")
    inside = [a.in_range for a in scored.accuracies if a.in_range is not None]
    assert len(inside) == len(scored.accuracies), "every seed scores in-range rows"
    cells = []
    for n in sorted(inside[0].by_length):
        values = [a.by_length[n] for a in inside]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        each = ", ".join(f"{v:.2%}" for v in values)
        cells.append(f"{statistics.fmean(values):.2%} +- {100 * sd:.2f}, worst {min(values):.2%} ({each})")
    return cells, scored.seeds


def main() -> None:
    data_csv, *runs = sys.argv[1:]
    first = api.evaluate_seeds(runs[0], data_csv, "cpu").accuracies[0].in_range
    assert first is not None
    lengths = sorted(first.by_length)
    print("| run (seeds) | " + " | ".join(f"{n} digits, in range" for n in lengths) + " |")
    print("| --- " * (len(lengths) + 1) + "|")
    for run_dir in runs:
        cells, seeds = row(run_dir, data_csv)
        print(f"| {Path(run_dir).name} ({', '.join(map(str, seeds))}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
