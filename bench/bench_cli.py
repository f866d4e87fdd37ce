"""How fast the `sweep` command answers: `--help`, `ls --help` and `ls` on a storage with 3 studies.

    .venv/bin/python bench/bench_cli.py [--runs 7] [--quick]

Each command is a fresh process, as a user runs it; the median of several runs is printed beside
the same-run reference of a bare interpreter and of `import torch` (what every command paid
before commands imported torch only when they use it). Targets: `--help` under 0.3 s, `ls` under 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = str(Path(sys.executable).with_name("sweep"))
TARGETS = {"sweep --help": 0.3, "sweep ls --help": 0.3, "sweep ls (3 studies)": 1.0}
SPEC = """name: bench
n_trials: 1
data: {lengths: [1, 2]}
fixed: {train.n_epochs: 1, train.device: cpu, model.embedding_dim: 8}
sampler: {type: random, seed: 1}
space: {model.hidden_size: {low: 8, high: 16}}
"""


def seconds(command: list[str], runs: int) -> float:
    """Median wall time of ``runs`` fresh processes."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_storage(folder: Path) -> str:
    """Three one-trial studies in one SQLite file."""
    url = f"sqlite:///{folder}/bench.db"
    (folder / "spec.yaml").write_text(SPEC)
    for name in ("a", "b", "c"):
        command = [SWEEP, "run", str(folder / "spec.yaml"), "--storage", url, "--name", name, "--threads", "1"]
        subprocess.run([*command, "--artifacts", str(folder / "ckpt")], check=True, capture_output=True)
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 runs each")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    with tempfile.TemporaryDirectory() as tmp:
        url = make_storage(Path(tmp))
        rows = {
            "python -c pass (reference)": seconds([sys.executable, "-c", "pass"], runs),
            "python -c 'import torch' (reference)": seconds([sys.executable, "-c", "import torch"], runs),
            "sweep --help": seconds([SWEEP, "--help"], runs),
            "sweep ls --help": seconds([SWEEP, "ls", "--help"], runs),
            "sweep ls (3 studies)": seconds([SWEEP, "ls", "--storage", url], runs),
        }
    print(f"{'command (median of ' + str(runs) + ' fresh processes)':44s} {'seconds':>8s} {'target':>8s}  met")
    for name, value in rows.items():
        target = TARGETS.get(name)
        verdict = ("yes" if value < target else "NO") if target else ""
        print(f"{name:44s} {value:8.2f} {f'< {target:g}' if target else '':>8s}  {verdict}")


if __name__ == "__main__":
    main()
