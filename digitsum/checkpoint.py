"""Checkpoints: weights plus everything needed to rebuild the model, in one file.

Loading always uses ``torch.load(..., weights_only=True)``: a checkpoint is data, never code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from digitsum import config
from digitsum.errors import UsageError, shown
from digitsum.files import atomic_path, require_file
from digitsum.model import DigitSumModel, ModelConfig

FORMAT = "digitsum-checkpoint"
VERSION = 1


class CheckpointError(UsageError):
    """The file is missing, corrupt, or not a checkpoint of ours."""


def save_checkpoint(path: str | Path, model: DigitSumModel, config: dict, metrics: dict) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.config.to_dict(),
        "config": config,
        "metrics": metrics,
        "state_dict": state,
        "sha256": weights_digest(state),  # torch does not check the zip's CRCs: flipped bytes would load
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[DigitSumModel, dict]:
    """Rebuild the model from the file; returns (model in eval mode, the whole payload).

    Every field is checked before it is used: the model the file describes is checked as a config is
    (sizes within their ranges) and built without memory (on torch's meta device); only if each of
    the file's tensors has the shape and type that model expects is memory allocated for it, and the
    tensors copied in (copied: crafted tensors may share storage)."""
    path = require_file(
        path, "checkpoint file", "`sweep train` writes one as <log_path>/<run_name>/best.pt", CheckpointError
    )
    payload = _read_payload(path)
    model_config = _model_config(path, payload.get("model_config"))
    with torch.device("meta"):
        model = DigitSumModel(model_config)
    _check_tensors(path, model, payload["state_dict"])
    model = model.to_empty(device="cpu")
    model.load_state_dict(payload["state_dict"])
    if not isinstance(payload.get("config"), dict):
        payload["config"] = {"model": model_config.to_dict()}  # the training config is only informative
    return model.to(device).eval(), payload


def _read_payload(path: Path) -> dict:
    """The file's payload, after the checks that need no model: ours, this version, weights intact."""
    try:  # onto the CPU first: where the model goes is decided once the file is known to be sound
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for corrupt, truncated or foreign files
        if "weights only load failed" in str(error).lower():
            reason = "it holds Python objects, which a weights-only load refuses to run"
        else:
            reason = "corrupt, truncated or not a torch file"
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({reason}); point to a best.pt written by sweep"
        ) from None
    if not isinstance(payload, dict) or not _is(payload.get("format"), str, FORMAT):
        raise CheckpointError(f"{path}: not a digitsum checkpoint; point to a best.pt written by sweep")
    if not _is(payload.get("version"), int, VERSION):
        raise CheckpointError(
            f"{path}: checkpoint version {shown(payload.get('version'))} is not {VERSION}; retrain with this version"
        )
    state = payload.get("state_dict")
    tensors = state if isinstance(state, dict) else {}
    sound = bool(tensors) and all(isinstance(k, str) and type(v) is torch.Tensor for k, v in tensors.items())
    if not sound or not _is(payload.get("sha256"), str, _digest_or_none(tensors)):
        raise CheckpointError(
            f"{path}: the weights checksum does not match (corrupt or edited file); retrain or restore it"
        )
    return payload


def _digest_or_none(state: dict[str, torch.Tensor]) -> str | None:
    """`weights_digest`, or None for tensors it cannot read as bytes (sparse, quantized: never ours)."""
    try:
        return weights_digest(state)
    except (RuntimeError, TypeError, ValueError):
        return None


def _is(value: object, kind: type, expected: object) -> bool:
    """``value == expected`` for a value of exactly ``kind``: no tensor or other type compares its way in."""
    return type(value) is kind and value == expected


def _model_config(path: Path, described: object) -> ModelConfig:
    """The model the file describes, checked key by key as `sweep train` checks a config."""
    if not isinstance(described, dict) or not all(isinstance(k, str) for k in described):
        raise CheckpointError(f"{path}: the checkpoint does not say which model it holds; retrain or restore it")
    try:
        return config.apply(config.Config(), {f"model.{name}": value for name, value in described.items()}).model
    except UsageError as error:
        raise CheckpointError(f"{path}: the checkpoint describes a model this version cannot build ({error})") from None


def _check_tensors(path: Path, model: DigitSumModel, state: dict[str, torch.Tensor]) -> None:
    """Each of the model's tensors is in the file, with its shape and type, and nothing else is."""
    expected = model.state_dict()
    problem = next((f"no {name}" for name in expected if name not in state), None)
    problem = problem or next((f"an unknown {name}" for name in state if name not in expected), None)
    problem = problem or next(
        (
            f"{name} of shape {tuple(state[name].shape)}, {state[name].dtype}"
            for name, want in expected.items()
            if state[name].shape != want.shape or state[name].dtype != want.dtype
        ),
        None,
    )
    if problem is not None:
        raise CheckpointError(
            f"{path}: checkpoint does not match the model it describes ({shown(problem, 80)}); retrain or restore it"
        )
