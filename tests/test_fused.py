"""digitsum.fused: the fused LSTM and GRU steps of K members against autograd through torch.nn, each
member's numbers its own, and fit on the fused path (reproducible, close to the torch.nn path, used
only where it applies)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F
from torch.utils import cpp_extension

from digitsum import fused
from digitsum.config import Config, ModelConfig, TrainConfig
from digitsum.data import IGNORE, N_OUTPUT_TOKENS, encode, make_rows
from digitsum.datasets import split_rows
from digitsum.members import Member
from digitsum.model import DigitSumModel
from digitsum.stacked import stack
from digitsum.train import FitResult, fit

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not fused.load(), reason="the fused kernel cannot be built here (no C++ compiler?)"),
]
CPU = torch.device("cpu")


def fit_one(config, train, val) -> FitResult:
    (result,) = fit([Member(config, train, val)])
    return result


def step_of(*models: DigitSumModel) -> fused.FusedStep:
    """The fused step of these models stacked (one member each)."""
    return fused.FusedStep(stack(list(models)))


def grads_of(step: fused.FusedStep, k: int = 0) -> list[torch.Tensor]:
    return [g[k] for g in step.grads]


def recurrent(model_type: str = "lstm", hidden_size: int = 24, embedding_dim: int = 8, seed: int = 0) -> DigitSumModel:
    torch.manual_seed(seed)
    return DigitSumModel(ModelConfig(model_type=model_type, hidden_size=hidden_size, embedding_dim=embedding_dim))


def batch(rows: int = 40, seed: int = 0):
    data = encode(make_rows([1, 2, 3]))
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:rows]
    return data.inputs[index], data.targets[index]


def autograd_loss_and_grads(model: DigitSumModel, inputs, targets, max_norm: float = 0.0):
    model.zero_grad(set_to_none=True)
    logits, _ = model(inputs)
    loss = F.cross_entropy(logits.reshape(-1, N_OUTPUT_TOKENS), targets.reshape(-1), ignore_index=IGNORE)
    loss.backward()
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("embedding_dim", [8, 0])
@pytest.mark.parametrize("model_type", fused.FUSED_TYPES)
def test_loss_and_gradients_equal_autograd_through_torch_nn(model_type, embedding_dim):
    model = recurrent(model_type, embedding_dim=embedding_dim)
    inputs, targets = batch()
    loss, expected = autograd_loss_and_grads(model, inputs, targets)
    step = step_of(model)
    fused_loss = step(inputs[None], targets[None])
    assert fused_loss.shape == (1,) and fused_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    for (name, p), grad, want in zip(model.named_parameters(), grads_of(step), expected, strict=True):
        assert grad.shape == p.shape, name
        torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6, msg=name)
        assert want.abs().max() > 0, name  # every gradient is really exercised


@pytest.mark.parametrize("model_type", fused.FUSED_TYPES)
def test_each_member_computes_its_own_step_whatever_the_others_and_the_threads(model_type):
    """Member k's loss and gradients in a step of K members are those of its step alone, bit for bit, on
    one thread or two: its tiles hold its own rows only, and each gradient is summed in one fixed order."""
    models = [recurrent(model_type, seed=seed) for seed in range(3)]
    batches = [batch(rows=32, seed=seed) for seed in range(3)]
    tokens = torch.stack([inputs for inputs, _ in batches])
    targets = torch.stack([t for _, t in batches])
    for threads in (1, 2):
        torch.set_num_threads(threads)
        together = step_of(*models)
        losses = together(tokens, targets)
        for k, model in enumerate(models):
            alone = step_of(model)
            assert torch.equal(alone(tokens[k : k + 1], targets[k : k + 1]), losses[k : k + 1])
            for mine, theirs in zip(grads_of(together, k), grads_of(alone), strict=True):
                assert torch.equal(mine, theirs)
    torch.set_num_threads(1)


@pytest.mark.parametrize("model_type", fused.FUSED_TYPES)
def test_a_step_writes_every_gradient_afresh(model_type):
    """The kernel overwrites .grad (no accumulation), so no zero_grad is needed between steps."""
    step = step_of(recurrent(model_type))
    inputs, targets = batch(seed=2)
    step(inputs[None], targets[None])
    first = [g.clone() for g in step.grads]
    step(inputs[None], targets[None])
    for g, again in zip(first, step.grads, strict=True):
        assert torch.equal(g, again)


def test_bad_tokens_and_shapes_are_refused():
    step = step_of(recurrent())
    inputs, targets = batch()
    tokens = inputs[None]
    with pytest.raises(RuntimeError, match="out of range"):
        step(tokens.clone().fill_(99), targets[None])
    with pytest.raises(RuntimeError, match=r"\[K, B, T\]"):
        step(tokens, targets[None, :, :3])
    with pytest.raises(RuntimeError, match=r"\[K, B, T\]"):
        step(tokens[0], targets)


# ---------------------------------------------------------------------------------------------
# Where it applies, and fit on it


@pytest.mark.parametrize(
    ("model", "train", "device", "applies"),
    [
        ({}, {}, "cpu", True),
        ({"embedding_dim": 0}, {}, "cpu", True),
        ({"model_type": "gru"}, {}, "cpu", True),
        ({"model_type": "gru", "embedding_dim": 0}, {}, "cpu", True),
        ({"model_type": "rnn"}, {}, "cpu", False),
        ({"num_layers": 2}, {}, "cpu", False),
        ({"dropout": 0.1}, {}, "cpu", False),
        ({"head_size": 8}, {}, "cpu", False),
        ({}, {"sum_state_weight": 1.0}, "cpu", False),
        ({"model_type": "gru"}, {"sum_state_weight": 1.0}, "cpu", False),
        ({}, {"state_noise": 0.01}, "cpu", False),
        ({}, {"fused": False}, "cpu", False),
        ({}, {}, "meta", False),
    ],
)
def test_applies_to_one_layer_lstms_and_grus_on_the_cpu_only(model, train, device, applies):
    config = Config(ModelConfig(**{"model_type": "lstm", "hidden_size": 8, **model}), TrainConfig(**train))
    plain = Config(replace(config.model, dropout=0.0), TrainConfig())
    stacked = stack([DigitSumModel(config.model), DigitSumModel(plain.model)]).to(device)
    assert fused.applies(stacked, [config, plain]) is applies  # one member that does not fit: none does


@pytest.mark.parametrize("model_type", fused.FUSED_TYPES)
def test_fit_uses_the_fused_step_and_is_reproducible(model_type, tiny_config, tiny_rows, monkeypatch):
    config = tiny_config(model={"model_type": model_type}, n_epochs=4)
    train, val = split_rows(tiny_rows, config.train)
    calls = []
    real = fused.FusedStep.__call__
    monkeypatch.setattr(fused.FusedStep, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    first = fit_one(config, train, val)
    assert len(calls) == 4 * math.ceil(len(train) / config.train.batch_size)
    second = fit_one(config, train, val)
    assert [(e.train_loss, e.val_loss, e.val_exact_match) for e in first.history] == [
        (e.train_loss, e.val_loss, e.val_exact_match) for e in second.history
    ]
    for p, q in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("model_type", fused.FUSED_TYPES)
def test_fit_fused_follows_the_torch_nn_path(model_type, tiny_config, tiny_rows):
    """Same model, data, optimizer and schedule: the two paths differ by float rounding only, so the
    losses of the first epochs agree closely (they drift apart slowly, as any rounding change does)."""
    config = tiny_config(model={"model_type": model_type}, n_epochs=3, grad_clip=0.5)
    train, val = split_rows(tiny_rows, config.train)
    on = fit_one(config, train, val)
    off = fit_one(replace(config, train=replace(config.train, fused=False)), train, val)
    for a, b in zip(on.history, off.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-3)
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-3)
    # really two different paths: the weights differ in their last bits
    assert any(not torch.equal(p, q) for p, q in zip(on.model.parameters(), off.model.parameters(), strict=True))


def test_fused_false_and_other_models_train_through_torch_nn(tiny_config, tiny_rows, monkeypatch):
    calls = []
    monkeypatch.setattr(fused.FusedStep, "__call__", lambda self, *a: calls.append(1))  # any use would show
    for model, train in [
        ({"model_type": "lstm"}, {"fused": False}),
        ({"model_type": "rnn"}, {}),
        ({}, {"sum_state_weight": 1.0}),
    ]:
        config = tiny_config(model=model, n_epochs=1, **train)
        result = fit_one(config, *split_rows(tiny_rows, config.train))
        assert math.isfinite(result.history[0].train_loss)
    assert calls == []


@pytest.mark.parametrize("model_type", fused.FUSED_TYPES)
def test_divergence_is_detected_on_the_fused_path(model_type, tiny_config, tiny_rows):
    from digitsum.train import TrainingDiverged

    config = tiny_config(model={"model_type": model_type})
    config = replace(config, train=replace(config.train, learning_rate=float("inf")))
    with pytest.raises(TrainingDiverged):
        fit_one(config, *split_rows(tiny_rows, config.train))


FALLBACK = """
import sys
from digitsum import fused
from digitsum.config import Config, ModelConfig, TrainConfig
from digitsum.data import make_rows
from digitsum.datasets import split_rows
from digitsum.members import Member
from digitsum.train import fit
config = Config(ModelConfig(model_type="lstm", hidden_size=8), TrainConfig(lengths="1-2", n_epochs=1, num_threads=1))
(result,) = fit([Member(config, *split_rows(make_rows([1, 2]), config.train))])
print(fused.load(), type(result.model.rnn).__name__, len(result.history))
"""


@pytest.mark.processes
@pytest.mark.parametrize(
    ("compiler", "says"),
    [
        ("/nonexistent/c++", "digitsum: no C++ compiler (/nonexistent/c++) found, so training uses torch.nn"),
        ("/bin/false", "digitsum: the fused training kernel could not be built ("),
    ],
)
def test_without_a_working_compiler_training_falls_back_with_one_line(compiler, says, tmp_path):
    """A real build attempt in a fresh extension cache, with a compiler that is missing or broken."""
    env = {**os.environ, "CXX": compiler, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", FALLBACK], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "LSTM", "1"]
    notes = [line for line in result.stderr.splitlines() if line.startswith("digitsum:") and "compiling" not in line]
    assert len(notes) == 1 and notes[0].startswith(says), result.stderr
    assert "Traceback" not in result.stderr and "WARNING" not in result.stderr


FILE_BATON = pytest.mark.skipif(
    not hasattr(cpp_extension, "FileBaton"), reason="this torch holds an OS lock on the file; it dies with its holder"
)


@FILE_BATON
def test_a_lock_left_by_a_compile_that_died_is_removed_with_one_line(tmp_path, capsys):
    lock = tmp_path / "lock"
    lock.touch()
    old = time.time() - fused.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    fused._clear_stale_lock(tmp_path)
    assert not lock.exists()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("digitsum: removing a stale lock left by a compile that did not finish")


@FILE_BATON
def test_a_compile_in_progress_is_waited_for(tmp_path, capsys):
    lock = tmp_path / "lock"
    lock.touch()
    threading.Timer(1.5, lock.unlink).start()  # the other process finishes its compile
    start = time.monotonic()
    fused._clear_stale_lock(tmp_path)
    assert time.monotonic() - start >= 1.4 and not lock.exists()
    assert capsys.readouterr().err == ""


def test_the_build_folder_is_per_torch_version():
    name, _ = fused._build_options()
    assert name.startswith("digitsum_fused_step") and name.endswith(
        torch.__version__.replace(".", "_").replace("+", "_")
    )
