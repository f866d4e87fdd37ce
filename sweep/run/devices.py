"""Workers on GPUs (`sweep run --devices auto|cuda:0,cuda:1,...`): worker i trains on device i mod D,
and sees only that one (CUDA_VISIBLE_DEVICES), so nothing it runs can land on another worker's GPU.

Every worker is then a process of its own, started with its CUDA_VISIBLE_DEVICES: a process reads it
once, when CUDA starts, and the parent has already counted the devices (`cuda_devices`)."""

from __future__ import annotations

import os
import re

from digitsum.errors import UsageError

_ONE = re.compile(r"cuda:(\d+)")


def cuda_devices() -> list[str]:
    """The CUDA devices this machine has (cuda:0, cuda:1, ...): the one place that asks torch."""
    import torch

    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def parse_devices(text: str) -> tuple[str, ...]:
    """``auto`` (every CUDA device here) or a comma-separated list of cuda:N this machine has; one line
    naming what it has otherwise."""
    have = cuda_devices()
    shown = ", ".join(have) if have else "none"
    if text.strip() == "auto":
        if not have:
            raise UsageError("--devices auto: this machine has no CUDA device; leave --devices out to train on the CPU")
        return tuple(have)
    given = [part.strip() for part in text.split(",") if part.strip()]
    wrong = [d for d in given if not _ONE.fullmatch(d)]
    if wrong or not given:
        raise UsageError(f"--devices {text!r}: expected auto or a list like cuda:0,cuda:1 (CUDA devices here: {shown})")
    missing = [d for d in given if d not in have]
    if missing:
        raise UsageError(
            f"--devices {text!r}: this machine has no {', '.join(missing)} (CUDA devices here: {shown}); "
            "name those it has, or leave --devices out to train on the CPU"
        )
    if len(set(given)) < len(given):
        raise UsageError(f"--devices {text!r}: a device is named twice; name each once")
    return tuple(given)


def device_of(devices: tuple[str, ...], worker: int) -> str:
    """Worker ``worker``'s device: round-robin over ``devices``."""
    return devices[worker % len(devices)]


def visible(device: str) -> dict[str, str]:
    """The environment a worker on ``device`` starts with: that GPU alone, which it then calls cuda:0.
    Where this process sees only some GPUs already (Slurm's --gpus sets CUDA_VISIBLE_DEVICES), cuda:N is
    the N-th of those, and the worker gets that one."""
    index = int(device.partition(":")[2])
    shown = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    return {"CUDA_VISIBLE_DEVICES": shown[index] if index < len(shown) else str(index)}


def physical(device: str) -> str:
    """The device a worker's cuda:N is on this machine, through its CUDA_VISIBLE_DEVICES (for the record)."""
    match = _ONE.fullmatch(device)
    shown = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    if match is None or not shown[0]:
        return device
    index = int(match.group(1))
    return f"cuda:{shown[index]}" if index < len(shown) and shown[index].isdigit() else device
