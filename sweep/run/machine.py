"""Where a trial ran: the machine, the processor that computed, the device, and the versions of what
computed it. On a cluster of mixed machines this is how a user finds why two trials of the same
parameters differ (the same seed trains another model on another CPU, or another torch)."""

from __future__ import annotations

import functools
import socket
from importlib.metadata import PackageNotFoundError, version
from typing import Any

PROJECT = "digitsum-sweep"
# A difference in these changes what training computes; Optuna's does not.
COMPUTING = ("torch", PROJECT)


def versions() -> dict[str, str]:
    """The versions of torch, Optuna and this project here (read without importing torch)."""
    return {name: _version(name) for name in ("torch", "optuna", PROJECT)}


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


@functools.lru_cache(maxsize=8)
def _machine(device_name: str) -> tuple[tuple[str, Any], ...]:
    import torch

    from digitsum.device import processor_name, resolve_device
    from sweep.run.devices import physical

    device = resolve_device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    facts = {"host": socket.gethostname(), "processor": processor_name(device), "device": physical(str(device))}
    return (*facts.items(), ("versions", versions()))


def machine(device_name: str) -> dict[str, Any]:
    """A trial's record of where it ran: host, processor (CPU model or GPU name), device (as this
    machine numbers it, whatever CUDA_VISIBLE_DEVICES shows the worker), versions; read once per worker."""
    return dict(_machine(device_name))


def version_note(made_with: dict[str, str] | None, study_name: str) -> str | None:
    """One line where this worker's torch or project differs from the study's; None where they match
    (or the study was made before it recorded them)."""
    here = versions()
    differ = [name for name in COMPUTING if made_with and made_with.get(name) not in (None, here[name])]
    if not differ:
        return None
    theirs = ", ".join(f"{name} {made_with[name]}" for name in differ if made_with)
    ours = ", ".join(f"{name} {here[name]}" for name in differ)
    return (
        f"note: study {study_name!r} was made with {theirs}; this worker runs {ours}: its trials may train other "
        "models from the same parameters (each trial records its versions)"
    )
