"""The fused CPU training step for one-layer LSTMs and GRUs (fused_step.cpp), built on first use.

At batch 32 an eager step spends most of its time in per-op overhead, not arithmetic. The fused
step computes the loss and every gradient of one batch of each of K members (K >= 1) in one C++
call (same models, same parameters, same loss; different float rounding), and `digitsum.train.fit`
uses it wherever it applies (`applies`). Everything else (the plain RNN among it), and any machine
where the kernel cannot be built (no C++ compiler), trains through the stacked torch.nn path
(`digitsum.step`). The same kernel clips and updates the weights (`digitsum.optim.MemberAdamW`).

The kernel is compiled once per machine with torch.utils.cpp_extension (25-30 s, needs g++ or
clang and ninja) into torch's extension cache; later processes load it in well under a second.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from digitsum.config import Config
from digitsum.stacked import StackedModel

SOURCE = Path(__file__).with_name("fused_step.cpp")
FUSED_TYPES = ("lstm", "gru")
_loaded: bool | None = None  # None: not tried yet in this process


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _build_options() -> tuple[str, list[str]]:
    """Extension name and compiler flags. The name carries the instruction set, so machines that
    share a home folder (and so the extension cache) never load a build their CPU cannot run, and
    the torch version, so two venvs with different torch never load each other's build."""
    # No -ffast-math: NaN must propagate so that a diverged run is detected, and with GCC 12 it
    # would set flush-to-zero for the whole process. These two are what vectorizing needs.
    flags = ["-O3", "-fno-math-errno", "-fno-trapping-math"]
    if sys.platform.startswith("linux"):
        # at::parallel_for (the K-model steps) is OpenMP inline code: without it, it runs serially. The
        # extension then needs libgomp.so.1, which torch's own Linux builds have loaded already (one runtime)
        flags.append("-fopenmp")
    torch_version = re.sub(r"\W", "_", torch.__version__)
    cpu = _cpu_flags()
    if {"avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl"} <= cpu:
        # 16 lanes for the gates' loops; the GEMMs are the BLAS's, which picks its own instructions
        avx512 = ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl"]
        return f"digitsum_fused_step_avx512_torch{torch_version}", [*flags, *avx512]
    if {"avx2", "fma"} <= cpu:
        return f"digitsum_fused_step_avx2_torch{torch_version}", [*flags, "-mavx2", "-mfma"]
    return f"digitsum_fused_step_torch{torch_version}", flags


STALE_LOCK_SECONDS = 600  # a compile takes 25-30 s; a lock this old belongs to a process that died compiling


def _cpp_extension() -> Any:
    """torch.utils.cpp_extension, imported without the warning a CUDA build of torch logs on import
    where the machine has no GPU ("No CUDA runtime is found"): this kernel is for the CPU."""
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        quiet.setLevel(level)
    return cpp_extension


def _clear_stale_lock(build_dir: Path) -> None:
    """Wait while another process compiles; remove its lock if it died doing so (torch's own wait has no
    end: a compile killed once, by Ctrl-C say, would make every later run hang). Only where torch locks
    by the lock file's existence (its FileBaton, up to 2.14); torch 2.15 holds an OS lock on the file
    instead, which dies with its holder, and leaves the file in place."""
    cpp_extension = _cpp_extension()

    if not hasattr(cpp_extension, "FileBaton"):
        return
    lock = build_dir / "lock"
    while lock.exists():
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile
        if age > STALE_LOCK_SECONDS:
            _say(f"removing a stale lock left by a compile that did not finish ({lock}, {age / 60:.0f} min old)")
            lock.unlink(missing_ok=True)
            return
        time.sleep(1.0)


def load() -> bool:
    """Build (first time on this machine) and load the kernel; False, saying why in one line, if it cannot."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded


def _load() -> bool:
    cpp_extension = _cpp_extension()

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        _say(
            f"no C++ compiler ({compiler}) found, so training uses torch.nn; install one (e.g. apt-get "
            "install g++) for the fused training step, 4-5x faster at batch 32"
        )
        return False
    name, flags = _build_options()
    # pip's ninja lands next to the interpreter, which is not on PATH unless the venv is active.
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), path])
    quiet = logging.getLogger(cpp_extension.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its multi-line compiler-compatibility warnings
    try:
        build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
        _clear_stale_lock(build_dir)
        if not (build_dir / f"{name}.so").exists():
            _say(f"compiling the fused training kernel into {build_dir} (once per machine, 25-30 s)")
        cpp_extension.load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"] if "-fopenmp" in flags else [],
            is_python_module=False,
        )
    except Exception as error:  # a broken compiler, no ninja, missing headers: train through torch.nn
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        reason = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1])[:160]
        _say(f"the fused training kernel could not be built ({reason}); training uses torch.nn")
        return False
    finally:
        os.environ["PATH"] = path
        quiet.setLevel(level)
    return True


def _say(message: str) -> None:
    print(f"digitsum: {message}", file=sys.stderr, flush=True)


def applies(stacked: StackedModel, configs: Sequence[Config]) -> bool:
    """Whether the fused step computes these members' training step (before trying to build it): on
    the CPU, one-layer LSTMs or GRUs with a linear head, and no member with dropout, the sum-state loss
    or state noise (noise between steps needs the steps one at a time), with `train.fused` on."""
    shape = stacked.config
    return (
        stacked.device.type == "cpu"
        and shape.model_type in FUSED_TYPES
        and shape.num_layers == 1
        and shape.head_size == 0
        and all(p.dtype == torch.float32 for p in stacked.parameters())
        and all(
            c.train.fused and c.model.dropout == 0 and c.train.sum_state_weight == 0 and c.train.state_noise == 0
            for c in configs
        )
    )


class FusedStep:
    """Each member's loss and gradients of one batch, all K in one call, into each stacked weight's .grad."""

    def __init__(self, stacked: StackedModel):
        self.parameters = list(stacked.parameters())  # the op's order: [embedding], w_ih, w_hh, b_ih, b_hh, head
        self.embedding = stacked.embedding
        self.weights = self.parameters[1:] if self.embedding is not None else self.parameters
        self.op = getattr(torch.ops.digitsum, f"{stacked.config.model_type}_train_step")
        self.grads = [torch.zeros_like(p) for p in self.parameters]
        for p, g in zip(self.parameters, self.grads, strict=True):
            p.grad = g  # the kernel overwrites them every step; nothing may set them to None

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """tokens, targets [K, B, T] (member k's batch) -> the K mean losses; fills the grads."""
        return self.op(tokens, targets, self.embedding, *self.weights, self.grads)


def make_step(stacked: StackedModel, configs: Sequence[Config]) -> FusedStep | None:
    """The fused step for these members, or None where it does not apply or cannot be built."""
    if not applies(stacked, configs) or not load():
        return None
    return FusedStep(stacked)


if __name__ == "__main__":  # `python -m digitsum.fused`: build now (make install does), say whether it works
    print("fused training kernel: " + ("ready" if load() else "not available; training uses torch.nn"))
