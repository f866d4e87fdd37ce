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


# ---------------------------------------------------------------------------------------------
# On CUDA (bench/gpu_check.sh runs these where a GPU is): --device auto trains there


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@CUDA
def test_device_auto_trains_and_scores_on_cuda(tmp_path):
    from digitsum.config import Config, ModelConfig, TrainConfig
    from digitsum.members import seed_members
    from digitsum.train import fit

    config = Config(
        ModelConfig(model_type="lstm", hidden_size=16),
        TrainConfig(lengths="1-2", n_epochs=2, batch_size=16, device="auto", log_path=str(tmp_path)),
    )
    (fitted,) = fit(seed_members(config))
    assert next(fitted.model.parameters()).device.type == "cuda"
    assert 0.0 <= fitted.best_exact_match <= 1.0


@CUDA
@pytest.mark.parametrize("model_type", ["rnn", "lstm", "gru", "lrnn"])
def test_seeds_train_together_on_cuda_as_each_alone(model_type):
    """K seeds at once on the GPU (the stacked torch.nn path) match each seed's own run there."""
    import dataclasses

    from digitsum.config import Config, ModelConfig, TrainConfig
    from digitsum.members import seed_members
    from digitsum.train import fit

    head = {"head_size": 16, "embedding_dim": 0} if model_type == "lrnn" else {}
    config = Config(
        ModelConfig(model_type=model_type, hidden_size=12, **head),
        TrainConfig(lengths="1-2", n_epochs=2, batch_size=16, device="auto", fused=False),
    )
    seeds = dataclasses.replace(config, train=dataclasses.replace(config.train, n_seeds=3))
    for seed, together in zip([0, 1, 2], fit(seed_members(seeds)), strict=True):
        alone_config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
        (alone,) = fit(seed_members(alone_config))
        assert next(together.model.parameters()).device.type == "cuda"
        assert [e.train_loss for e in together.history] == pytest.approx(
            [e.train_loss for e in alone.history], rel=1e-3
        )
