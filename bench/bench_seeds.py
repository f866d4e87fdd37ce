"""K members in one computation against one (digitsum.train.fit, K = 1, 3, 8): the training time per K,
its ratio to K = 1, the arithmetic it achieves (GFLOP/s) and that as a share of this machine's peak,
and peak memory, per model type, at batch 32 on lengths 2-4.

    .venv/bin/python bench/bench_seeds.py [--epochs 3] [--threads 2] [--quick] [--ks 1,3,8]

Each (model, K) runs in a fresh process (so its peak resident memory is its own): a warm-up epoch,
then ``--repeats`` runs of ``--epochs`` epochs of K seeds of one config (the median counts: on a shared
machine single runs vary by 20% or more), timed by fit itself: the training passes alone
(``train_seconds``, what the targets are about) and the whole epochs with their scoring. The members
are seeds 0..K-1; members that differ in hyperparameters run the same computation.

GFLOP/s counts the GEMM arithmetic a training step needs, per position of the padded batch: the
recurrent product, the lrnn's input-dependent transition and the head, each multiply-add 2 FLOPs,
three times (forward, and the backward pass's two products); the elementwise gates are not counted.
The peak is measured here, in the same run: a 2048 x 2048 float32 GEMM on all the threads (torch's
BLAS; on CUDA, the GPU's), the best the machine reaches on large products. Issue 29's targets, on 2
cores: for LSTM 64 and GRU 64, K = 3 at most 1.6x K = 1, and K = 8 at most 3x.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODELS = (("lstm", 64), ("gru", 64), ("rnn", 64), ("lrnn", 32))
TARGETS = {("lstm", 3): 1.6, ("lstm", 8): 3.0, ("gru", 3): 1.6, ("gru", 8): 3.0}
HEADS = {"lrnn": {"head_size": 256, "embedding_dim": 0}}  # the counter recipe's model (studies/recipes/counter.yaml)
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def config_of(model_type: str, hidden: int, k: int, epochs: int, threads: int, device: str) -> Any:
    from digitsum.config import Config, ModelConfig, TrainConfig

    return Config(
        ModelConfig(model_type=model_type, hidden_size=hidden, **HEADS.get(model_type, {})),
        TrainConfig(lengths="2-4", batch_size=32, n_epochs=epochs, device=device, num_threads=threads, n_seeds=k),
    )


def step_flops(config: Any, positions: int) -> float:
    """The GEMM arithmetic of training on ``positions`` (rows x padded width) of one member."""
    from digitsum.data import N_INPUT_TOKENS, N_OUTPUT_TOKENS

    model = config.model
    h = model.hidden_size
    if model.model_type == "lrnn":
        recurrent = h * (model.embedding_dim or N_INPUT_TOKENS) * h
    else:
        recurrent = GATES[model.model_type] * h * h * model.num_layers
    head = h * model.head_size + model.head_size * N_OUTPUT_TOKENS if model.head_size else h * N_OUTPUT_TOKENS
    return 3 * 2 * (recurrent + head) * positions


def one(model_type: str, hidden: int, k: int, epochs: int, threads: int, device: str, repeats: int) -> dict:
    """Train one configuration here ``repeats`` times; the median seconds, FLOPs and peak memory (resident,
    and the GPU's where it ran there)."""
    import statistics

    import torch

    from digitsum.members import seed_members
    from digitsum.train import fit

    torch.set_num_threads(threads)
    fit(seed_members(config_of(model_type, hidden, k, 1, threads, device)))  # the kernel, scratch, first calls
    config = config_of(model_type, hidden, k, epochs, threads, device)
    members = seed_members(config)
    wall, train = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        results = fit(members)
        wall.append(time.perf_counter() - start)
        train.append(sum(e.train_seconds for e in results[0].history))
    seconds, train_seconds = statistics.median(wall), statistics.median(train)
    width = max(len(str(x)) for x in members[0].train.x) + 1 + 2  # digits, EOS, the answer's two digits
    flops = k * epochs * step_flops(config, len(members[0].train) * width)
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() and device != "cpu" else None
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "train_seconds": train_seconds, "flops": flops, "peak_mb": peak_mb, "gpu_mb": gpu_mb}


def peak_gflops(threads: int, device: str) -> float:
    """The device's float32 GEMM rate (on the CPU, on all the threads): the best of a few 2048 x 2048 products."""
    import torch

    torch.set_num_threads(threads)
    where = torch.device("cuda" if device.startswith("cuda") else "cpu")
    a, b = torch.randn(2048, 2048, device=where), torch.randn(2048, 2048, device=where)
    out = torch.empty(2048, 2048, device=where)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        if where.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (model, K); the median counts")
    parser.add_argument("--quick", action="store_true", help="one epoch, K in 1 and 3, one run: a smoke run")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (bench/gpu_check.sh)")
    parser.add_argument("--ks", default="1,3,8", help="the K to time, K=1 first (default 1,3,8)")
    parser.add_argument("--models", default=",".join(m for m, _ in MODELS), help="model types to time")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "HIDDEN", "K"), help=argparse.SUPPRESS)
    parser.add_argument("--peak", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        print(json.dumps(peak_gflops(args.threads, args.device)))
        return
    if args.one:
        model, hidden, k = args.one
        print(json.dumps(one(model, int(hidden), int(k), args.epochs, args.threads, args.device, args.repeats)))
        return
    epochs, ks = (1, (1, 3)) if args.quick else (args.epochs, tuple(int(k) for k in args.ks.split(",")))
    repeats = 1 if args.quick else args.repeats
    peak = json.loads(_child(["--peak", "--threads", str(args.threads), "--device", args.device]))
    print(
        f"K members in one computation: lengths 2-4, batch 32, {epochs} epoch(s), {args.threads} thread(s), "
        f"{args.device}; the median of {repeats} run(s) each. Peak: {peak:.0f} GFLOP/s (a 2048 x 2048 GEMM on "
        f"{args.threads} thread(s))"
    )
    print(
        f"{'model':8s} {'K':>3s} {'train s':>8s} {'vs K=1':>7s} {'target':>7s} {'GFLOP/s':>8s} {'of peak':>8s} "
        f"{'epoch s':>8s} {'vs K=1':>7s} {'peak MB':>8s} {'GPU MB':>7s}"
    )
    wanted = args.models.split(",")
    for model, hidden in MODELS:
        if model not in wanted:
            continue
        base: dict | None = None
        for k in ks:
            options = ["--epochs", str(epochs), "--device", args.device, "--threads", str(args.threads)]
            found = json.loads(_child(["--one", model, str(hidden), str(k), *options, "--repeats", str(repeats)]))
            base = base or found
            rate = found["flops"] / found["train_seconds"] / 1e9
            target = f"<= {TARGETS[model, k]:.1f}x" if (model, k) in TARGETS else ""
            gpu = f"{found['gpu_mb']:7.0f}" if found["gpu_mb"] is not None else f"{'-':>7s}"
            print(
                f"{f'{model} {hidden}':8s} {k:3d} {found['train_seconds']:8.2f} "
                f"{found['train_seconds'] / base['train_seconds']:6.2f}x {target:>7s} {rate:8.1f} {rate / peak:7.1%} "
                f"{found['seconds'] / epochs:8.2f} {found['seconds'] / base['seconds']:6.2f}x "
                f"{found['peak_mb']:8.0f} {gpu}",
                flush=True,
            )


def _child(arguments: list[str]) -> str:
    out = subprocess.run([sys.executable, __file__, *arguments], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
