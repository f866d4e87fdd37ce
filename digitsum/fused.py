"""The fused CPU training step for one-layer LSTMs and GRUs (fused_step.cpp), built on first use.

At batch 32 an eager step spends most of its time in per-op overhead, not arithmetic. The fused
step computes the loss and every gradient of one batch in one C++ call (same model, same
parameters, same loss; different float rounding), and `fit` uses it wherever it applies: CPU, LSTM
or GRU, one layer, no dropout, no `sum_state_weight`, and `train.fused` on; `fit_seeds` likewise for
K models at once (`FusedSteps`). Everything else (the
plain RNN among it), and any machine where the kernel cannot be built (no C++ compiler), trains
through torch.nn.

The kernel is compiled once per machine with torch.utils.cpp_extension (~30 s, needs g++ or
clang and ninja) into torch's extension cache; later processes load it in well under a second.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from digitsum.config import ModelConfig
from digitsum.model import DigitSumModel
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
    if {"avx2", "fma"} <= _cpu_flags():
        return f"digitsum_fused_step_avx2_torch{torch_version}", [*flags, "-mavx2", "-mfma"]
    return f"digitsum_fused_step_torch{torch_version}", flags


STALE_LOCK_SECONDS = 600  # a compile takes ~30 s; a lock this old belongs to a process that died compiling


def _clear_stale_lock(build_dir: Path) -> None:
    """Wait while another process compiles; remove its lock if it died doing so (torch's own wait has no
    end: a compile killed once, by Ctrl-C say, would make every later run hang). Only where torch locks
    by the lock file's existence (its FileBaton, up to 2.14); torch 2.15 holds an OS lock on the file
    instead, which dies with its holder, and leaves the file in place."""
    from torch.utils import cpp_extension

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
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        _say(
            f"no C++ compiler ({compiler}) found, so training uses torch.nn; install one (e.g. apt-get "
            "install g++) for the fused training step, ~5x faster at batch 32"
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
            _say(f"compiling the fused training kernel into {build_dir} (once per machine, ~30 s)")
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


def applies(model: torch.nn.Module, device: torch.device, sum_state_weight: float = 0.0) -> bool:
    """Whether the fused step computes this model's training step (before trying to build it); a
    DigitSumModel, or K of them stacked (`digitsum.stacked.StackedModel`)."""
    config = model.config
    assert isinstance(config, ModelConfig)
    return (
        device.type == "cpu"
        and config.model_type in FUSED_TYPES
        and config.num_layers == 1
        and config.dropout == 0.0
        and config.head_size == 0
        and sum_state_weight == 0.0
        and all(p.dtype == torch.float32 for p in model.parameters())
    )


class FusedStep:
    """Loss and (clipped) gradients of one batch in one call, written to each parameter's .grad."""

    def __init__(self, model: DigitSumModel):
        rnn, head = model.rnn, model.head
        assert isinstance(rnn, torch.nn.RNNBase) and isinstance(head, torch.nn.Linear), "applies() checked"
        names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
        self.parameters: list[torch.Tensor] = [*(rnn.get_parameter(n) for n in names), head.weight, head.bias]
        self.op = getattr(torch.ops.digitsum, f"{model.config.model_type}_train_step")
        self.embedding = model.embedding.weight if model.embedding is not None else None
        if self.embedding is not None:
            self.parameters.insert(0, self.embedding)
        self.weights = self.parameters[1:] if self.embedding is not None else self.parameters  # all but the embedding
        if {id(p) for p in self.parameters} != {id(p) for p in model.parameters()}:
            raise ValueError("FusedStep: the model has parameters the fused step does not know")
        self.grads = [torch.zeros_like(p) for p in self.parameters]
        for p, g in zip(self.parameters, self.grads, strict=True):
            p.grad = g  # the kernel overwrites them every step; nothing may set them to None

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, targets: torch.Tensor, max_grad_norm: float = 0.0) -> torch.Tensor:
        """tokens, targets [T, B] (time-major) -> the mean loss; fills every parameter's .grad,
        clipped to ``max_grad_norm`` (as torch.nn.utils.clip_grad_norm_) when it is above 0."""
        return self.op(tokens, targets, self.embedding, *self.weights, self.grads, float(max_grad_norm))


class FusedSteps:
    """FusedStep for K stacked models (`digitsum.stacked`): each model's loss and (clipped) gradients,
    all K in one call (the models spread over the intra-op threads), into each stacked weight's .grad."""

    def __init__(self, stacked: StackedModel):
        self.parameters = list(stacked.parameters())  # the op's order: [embedding], w_ih, w_hh, b_ih, b_hh, head
        self.embedding = stacked.embedding
        self.weights = self.parameters[1:] if self.embedding is not None else self.parameters
        self.op = getattr(torch.ops.digitsum, f"{stacked.config.model_type}_train_steps")
        self.grads = [torch.zeros_like(p) for p in self.parameters]
        for p, g in zip(self.parameters, self.grads, strict=True):
            p.grad = g

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, targets: torch.Tensor, max_grad_norm: float = 0.0) -> torch.Tensor:
        """tokens, targets [K, T, B] (model k's batch, time-major) -> the K mean losses; fills the grads,
        each model's clipped to ``max_grad_norm`` on its own."""
        return self.op(tokens, targets, self.embedding, *self.weights, self.grads, float(max_grad_norm))


class FusedAdamW(torch.optim.Optimizer):
    """torch.optim.AdamW's update (no amsgrad) in one C++ call per step.

    torch.optim.AdamW spends ~150 us of Python per step before its fused kernel runs; on a 1 ms
    training step that is worth removing. Learning-rate schedulers work on it as usual.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        if not load():
            raise RuntimeError(
                "FusedAdamW needs the fused kernel, which could not be built here; use torch.optim.AdamW"
            )
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    def add_param_group(self, param_group: dict) -> None:
        # torch.optim.Optimizer's own is wrapped in torch._disable_dynamo, whose first call imports
        # torch._dynamo: ~2 s per process, paid by every sweep worker in its first trial.
        params = param_group["params"]
        param_group["params"] = [params] if isinstance(params, torch.Tensor) else list(params)
        for key, value in self.defaults.items():
            param_group.setdefault(key, value)
        self.param_groups.append(param_group)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("FusedAdamW does not take a closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self.state[p] for p in params]
            for p, state in zip(params, states, strict=True):
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
            beta1, beta2 = group["betas"]
            torch.ops.digitsum.adamw_(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                states[0]["step"],
                group["lr"],
                beta1,
                beta2,
                group["eps"],
                group["weight_decay"],
            )
        return None


def make_step(model: DigitSumModel, device: torch.device, sum_state_weight: float = 0.0) -> FusedStep | None:
    """The fused step for this model, or None where it does not apply or cannot be built."""
    if not applies(model, device, sum_state_weight) or not load():
        return None
    return FusedStep(model)


def make_steps(stacked: StackedModel, device: torch.device, sum_state_weight: float = 0.0) -> FusedSteps | None:
    """The fused step for K stacked models, or None where it does not apply or cannot be built."""
    if not applies(stacked, device, sum_state_weight) or not load():
        return None
    return FusedSteps(stacked)


if __name__ == "__main__":  # `python -m digitsum.fused`: build now (make install does), say whether it works
    print("fused training kernel: " + ("ready" if load() else "not available; training uses torch.nn"))
