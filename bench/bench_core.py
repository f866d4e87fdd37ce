"""Benchmark of the digitsum core against the tutorial-style reference (bench/baseline.py).

    .venv/bin/python bench/bench_core.py [--threads 2] [--quick] [--repeats 3]

On lengths 2-4 (all 11,100 strings, stratified 80/20 split with seed 0) it measures:

1. For LSTM hidden 64 and 128 at batch 32 and 256: one training pass of the engine with one member
   (digitsum.train's epoch, with fit's optimizer, schedule and clipping, on the fused training step as
   fit uses it; at LSTM 64, batch 32 also through torch's own LSTM op, as with train.fused=false, and a
   GRU 64 both ways), the unrolled accuracy check on the validation split (digitsum.decode.accuracy)
   and the validation-loss pass (digitsum.decode.losses).
2. The reference at LSTM 64, batch 32: its training pass, its validation-loss pass and its per-row
   accuracy check. The per-row check runs on weights copied from our trained LSTM 64 model (our
   embedding folded into the one-hot input weights), so both checks do the same work on the same
   function and must agree on the exact match.
3. Ratios for that configuration, and the time to decode all 100,000 five-digit strings (ours
   measured; the reference's extrapolated from a seeded random sample of them).

Each time is the median of a few repeats after warm-up runs (time.perf_counter). Training repeats
continue training the same model, as consecutive epochs would. The full run should take about a
minute on a quiet 2-core machine (an estimate from the quick run; busy machines are far slower);
--quick (one repeat, no training warm-up) is a smoke run of ~15-20 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline

from digitsum.config import Config, ModelConfig, TrainConfig
from digitsum.data import Rows, encode, make_rows, stratified_split
from digitsum.decode import accuracy, losses
from digitsum.members import Member
from digitsum.model import DigitSumModel
from digitsum.train import _Run

HIDDEN_SIZES = (64, 128)
BATCH_SIZES = (32, 256)
REFERENCE = (64, 32)  # (hidden, batch) compared with the baseline
TARGET_TRAIN = 5.0  # our training pass vs the reference's, at least this many times faster
TARGET_CHECK = 60.0  # our accuracy check vs the reference's per-row check
TARGET_DECODE_5 = 1.0  # seconds to decode all 100,000 five-digit strings, "about" this
TUTORIAL_DECODE_5 = "20-50 s"  # what the tutorial's per-row test took for them


def timed(fn: Callable[[], object], warmup: int, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls after `warmup` calls, and the last call's result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(threads: int) -> list[str]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [
        f"cpu:     {cpu_model()}",
        f"cores:   {os.cpu_count()} logical, {usable} usable by this process; load average {load}",
        f"torch:   {torch.__version__} (python {platform.python_version()}), "
        f"threads {torch.get_num_threads()} (--threads {threads}), flush denormal on",
    ]
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5 * (usable or 1):
        lines.append("warning: the machine is busy (load average above half its cores); timings will be noisy")
    return lines


class Ours:
    """One configuration set up exactly as digitsum.train.fit sets it up: one member of the engine."""

    def __init__(
        self, hidden: int, batch: int, train: Rows, val: Rows, fused: bool = True, model_type: str = "lstm",
        device: str = "cpu",
    ):  # fmt: skip
        config = Config(
            ModelConfig(model_type=model_type, hidden_size=hidden),
            TrainConfig(batch_size=batch, seed=0, fused=fused, device=device),
        )
        self.run = _Run.start([Member(config, train, val)], None)
        self.val = self.run.vals[0]
        self.epoch = 0

    @property
    def model(self) -> DigitSumModel:
        return self.run.stacked.unstack(0)

    def train_pass(self) -> float:
        self.epoch += 1
        return self.run._train(self.epoch)[0]

    def check(self, data=None):
        return accuracy(self.run.stacked, self.val if data is None else data.to(self.val.inputs.device))

    def val_loss(self) -> float:
        return losses(self.run.stacked, [self.val])[0]


def reference_copy(model: DigitSumModel) -> baseline.TutorialModel:
    """The baseline's one-hot LSTM computing the same function as our model (LSTM, one layer)."""
    config = model.config
    assert config.model_type == "lstm" and config.num_layers == 1
    ref = baseline.TutorialModel(config.hidden_size)
    with torch.no_grad():
        w_ih = model.rnn.weight_ih_l0
        if model.embedding is not None:  # one_hot(t) @ (W_ih E^T)^T == W_ih @ E[t]
            w_ih = w_ih @ model.embedding.weight.T
        ref.lstm.weight_ih_l0.copy_(w_ih)
        ref.lstm.weight_hh_l0.copy_(model.rnn.weight_hh_l0)
        ref.lstm.bias_ih_l0.copy_(model.rnn.bias_ih_l0)
        ref.lstm.bias_hh_l0.copy_(model.rnn.bias_hh_l0)
        ref.head.weight.copy_(model.head.weight)
        ref.head.bias.copy_(model.head.bias)
    return ref.eval()


def fmt_s(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def fmt_rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}"


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list) -> str:
        cells = enumerate(zip(r, widths, strict=True))
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in cells)

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: one repeat, no training warm-up (~20 s)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per measurement (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="where our core runs (cuda: part 1 and the 5-digit decode only; the reference is the tutorial's CPU code)",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as fit does
    repeats = args.repeats or (1 if args.quick else 3)
    train_warmup = 0 if args.quick else 1
    sample_5 = 500 if args.quick else 5000  # reference rows decoded per row to extrapolate 100,000

    print("digitsum core benchmark" + (" (--quick: one repeat, numbers are rough)" if args.quick else ""))
    for line in machine_lines(args.threads):
        print(line)

    rows = make_rows([2, 3, 4])
    train_index, val_index = stratified_split(rows, 0.8, seed=0)
    train_rows, val_rows = rows.take(train_index), rows.take(val_index)
    train, val = encode(train_rows), encode(val_rows)
    n_train, n_val = len(train), len(val)
    print(
        f"data:    lengths 2-4, {len(rows):,} rows -> {n_train:,} train / {n_val:,} validation; "
        f"median of {repeats} repeat(s)\n"
    )

    # 1. Our core, four configurations -------------------------------------------------------
    results = {}
    table = []
    for hidden in HIDDEN_SIZES:
        for batch in BATCH_SIZES:
            ours = Ours(hidden, batch, train_rows, val_rows, device=args.device)
            t_train, _ = timed(ours.train_pass, train_warmup, repeats)
            t_check, acc = timed(ours.check, 1, repeats)
            t_loss, _ = timed(ours.val_loss, 1, repeats)
            results[hidden, batch] = (ours, t_train, t_check, t_loss, acc)
            table.append(
                [
                    f"LSTM {hidden}, batch {batch}",
                    fmt_s(t_train),
                    fmt_rate(n_train, t_train),
                    fmt_s(t_check),
                    fmt_rate(n_val, t_check),
                    fmt_s(t_loss),
                    f"{acc.exact_match:.3f}",
                ]
            )
            print(f"  measured LSTM {hidden}, batch {batch}", file=sys.stderr, flush=True)
    step = "the fused training step, AdamW in C++" if args.device == "cpu" else f"torch.nn on {args.device}, AdamW"
    print(f"1. digitsum core as fit runs it (embedding 16, {step}, grad clip 1.0, cosine schedule)")
    print_table(
        ["config", "train pass", "train rows/s", "accuracy check", "decoded rows/s", "val-loss pass", "val exact"],
        table,
    )

    if args.device != "cpu":
        ours = results[REFERENCE][0]
        data_5 = encode(make_rows([5])).to(args.device)
        t_decode_5, acc_5 = timed(lambda: ours.check(data_5), 1, repeats)
        print(
            f"\non {args.device}: decode all 100,000 5-digit strings {fmt_s(t_decode_5)} "
            f"(exact {acc_5.exact_match:.4f})"
        )
        print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s")
        return

    # 2. The reference at LSTM 64, batch 32 --------------------------------------------------
    hidden, batch = REFERENCE
    ours, t_train, t_check, t_loss, acc = results[REFERENCE]
    eager = Ours(hidden, batch, train_rows, val_rows, fused=False)  # train.fused=false: torch's LSTM op
    t_eager, _ = timed(eager.train_pass, train_warmup, repeats)
    t_gru, _ = timed(Ours(hidden, batch, train_rows, val_rows, model_type="gru").train_pass, train_warmup, repeats)
    t_gru_eager, _ = timed(Ours(hidden, batch, train_rows, val_rows, False, "gru").train_pass, train_warmup, repeats)
    print("  measured the torch.nn paths (train.fused=false) and the GRU", file=sys.stderr, flush=True)
    torch.manual_seed(0)
    ref_model = baseline.TutorialModel(hidden)
    ref_train = baseline.DigitSequenceDataset(train_rows.x.tolist(), train_rows.y.tolist())
    ref_val = baseline.DigitSequenceDataset(val_rows.x.tolist(), val_rows.y.tolist())
    train_loader = baseline.make_loader(ref_train, batch, shuffle=True, seed=0)
    val_loader = baseline.make_loader(ref_val, batch, shuffle=False)
    optimizer = baseline.make_optimizer(ref_model)
    r_train, _ = timed(lambda: baseline.train_epoch(ref_model, train_loader, optimizer), train_warmup, repeats)
    r_loss, _ = timed(lambda: baseline.validation_loss(ref_model, val_loader), 1, repeats)
    print("  measured the reference's training and validation-loss passes", file=sys.stderr, flush=True)

    same = reference_copy(ours.model)  # our trained weights in the reference's model
    val_x, val_y = val_rows.x.tolist(), val_rows.y.tolist()
    baseline.check_accuracy(same, val_x[:100], val_y[:100])  # warm-up
    r_check, r_exact = timed(lambda: baseline.check_accuracy(same, val_x, val_y), 0, repeats)
    print("  measured the reference's per-row accuracy check", file=sys.stderr, flush=True)

    # 3. All 100,000 five-digit strings --------------------------------------------------------
    rows_5 = make_rows([5])
    start = time.perf_counter()
    data_5 = encode(rows_5)
    t_encode_5 = time.perf_counter() - start
    t_decode_5, acc_5 = timed(lambda: ours.check(data_5), 0 if args.quick else 1, repeats)
    pick = np.sort(np.random.default_rng(0).choice(len(rows_5), size=sample_5, replace=False))
    sample_rows = rows_5.take(pick)
    sample_x, sample_y = sample_rows.x.tolist(), sample_rows.y.tolist()
    t_sample, r_exact_5 = timed(lambda: baseline.check_accuracy(same, sample_x, sample_y), 0, 1)
    r_decode_5 = t_sample * len(rows_5) / len(sample_x)
    o_exact_5 = ours.check(encode(sample_rows)).exact_match  # same rows, same weights: must agree

    print(f"\n2-3. ours vs the reference (bench/baseline.py), LSTM {hidden}, batch {batch}; ratio = reference / ours")
    yes = lambda ok: "yes" if ok else "NO"  # noqa: E731
    print_table(
        ["what", "ours", "reference", "ratio", "target", "met"],
        [
            [
                f"training pass, {n_train:,} rows",
                fmt_s(t_train),
                fmt_s(r_train),
                f"{r_train / t_train:.1f}x",
                f">= {TARGET_TRAIN:g}x",
                yes(r_train / t_train >= TARGET_TRAIN),
            ],
            ["  rows/s", fmt_rate(n_train, t_train), fmt_rate(n_train, r_train), "", "", ""],
            ["  via nn.LSTM (train.fused=false)", fmt_s(t_eager), fmt_s(r_train), f"{r_train / t_eager:.1f}x", "", ""],
            [f"  GRU {hidden} instead (fused)", fmt_s(t_gru), "", f"{t_gru_eager / t_gru:.1f}x vs nn.GRU", "", ""],
            [f"  GRU {hidden} via nn.GRU (train.fused=false)", fmt_s(t_gru_eager), "", "", "", ""],
            [f"validation-loss pass, {n_val:,} rows", fmt_s(t_loss), fmt_s(r_loss), f"{r_loss / t_loss:.1f}x", "", ""],
            [
                f"accuracy check, {n_val:,} rows",
                fmt_s(t_check),
                fmt_s(r_check),
                f"{r_check / t_check:.0f}x",
                f">= {TARGET_CHECK:g}x",
                yes(r_check / t_check >= TARGET_CHECK),
            ],
            ["  decoded rows/s", fmt_rate(n_val, t_check), fmt_rate(n_val, r_check), "", "", ""],
            [
                f"decode all {len(rows_5):,} 5-digit strings",
                fmt_s(t_decode_5),
                f"~{fmt_s(r_decode_5)} (est.)",
                f"{r_decode_5 / t_decode_5:.0f}x",
                f"~{TARGET_DECODE_5:g} s",
                yes(t_decode_5 <= 1.25 * TARGET_DECODE_5),
            ],
        ],
    )
    print(
        f"\nnotes:  the reference's 5-digit time is extrapolated from {len(sample_x):,} strings "
        f"(a seeded random sample, {fmt_s(t_sample)}); "
        f"the tutorial's per-row test took {TUTORIAL_DECODE_5} for all of them."
    )
    print(f"        encoding the 100,000 strings (not timed above) took {fmt_s(t_encode_5)}.")
    print(
        f"        same weights, same answers: validation exact match ours {acc.exact_match:.4f}, "
        f"reference {r_exact:.4f}; 5-digit ours {acc_5.exact_match:.4f}; on the 5-digit sample ours {o_exact_5:.4f}, "
        f"reference {r_exact_5:.4f}."
    )
    print(
        "        the reference trains its own one-hot model (Adam, no clipping, no schedule, DataLoader "
        "with per-row __getitem__ and a padding collate, num_workers=0)."
    )
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
