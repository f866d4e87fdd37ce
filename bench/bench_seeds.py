"""K seeds in one stacked computation (digitsum.seeds.fit_seeds) against one seed (digitsum.train.fit):
the time of a trial and its peak memory, per model type, at batch 32 on lengths 2-4.

    .venv/bin/python bench/bench_seeds.py [--epochs 3] [--threads 2] [--quick]

Each (model, K) runs in a fresh process (so its peak resident memory is its own), timed inside it
from the first training step to the last epoch's scores, after a warm-up epoch. K=1 is `fit` as a
trial runs it: the fused C++ step for LSTM and GRU, torch.nn for the plain RNN and the lrnn (the
counter recipe's model). K=3 and K=8 go through `fit_seeds`, which has the torch.nn path only so far
(the stacked cells of digitsum/stacked.py), so for LSTM and GRU the ratio compares the stacked
torch.nn path with the fused one-model kernel. Issue 23's targets: K=3 at most 1.6x K=1 on the fused
path, 2x on torch.nn.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

MODELS = (("rnn", 64), ("lrnn", 32), ("lstm", 64), ("gru", 64))
TARGETS = {"rnn": 2.0, "lrnn": 2.0, "lstm": 1.6, "gru": 1.6}
HEADS = {"lrnn": {"head_size": 256, "embedding_dim": 0}}  # the counter recipe's model (studies/recipes/counter.yaml)


def one(model_type: str, hidden: int, k: int, epochs: int, threads: int, device: str) -> dict:
    """Train one configuration here; seconds and peak memory (resident, and the GPU's where it ran there)."""
    import torch

    from digitsum.config import Config, ModelConfig, TrainConfig
    from digitsum.datasets import data_split
    from digitsum.seeds import fit_seeds
    from digitsum.train import fit

    torch.set_num_threads(threads)
    config = Config(
        ModelConfig(model_type=model_type, hidden_size=hidden, **HEADS.get(model_type, {})),
        TrainConfig(lengths="2-4", batch_size=32, n_epochs=epochs, device=device, num_threads=threads),
    )
    warm = Config(config.model, TrainConfig(**{**config.train.__dict__, "n_epochs": 1}))
    seeds = list(range(k))
    if k == 1:
        fit(warm, *data_split(warm.train))
        start = time.perf_counter()
        fit(config, *data_split(config.train))
    else:
        fit_seeds(warm, seeds)
        start = time.perf_counter()
        fit_seeds(config, seeds)
    seconds = time.perf_counter() - start
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() and device != "cpu" else None
    return {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "gpu_mb": gpu_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one epoch, K in 1 and 3: a smoke run")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (bench/gpu_check.sh)")
    parser.add_argument("--ks", default="1,3,8", help="the K to time, K=1 first (default 1,3,8)")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "HIDDEN", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, hidden, k = args.one
        print(json.dumps(one(model, int(hidden), int(k), args.epochs, args.threads, args.device)))
        return
    epochs, ks = (1, (1, 3)) if args.quick else (args.epochs, tuple(int(k) for k in args.ks.split(",")))
    print(f"one trial: lengths 2-4, batch 32, {epochs} epoch(s), {args.threads} thread(s), {args.device}; one run each")
    print(
        f"{'model':10s} {'K':>3s} {'seconds':>8s} {'per seed':>9s} {'vs K=1':>7s} {'target':>7s} {'peak MB':>8s} "
        f"{'GPU MB':>7s}"
    )
    for model, hidden in MODELS:
        base = None
        for k in ks:
            command = [sys.executable, __file__, "--one", model, str(hidden), str(k), "--epochs", str(epochs)]
            command += ["--device", args.device]
            out = subprocess.run([*command, "--threads", str(args.threads)], check=True, capture_output=True, text=True)
            found = json.loads(out.stdout.strip().splitlines()[-1])
            base = base or found["seconds"]
            ratio = found["seconds"] / base
            target = f"<= {TARGETS[model]:.1f}x" if k == 3 else ""
            gpu = f"{found['gpu_mb']:7.0f}" if found["gpu_mb"] is not None else f"{'-':>7s}"
            print(
                f"{f'{model} {hidden}':10s} {k:3d} {found['seconds']:8.2f} {found['seconds'] / k:9.2f} "
                f"{ratio:6.2f}x {target:>7s} {found['peak_mb']:8.0f} {gpu}"
            )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
