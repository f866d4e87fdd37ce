"""Time and memory to score 5,000 in-range rows at 20, 100 and 1,000 digits (`sweep evaluate` on long
inputs): the counter's model (linear RNN, 24 units, a 256-unit head; its weights do not change the
cost), one model and 5 seeds at once, each length in a fresh process.

    .venv/bin/python bench/bench_long.py [--rows 5000] [--lengths 20,100,1000]

Peak memory is the process's peak resident set (ru_maxrss) minus its resident set before the rows were
made, so the rows, their encoding, the decoding and scoring count; the time covers drawing the rows
(`digitsum.in_range`), scoring them (`digitsum.decode.score_models`) and both together.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def one(length: int, rows: int, models: int) -> dict:
    import torch

    from digitsum.config import ModelConfig
    from digitsum.data import make_in_range_rows
    from digitsum.decode import score_models
    from digitsum.model import DigitSumModel

    torch.set_num_threads(2)
    config = ModelConfig(model_type="lrnn", hidden_size=24, head_size=256, embedding_dim=0)
    nets = []
    for seed in range(models):
        torch.manual_seed(seed)
        nets.append(DigitSumModel(config).eval())
    score_models(nets, make_in_range_rows([5], range(37), 64, 0), [None] * models)  # warm up
    before = rss_mb()
    start = time.perf_counter()
    drawn = make_in_range_rows([length], range(37), rows, seed=1)
    made = time.perf_counter()
    score_models(nets, drawn, [None] * models)
    done = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"draw_s": made - start, "score_s": done - made, "peak_mb": peak - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--lengths", default="20,100,1000")
    parser.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.rows, args.one[1])))
        return
    print(f"{args.rows:,} in-range rows per length, lrnn 24 with a 256-unit head, 2 threads; one run per row")
    print(f"{'digits':>7s} {'models':>6s} {'draw s':>7s} {'score s':>8s} {'rows/s':>8s} {'peak MB over start':>19s}")
    for length in map(int, args.lengths.split(",")):
        for models in (1, 5):
            command = [sys.executable, __file__, "--rows", str(args.rows), "--one", str(length), str(models)]
            out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rate = args.rows * models / r["score_s"]
            print(f"{length:7d} {models:6d} {r['draw_s']:7.2f} {r['score_s']:8.2f} {rate:8,.0f} {r['peak_mb']:19.0f}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
