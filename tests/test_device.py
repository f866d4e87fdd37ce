"""digitsum.device: device names as users write them, refused in one line in the words of the option."""

from __future__ import annotations

import pytest
import torch

from digitsum.device import resolve_device
from digitsum.errors import ConfigError

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        assert auto == torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("CPU", "--device 'CPU': expected auto, cpu, cuda, cuda:N or mps; did you mean cpu?"),
        ("meta", "--device 'meta': expected auto, cpu, cuda, cuda:N or mps"),
        ("cuda:-1", "--device 'cuda:-1': expected"),
        ("cuda:01", "expected auto, cpu"),  # torch refuses a leading zero
        ("cuda:٣", "expected auto, cpu"),  # other scripts' digits are no device number
        ("xla", "expected auto, cpu"),
        ("", "expected auto, cpu"),
    ],
)
def test_names_that_are_no_device_are_refused(name, message):
    with pytest.raises(ConfigError) as caught:
        resolve_device(name, "--device")
    assert message in str(caught.value) and "\n" not in str(caught.value)


@NO_CUDA
@pytest.mark.parametrize(
    ("option", "fix"), [("train.device", "use train.device=cpu"), ("--device", "use --device cpu")]
)
def test_a_device_this_machine_lacks_says_so_in_the_options_words(option, fix):
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"CUDA is not available on this machine; {fix}"):
            resolve_device(name, option)


@pytest.mark.skipif(
    getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(), reason="has MPS"
)
def test_mps_where_there_is_none():
    with pytest.raises(ConfigError, match="MPS is not available on this machine; use --device cpu"):
        resolve_device("mps", "--device")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_index_past_the_last_device():
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=f"this machine has {count} CUDA device"):
        resolve_device(f"cuda:{count}", "--device")
