"""digitsum.fused: the fused LSTM and GRU steps against autograd through torch.nn, FusedAdamW against
AdamW, and fit on the fused path (reproducible, close to the torch.nn path, used only where it applies)."""

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
from digitsum.config import ModelConfig
from digitsum.data import IGNORE, N_OUTPUT_TOKENS, encode, make_rows
from digitsum.datasets import split_rows
from digitsum.model import DigitSumModel
from digitsum.train import fit, make_optimizer

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not fused.load(), reason="the fused kernel cannot be built here (no C++ compiler?)"),
]
CPU = torch.device("cpu")


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
    step = fused.make_step(model, CPU)
    fused_loss = step(inputs.T.contiguous(), targets.T.contiguous())
    assert fused_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    for (name, p), want in zip(model.named_parameters(), expected, strict=True):
        assert p.grad is not None and p.grad.shape == p.shape, name
        torch.testing.assert_close(p.grad, want, rtol=1e-4, atol=1e-6, msg=name)
        assert want.abs().max() > 0, name  # every gradient is really exercised


@pytest.mark.parametrize("model_type", fused.FUSED_TYPES)
def test_clipping_equals_clip_grad_norm(model_type):
    model = recurrent(model_type, seed=1)
    inputs, targets = batch(seed=1)
    _, unclipped = autograd_loss_and_grads(model, inputs, targets)
    total = math.sqrt(sum(float(g.square().sum()) for g in unclipped))
    max_norm = total / 4  # well below the norm, so clipping must scale every gradient
    _, expected = autograd_loss_and_grads(model, inputs, targets, max_norm)
    fused.make_step(model, CPU)(inputs.T.contiguous(), targets.T.contiguous(), max_norm)
    for (name, p), want in zip(model.named_parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, want, rtol=1e-4, atol=1e-6, msg=name)
    assert math.sqrt(sum(float(p.grad.square().sum()) for p in model.parameters())) == pytest.approx(max_norm, rel=1e-4)


@pytest.mark.parametrize("model_type", fused.FUSED_TYPES)
def test_a_step_writes_every_gradient_afresh(model_type):
    """The kernel overwrites .grad (no accumulation), so no zero_grad is needed between steps."""
    model = recurrent(model_type)
    step = fused.make_step(model, CPU)
    inputs, targets = batch(seed=2)
    step(inputs.T.contiguous(), targets.T.contiguous())
    first = [p.grad.clone() for p in model.parameters()]
    step(inputs.T.contiguous(), targets.T.contiguous())
    for p, g in zip(model.parameters(), first, strict=True):
        assert torch.equal(p.grad, g)


def test_bad_tokens_and_shapes_are_refused():
    model = recurrent()
    step = fused.make_step(model, CPU)
    inputs, targets = batch()
    tokens = inputs.T.contiguous()
    with pytest.raises(RuntimeError, match="out of range"):
        step(tokens.clone().fill_(99), targets.T.contiguous())
    with pytest.raises(RuntimeError, match=r"\[T, B\]"):
        step(tokens, targets.T.contiguous()[:, :3])


def test_fused_adamw_equals_torch_adamw_with_a_schedule():
    torch.manual_seed(0)
    shapes = [(13, 8), (96, 8), (96, 24), (96,), (12,)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    optimizers = [
        fused.FusedAdamW(ours, lr=3e-3, weight_decay=0.05),
        torch.optim.AdamW(theirs, lr=3e-3, weight_decay=0.05),
    ]
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda step: 1 / (1 + step)) for o in optimizers]
    for _ in range(30):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        for optimizer, schedule in zip(optimizers, schedules, strict=True):
            optimizer.step()
            schedule.step()
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)
    assert not torch.equal(ours[0], torch.zeros_like(ours[0]))
    assert optimizers[0].state[ours[0]]["step"] == 30


@pytest.mark.processes
def test_fused_adamw_does_not_import_the_compiler_stack():
    """torch.optim.Optimizer.add_param_group's first call imports torch._dynamo (~2 s a process)."""
    code = (
        "import sys, torch; from digitsum import fused\n"
        "p = [torch.nn.Parameter(torch.ones(4))]; opt = fused.FusedAdamW(p, lr=0.1, weight_decay=0.0)\n"
        "sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)\n"
        "p[0].grad = torch.ones(4); opt.step(); sched.step()\n"
        "print('torch._dynamo' in sys.modules, opt.param_groups[0]['lr'], round(float(p[0][0]), 4))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "0.05", "0.95"]  # lr 0.1 * 0.5; Adam's first step moves by lr


# ---------------------------------------------------------------------------------------------
# Where it applies, and fit on it


@pytest.mark.parametrize(
    ("model", "sum_state_weight", "device", "applies"),
    [
        ({}, 0.0, "cpu", True),
        ({"embedding_dim": 0}, 0.0, "cpu", True),
        ({"model_type": "gru"}, 0.0, "cpu", True),
        ({"model_type": "gru", "embedding_dim": 0}, 0.0, "cpu", True),
        ({"model_type": "rnn"}, 0.0, "cpu", False),
        ({"num_layers": 2}, 0.0, "cpu", False),
        ({"num_layers": 2, "dropout": 0.1}, 0.0, "cpu", False),
        ({}, 1.0, "cpu", False),
        ({"model_type": "gru"}, 1.0, "cpu", False),
        ({}, 0.0, "meta", False),
    ],
)
def test_applies_to_one_layer_lstms_and_grus_on_the_cpu_only(model, sum_state_weight, device, applies):
    config = {"model_type": "lstm", "hidden_size": 8, **model}
    assert fused.applies(DigitSumModel(ModelConfig(**config)), torch.device(device), sum_state_weight) is applies


@pytest.mark.parametrize("model_type", fused.FUSED_TYPES)
def test_fit_uses_the_fused_step_and_is_reproducible(model_type, tiny_config, tiny_rows, monkeypatch):
    config = tiny_config(model={"model_type": model_type}, n_epochs=4)
    train, val = split_rows(tiny_rows, config.train)
    calls = []
    real = fused.FusedStep.__call__
    monkeypatch.setattr(fused.FusedStep, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    first = fit(config, train, val)
    assert len(calls) == 4 * math.ceil(len(train) / config.train.batch_size)
    second = fit(config, train, val)
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
    on = fit(config, train, val).history
    off = fit(replace(config, train=replace(config.train, fused=False)), train, val).history
    for a, b in zip(on, off, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-3)
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-3)
    assert [e.train_loss for e in on] != [e.train_loss for e in off]  # really two different paths


def test_fused_false_and_other_models_train_through_torch_nn(tiny_config, monkeypatch):
    monkeypatch.setattr(fused, "FusedStep", None)  # any use would fail
    model = recurrent()
    assert fused.make_step(model, CPU, sum_state_weight=1.0) is None
    assert fused.make_step(DigitSumModel(ModelConfig(model_type="rnn", hidden_size=8)), CPU) is None
    config = tiny_config(model={"model_type": "lstm"}, fused=False)
    assert isinstance(make_optimizer(model, config.train, CPU, fused=False), torch.optim.AdamW)


@pytest.mark.parametrize("model_type", fused.FUSED_TYPES)
def test_divergence_is_detected_on_the_fused_path(model_type, tiny_config, tiny_rows):
    from digitsum.train import TrainingDiverged

    config = tiny_config(model={"model_type": model_type})
    config = replace(config, train=replace(config.train, learning_rate=float("inf")))
    with pytest.raises(TrainingDiverged):
        fit(config, *split_rows(tiny_rows, config.train))


FALLBACK = """
import sys
from digitsum import fused
from digitsum.config import Config, ModelConfig, TrainConfig
from digitsum.data import make_rows
from digitsum.datasets import split_rows
from digitsum.train import fit
config = Config(ModelConfig(model_type="lstm", hidden_size=8), TrainConfig(lengths="1-2", n_epochs=1, num_threads=1))
result = fit(config, *split_rows(make_rows([1, 2]), config.train))
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
