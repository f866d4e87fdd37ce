"""digitsum.optim: each member's clipping and AdamW update, at its own rate, schedule and decay, are
torch's clip_grad_norm_ and AdamW with LambdaLR on that member alone; on the C++ kernel and in torch ops."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from digitsum import fused
from digitsum.config import TrainConfig
from digitsum.optim import MemberAdamW, schedule

SHAPES = [(13, 8), (96, 8), (96, 24), (96,), (12,)]
MEMBERS = [
    TrainConfig(learning_rate=3e-3, weight_decay=0.05, grad_clip=0.0, lr_schedule="cosine"),
    TrainConfig(learning_rate=1e-2, weight_decay=0.0, grad_clip=0.5, lr_schedule="constant"),
    TrainConfig(learning_rate=5e-4, weight_decay=0.2, grad_clip=2.0, lr_schedule="cosine"),
]
STEPS = 30


def test_schedule_functions():
    constant = schedule("constant", 100)
    assert [constant(s) for s in (0, 50, 100, 1000)] == [1.0] * 4
    cosine = schedule("cosine", 100)
    assert cosine(0) == pytest.approx(1.0)
    assert cosine(50) == pytest.approx(0.505)
    assert cosine(100) == pytest.approx(0.01)
    assert cosine(150) == pytest.approx(0.01)  # stays at the floor past the end
    with pytest.raises(ValueError, match="lr_schedule"):
        schedule("linear", 100)


def torch_members(k: int, weights: list[torch.Tensor], member: TrainConfig) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(w[k].clone()) for w in weights]


@pytest.mark.parametrize("kernel", [True, False], ids=["C++ kernel", "torch ops"])
def test_each_member_is_torch_adamw_with_its_schedule_and_clipping(kernel):
    if kernel and not fused.load():
        pytest.skip("the fused kernel cannot be built here (no C++ compiler)")
    torch.manual_seed(0)
    weights = [torch.randn(len(MEMBERS), *shape) for shape in SHAPES]
    ours = [torch.nn.Parameter(w.clone()) for w in weights]
    optimizer = MemberAdamW(ours, MEMBERS, total_steps=STEPS)
    optimizer.kernel = kernel
    theirs = [torch_members(k, weights, m) for k, m in enumerate(MEMBERS)]
    torch_optimizers = [
        torch.optim.AdamW(params, lr=m.learning_rate, weight_decay=m.weight_decay)
        for params, m in zip(theirs, MEMBERS, strict=True)
    ]
    schedules = [
        torch.optim.lr_scheduler.LambdaLR(o, schedule(m.lr_schedule, STEPS))
        for o, m in zip(torch_optimizers, MEMBERS, strict=True)
    ]
    clipped = 0
    for _ in range(STEPS):
        assert optimizer.learning_rates == pytest.approx([o.param_groups[0]["lr"] for o in torch_optimizers])
        grads = [torch.randn_like(p) * 3 for p in ours]
        for p, g in zip(ours, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        for k, (params, member) in enumerate(zip(theirs, MEMBERS, strict=True)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g[k].clone()
            if member.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, member.grad_clip)
                clipped += int(norm > member.grad_clip)
            for p, q in zip(params, ours, strict=True):  # the clipped gradients are left in .grad
                torch.testing.assert_close(q.grad[k], p.grad, rtol=1e-5, atol=1e-7)
            torch_optimizers[k].step()
            schedules[k].step()
    assert clipped > 0  # clipping really happened
    for k, params in enumerate(theirs):
        for p, q in zip(params, ours, strict=True):
            torch.testing.assert_close(q[k], p, rtol=1e-5, atol=1e-6)
    assert optimizer.steps == STEPS


@pytest.mark.skipif(not fused.load(), reason="the fused kernel cannot be built here (no C++ compiler)")
def test_the_kernel_and_torch_ops_agree():
    torch.manual_seed(1)
    weights = [torch.randn(len(MEMBERS), *shape) for shape in SHAPES]
    pair = []
    for kernel in (True, False):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        optimizer = MemberAdamW(params, [replace(m, grad_clip=1.0) for m in MEMBERS], total_steps=10)
        optimizer.kernel = kernel
        for step in range(10):
            for p in params:
                p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(step))
            optimizer.step()
        pair.append(params)
    for p, q in zip(*pair, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.processes
def test_training_does_not_import_the_compiler_stack():
    """torch.optim.Optimizer.add_param_group's first call imports torch._dynamo (~2 s a process)."""
    code = (
        "import sys, torch\n"
        "from digitsum.config import Config, ModelConfig, TrainConfig\n"
        "from digitsum.members import seed_members\n"
        "from digitsum.train import fit\n"
        "config = Config(ModelConfig(model_type='gru', hidden_size=8), TrainConfig(lengths='1-2', n_epochs=1))\n"
        "fit(seed_members(config))\n"
        "print('torch._dynamo' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"]
