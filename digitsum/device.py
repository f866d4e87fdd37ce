"""Where to run: a device name as users write it (auto, cpu, cuda, cuda:N, mps) -> a torch device
this machine has, or one line saying what it has instead, in the words of the option it came from."""

from __future__ import annotations

import platform

import torch

from digitsum.config import DEVICE_RULE
from digitsum.errors import ConfigError, shown
from digitsum.keys import did_you_mean


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """The device ``name`` means here (auto: CUDA, then MPS, then the CPU). ``option`` is how the
    user gave it (``train.device`` for a config key, ``--device`` for an option), for the messages."""
    fix = f"{option}=cpu" if "." in option else f"{option} cpu"
    if not isinstance(name, str) or not DEVICE_RULE.check(name):
        raise ConfigError(f"{option} {shown(name)}: expected {DEVICE_RULE.allowed}{did_you_mean(name, DEVICE_RULE)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _has_mps() else torch.device("cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if count == 0:
            raise ConfigError(f"{option} {name!r}: CUDA is not available on this machine; use {fix} or auto")
        if index >= count:
            raise ConfigError(
                f"{option} {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
                f"use one of them, or {fix}"
            )
    if name == "mps" and not _has_mps():
        raise ConfigError(f"{option} 'mps': Apple's MPS is not available on this machine; use {fix} or auto")
    return torch.device(name)


def _has_mps() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def processor_name(device: torch.device) -> str:
    """What computes on ``device``: the GPU's name, or the CPU's model (two trials of the same parameters
    on two CPU models train two models: float rounding differs)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
