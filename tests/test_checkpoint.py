"""digitsum.checkpoint: save/load round trip, and clear errors for anything that is not our checkpoint."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
import torch
from conftest import needed_by

from digitsum.checkpoint import FORMAT, VERSION, CheckpointError, load_checkpoint, save_checkpoint, weights_digest
from digitsum.config import MODEL_TYPES, ModelConfig
from digitsum.data import encode, make_rows
from digitsum.decode import greedy_decode
from digitsum.model import DigitSumModel

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = {"model": {"model_type": "gru"}, "train": {"seed": 3, "dataset_path": None, "lengths": "1-2"}}
METRICS = {"epoch": 4, "val_exact_match": 0.75}


def make_model(model_type: str = "gru", seed: int = 0, **kwargs) -> DigitSumModel:
    if model_type == "lrnn" and kwargs.get("num_layers", 1) > 1:
        pytest.skip("an lrnn has one layer")
    torch.manual_seed(seed)
    values = {"model_type": model_type, "hidden_size": 12, "embedding_dim": 6, **needed_by(model_type), **kwargs}
    model = DigitSumModel(ModelConfig(**values))
    logits = model.head[-1] if isinstance(model.head, torch.nn.Sequential) else model.head
    with torch.no_grad():
        logits.weight.mul_(5.0)  # more varied predictions than a fresh init
    return model


@pytest.fixture(scope="module")
def data():
    rows = make_rows([1, 2, 3], sample=20, seed=1)
    return encode(rows)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, make_model(), CONFIG, METRICS)
    return path


# ---------------------------------------------------------------------------------------------
# Round trip


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("extra", [{}, {"embedding_dim": 0}, {"num_layers": 2, "dropout": 0.3}])
def test_round_trip_gives_identical_predictions(tmp_path, data, model_type, extra):
    model = make_model(model_type, seed=1, **extra)
    model.train()  # saving does not depend on the mode
    path = tmp_path / "run" / "best.pt"  # the folder is created
    save_checkpoint(path, model, CONFIG, METRICS)
    loaded, payload = load_checkpoint(path)
    assert not loaded.training  # returned in eval mode
    assert loaded.config == model.config
    assert payload["format"] == FORMAT and payload["version"] == VERSION
    assert payload["config"] == CONFIG and payload["metrics"] == METRICS
    assert payload["model_config"] == model.config.to_dict()
    assert set(payload["state_dict"]) == set(model.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert torch.equal(greedy_decode(loaded, data), greedy_decode(model, data))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(data.inputs)[0], model(data.inputs)[0], rtol=0, atol=0)


def test_save_is_atomic_and_overwrites(tmp_path, data):
    path = tmp_path / "best.pt"
    save_checkpoint(path, make_model(seed=1), CONFIG, {"epoch": 1})
    second = make_model(seed=2)
    save_checkpoint(path, second, CONFIG, {"epoch": 2})
    loaded, payload = load_checkpoint(path)
    assert payload["metrics"] == {"epoch": 2}
    assert torch.equal(greedy_decode(loaded, data), greedy_decode(second, data))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]  # no temporary left behind


def test_failed_save_leaves_no_file(tmp_path):
    path = tmp_path / "best.pt"
    with pytest.raises((pickle.PicklingError, AttributeError)):  # which one depends on how the lambda is found
        save_checkpoint(path, make_model(), {"not saveable": lambda: None}, METRICS)
    assert list(tmp_path.iterdir()) == []


def test_saved_weights_are_detached_cpu_copies(saved):
    payload = torch.load(saved, weights_only=True)
    for value in payload["state_dict"].values():
        assert value.device.type == "cpu" and not value.requires_grad


def test_save_keeps_the_umask_permissions(tmp_path):
    path = tmp_path / "best.pt"
    previous = os.umask(0o022)
    try:
        save_checkpoint(path, make_model(), CONFIG, METRICS)
    finally:
        os.umask(previous)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


# ---------------------------------------------------------------------------------------------
# Files that are not a checkpoint of ours


def assert_error(path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_missing_file(tmp_path):
    assert_error(tmp_path / "nope.pt", "no such checkpoint file")
    assert_error(tmp_path, "is a folder, not a checkpoint file")  # there, but no file
    assert_error("/dev/null", "is not a regular file")


def test_truncated_file(saved):
    content = saved.read_bytes()
    saved.write_bytes(content[: len(content) // 2])
    assert_error(saved, "not a readable checkpoint")


def test_corrupt_zip_directory(saved):
    content = bytearray(saved.read_bytes())
    content[-300:] = bytes(300)  # the zip's central directory is at the end
    saved.write_bytes(bytes(content))
    assert_error(saved, "not a readable checkpoint")


def test_corrupt_weights_are_detected(saved):
    payload = torch.load(saved, weights_only=True)
    raw = payload["state_dict"]["head.weight"].numpy().tobytes()
    content = saved.read_bytes()
    at = content.find(raw)
    assert at > 0 and content.count(raw) == 1
    corrupt = content[:at] + bytes(len(raw)) + content[at + len(raw) :]  # the head's weights zeroed
    saved.write_bytes(corrupt)
    with pytest.raises(CheckpointError, match=re.escape(str(saved))):
        load_checkpoint(saved)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00", np.random.default_rng(0).bytes(4096), b"12,3\n45,9\n", b"PK\x03\x04 not really a zip"],
)
def test_random_or_empty_files(tmp_path, content):
    path = tmp_path / "best.pt"
    path.write_bytes(content)
    assert_error(path, "not a readable checkpoint")


@pytest.mark.parametrize(
    "payload",
    [
        torch.zeros(3),
        [1, 2, 3],
        {"state_dict": {}},
        {"format": "something-else", "version": 1},
        {"a": torch.ones(2)},
    ],
)
def test_torch_files_that_are_not_ours(tmp_path, payload):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    assert_error(path, "not a digitsum checkpoint")


def test_a_bare_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(make_model().state_dict(), path)
    assert_error(path, "not a digitsum checkpoint")


def test_other_version(saved):
    payload = torch.load(saved, weights_only=True)
    payload["version"] = VERSION + 1
    torch.save(payload, saved)
    assert_error(saved, f"version {VERSION + 1}")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["model_config"].update(hidden_size=13), "does not match the model"),  # another size
        (lambda p: p["model_config"].update(model_type="lstm"), "does not match the model"),  # another cell
        (lambda p: p["model_config"].update(model_type="transformer"), "cannot build (model.model_type"),
        (lambda p: p["model_config"].update(colour="blue"), "cannot build (unknown config key 'model.colour'"),
        (lambda p: p["model_config"].update(hidden_size=10**9), "cannot build (model.hidden_size"),
        (lambda p: p["model_config"].update(hidden_size=16384), "does not match the model"),  # built without memory
        (lambda p: p.pop("model_config"), "does not say which model"),
        (lambda p: p.update(model_config="gru"), "does not say which model"),
        (lambda p: p.pop("state_dict"), "checksum does not match"),
        (lambda p: p["state_dict"].pop("head.bias"), "checksum does not match"),
        (lambda p: p.update(state_dict=[1, 2]), "checksum does not match"),
        (lambda p: p.update(version=torch.zeros(0)), "version"),  # a tensor compares its way nowhere
        (lambda p: p.update(format=torch.ones(1)), "not a digitsum checkpoint"),
        (lambda p: p.update(sha256=torch.ones(1)), "checksum does not match"),
    ],
)
def test_payload_that_does_not_match_its_model(saved, change, message):
    payload = torch.load(saved, weights_only=True)
    change(payload)
    torch.save(payload, saved)
    assert_error(saved, message)


def test_tensors_of_another_type_are_refused_with_a_matching_checksum(saved):
    payload = torch.load(saved, weights_only=True)
    payload["state_dict"]["head.bias"] = payload["state_dict"]["head.bias"].double()
    payload["state_dict"]["zero-dim"] = torch.tensor(1.0)
    payload["sha256"] = weights_digest(payload["state_dict"])
    torch.save(payload, saved)
    assert_error(saved, "does not match the model")


class Exploit:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_a_torch_file_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "best.pt"
    torch.save({"format": FORMAT, "version": VERSION, "evil": Exploit(marker)}, path)
    assert_error(path, "not a readable checkpoint")
    assert not marker.exists()
    # The control: the same file does run its code when loaded without weights_only.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


def test_a_plain_pickle_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "best.pt"
    path.write_bytes(pickle.dumps(Exploit(marker), protocol=2))
    assert_error(path, "not a readable checkpoint")
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the control: this payload is live
    assert marker.exists()
