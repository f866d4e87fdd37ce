"""K members in one computation against one (digitsum.train.fit, K = 1, 3, 8): the training time per K,
its ratio to K = 1, the arithmetic it achieves (GFLOP/s) and that as a share of this machine's peak,
and peak memory, per model type, at batch 32 on lengths 2-4.

    .venv/bin/python bench/bench_seeds.py [--epochs 3] [--threads 2] [--rounds 3] [--quick] [--ks 1,3,8]

Each model's K's are timed in one process, in interleaved rounds (K = 1, 3, 8, then again; the median
of ``--rounds`` counts): on a shared machine single runs vary by 20% or more, and a ratio of runs made
minutes apart measures the machine as much as the code. Each round trains ``--epochs`` epochs of K seeds
of one config, after a warm-up epoch of each K, timed by fit itself: the training passes alone
(``train_seconds``, what the targets are about) and the whole epochs with their scoring. Each (model, K)
then runs once more in a fresh process for its peak resident memory. The members are seeds 0..K-1;
members that differ in hyperparameters run the same computation.

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


def timings(model_type: str, hidden: int, ks: list[int], epochs: int, threads: int, device: str, rounds: int) -> dict:
    """Every K of one model here, in rounds (K = 1, 3, 8, then again), so that each ratio compares runs of
    the same moments of a machine whose speed drifts; per K the medians over the rounds, and the FLOPs."""
    import statistics

    import torch

    from digitsum.members import seed_members
    from digitsum.train import fit

    torch.set_num_threads(threads)
    members = {k: seed_members(config_of(model_type, hidden, k, epochs, threads, device)) for k in ks}
    for k in ks:  # the kernel, its scratch buffers, each shape's first calls
        fit(seed_members(config_of(model_type, hidden, k, 1, threads, device)))
    wall: dict[int, list[float]] = {k: [] for k in ks}
    train: dict[int, list[float]] = {k: [] for k in ks}
    for _ in range(rounds):
        for k in ks:
            start = time.perf_counter()
            results = fit(members[k])
            wall[k].append(time.perf_counter() - start)
            train[k].append(sum(e.train_seconds for e in results[0].history))
    found = {}
    for k in ks:
        first = members[k][0]
        width = max(len(str(x)) for x in first.train.x) + 1 + 2  # digits, EOS, the answer's two digits
        flops = k * epochs * step_flops(first.config, len(first.train) * width)
        found[str(k)] = {
            "seconds": statistics.median(wall[k]),
            "train_seconds": statistics.median(train[k]),
            "flops": flops,
        }
    return found


def memory(model_type: str, hidden: int, k: int, epochs: int, threads: int, device: str) -> dict:
    """One run of K members in this fresh process: its peak memory (resident, and the GPU's where it ran there)."""
    import torch

    from digitsum.members import seed_members
    from digitsum.train import fit

    torch.set_num_threads(threads)
    fit(seed_members(config_of(model_type, hidden, k, epochs, threads, device)))
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() and device != "cpu" else None
    return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "gpu_mb": gpu_mb}


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
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each K, interleaved; the median counts")
    parser.add_argument("--quick", action="store_true", help="one epoch, K in 1 and 3, one round: a smoke run")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (bench/gpu_check.sh)")
    parser.add_argument("--ks", default="1,3,8", help="the K to time, K=1 first (default 1,3,8)")
    parser.add_argument("--models", default=",".join(m for m, _ in MODELS), help="model types to time")
    parser.add_argument("--timings", nargs=2, metavar=("MODEL", "HIDDEN"), help=argparse.SUPPRESS)
    parser.add_argument("--memory", nargs=3, metavar=("MODEL", "HIDDEN", "K"), help=argparse.SUPPRESS)
    parser.add_argument("--peak", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    epochs, ks = (1, [1, 3]) if args.quick else (args.epochs, [int(k) for k in args.ks.split(",")])
    rounds = 1 if args.quick else args.rounds
    if args.peak:
        print(json.dumps(peak_gflops(args.threads, args.device)))
    elif args.timings:
        model, hidden = args.timings
        print(json.dumps(timings(model, int(hidden), ks, epochs, args.threads, args.device, rounds)))
    elif args.memory:
        model, hidden, k = args.memory
        print(json.dumps(memory(model, int(hidden), int(k), epochs, args.threads, args.device)))
    else:
        report(args, epochs, ks, rounds)


def report(args: argparse.Namespace, epochs: int, ks: list[int], rounds: int) -> None:
    common = ["--epochs", str(epochs), "--threads", str(args.threads), "--device", args.device]
    peak = json.loads(_child(["--peak", *common]))
    print(
        f"K members in one computation: lengths 2-4, batch 32, {epochs} epoch(s), {args.threads} thread(s), "
        f"{args.device}; the median of {rounds} interleaved round(s). Peak: {peak:.0f} GFLOP/s (a 2048 x 2048 "
        f"GEMM on {args.threads} thread(s))"
    )
    print(
        f"{'model':8s} {'K':>3s} {'train s':>8s} {'vs K=1':>7s} {'target':>7s} {'GFLOP/s':>8s} {'of peak':>8s} "
        f"{'epoch s':>8s} {'vs K=1':>7s} {'peak MB':>8s} {'GPU MB':>7s}"
    )
    wanted = args.models.split(",")
    for model, hidden in MODELS:
        if model not in wanted:
            continue
        found = json.loads(_child(["--timings", model, str(hidden), *common, "--ks", ",".join(map(str, ks)),
                                   "--rounds", str(rounds)]))  # fmt: skip
        base = found[str(ks[0])]
        for k in ks:
            times = found[str(k)]
            used = json.loads(_child(["--memory", model, str(hidden), str(k), *common]))
            rate = times["flops"] / times["train_seconds"] / 1e9
            target = f"<= {TARGETS[model, k]:.1f}x" if (model, k) in TARGETS else ""
            gpu = f"{used['gpu_mb']:7.0f}" if used["gpu_mb"] is not None else f"{'-':>7s}"
            print(
                f"{f'{model} {hidden}':8s} {k:3d} {times['train_seconds']:8.2f} "
                f"{times['train_seconds'] / base['train_seconds']:6.2f}x {target:>7s} {rate:8.1f} {rate / peak:7.1%} "
                f"{times['seconds'] / epochs:8.2f} {times['seconds'] / base['seconds']:6.2f}x "
                f"{used['peak_mb']:8.0f} {gpu}",
                flush=True,
            )


def _child(arguments: list[str]) -> str:
    out = subprocess.run([sys.executable, __file__, *arguments], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
