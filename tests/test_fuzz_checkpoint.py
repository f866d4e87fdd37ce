"""Fuzz checkpoints for `evaluate` and `predict`: truncated and bit-flipped files, foreign torch
files, payloads of ours with fields of the wrong type or size (with a checksum that matches, so the
checks after it are reached), and pickles that carry code, which must never run.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from fuzz import call, extreme_numbers, weird_text, yaml_values
from hypothesis import given
from hypothesis import strategies as st

from digitsum.checkpoint import weights_digest

pytestmark = pytest.mark.fuzz


class Payload:
    """Unpickling this runs a command: a loader that honours it has run code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def saved(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


tensors = st.one_of(
    st.sampled_from([torch.zeros(0), torch.zeros(3, 5), torch.ones(2, dtype=torch.int64), torch.tensor(float("nan"))]),
    st.sampled_from([torch.zeros(2, dtype=torch.bool), torch.zeros(1, 1, 1, 1), torch.zeros(10_000)]),
)
field_values = st.one_of(yaml_values, tensors, extreme_numbers)


@st.composite
def checkpoint_bytes(draw, original: bytes, payload: dict, marker: Path) -> bytes:
    kind = draw(st.sampled_from(["truncated", "flipped", "foreign", "fields", "fields", "model", "code", "junk"]))
    if kind == "truncated":
        return original[: draw(st.integers(0, len(original) - 1))]
    if kind == "flipped":
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "foreign":
        return saved(draw(st.one_of(tensors, yaml_values, st.just(payload["state_dict"]), st.just({"format": 1}))))
    if kind in ("fields", "model"):
        changed = dict(payload)
        if kind == "fields":
            changed[draw(st.sampled_from([*payload, "extra"]))] = draw(field_values)
        else:  # the model it describes: sizes of every kind, the checksum made to match
            config = dict(payload["model_config"])
            config[draw(st.sampled_from([*config, "extra"]))] = draw(st.one_of(extreme_numbers, weird_text))
            changed["model_config"] = config
        if isinstance(changed.get("state_dict"), dict) and all(
            isinstance(t, torch.Tensor) for t in changed["state_dict"].values()
        ):
            changed["sha256"] = weights_digest(changed["state_dict"])
        return saved(changed)
    if kind == "code":
        form = draw(st.sampled_from(["torch", "pickle", "zip"]))
        if form == "torch":
            return saved({"format": "digitsum-checkpoint", "evil": Payload(marker)})
        if form == "pickle":
            return pickle.dumps(Payload(marker))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:  # torch's zip layout with a pickle that runs code
            archive.writestr("archive/data.pkl", pickle.dumps(Payload(marker)))
            archive.writestr("archive/version", "3\n")
        return buffer.getvalue()
    return draw(st.binary(max_size=300))


@given(data=st.data())
def test_checkpoint_files(fuzz_box, data):
    box = fuzz_box
    marker = box.folder / "code-ran"
    original = box.checkpoint.read_bytes()
    payload = torch.load(box.checkpoint, weights_only=True)
    content = data.draw(checkpoint_bytes(original, payload, marker))
    path = box.folder / "ckpts" / f"fuzzed-{data.draw(st.integers(0, 10**6))}.pt"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    if data.draw(st.booleans()):
        call(box, "checkpoints", ["evaluate", path, box.csv, "--device", "cpu"])
    else:
        call(box, "checkpoints", ["predict", path, "12", "1294", "--device", "cpu"])
    assert not marker.exists(), "loading a checkpoint ran code from it"
