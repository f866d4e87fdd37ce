"""Checkpoints: weights plus everything needed to rebuild the model, in one file.

Loading always uses ``torch.load(..., weights_only=True)``: a checkpoint is data, never code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from digitsum.errors import UsageError
from digitsum.files import atomic_path
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
        digest.update(state[name].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[DigitSumModel, dict]:
    """Rebuild the model from the file; returns (model in eval mode, the whole payload)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint file; `sweep train` writes one as <log_path>/<run_name>/best.pt"
        )
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many kinds for corrupt, truncated or foreign files
        if "weights only load failed" in str(error).lower():
            reason = "it holds Python objects, which a weights-only load refuses to run"
        else:
            reason = "corrupt, truncated or not a torch file"
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({reason}); point to a best.pt written by sweep"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a digitsum checkpoint; point to a best.pt written by sweep")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')} is not {VERSION}; retrain with this version"
        )
    if not isinstance(payload.get("state_dict"), dict) or payload.get("sha256") != weights_digest(
        payload["state_dict"]
    ):
        raise CheckpointError(
            f"{path}: the weights checksum does not match (corrupt or edited file); retrain or restore it"
        )
    try:
        model = DigitSumModel(ModelConfig(**payload["model_config"]))
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path}: checkpoint does not match the model it describes ({str(error)[:120]})"
        ) from None
    return model.to(device).eval(), payload
