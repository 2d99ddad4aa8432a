"""SimpleFAM against a plain loop of the specification's rule."""

from __future__ import annotations

import pytest
import torch
from optim_helpers import GRADIENT_MODES, crafted_gradient

from fambench.optim import SimpleFAM


def _spec_step(params, state, lr, alpha):
    """The specification's SimpleFAM.step, one tensor at a time (without its print)."""
    for p in params:
        st = state.setdefault(id(p), {"step": 0, "exp_avg": torch.zeros_like(p)})
        st["step"] += 1
        a = alpha
        if p.numel() > 1000 and st["step"] > 100:
            sample = p.grad.flatten()[: min(1000, p.numel())]
            power = torch.abs(torch.fft.rfft(sample.float()))
            half = power.shape[0] // 2
            ratio = power[half:].sum() / (power.sum() + 1e-8)
            a = min(0.98, alpha + 0.05 * ratio.item())
        st["exp_avg"].mul_(a).add_(p.grad, alpha=1 - a)
        p.data.add_(st["exp_avg"], alpha=-lr)


def test_simple_fam_matches_the_specification(capsys):
    shapes = [(2000,), (40, 30), (1001,), (500,), (30, 40, 3)]
    generator = torch.Generator().manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    optimizer = SimpleFAM(ours, lr=0.05, alpha=0.9)
    state: dict = {}
    for step in range(130):
        for a, b in zip(ours, theirs, strict=True):
            mode = GRADIENT_MODES[(step // 10 + a.numel()) % len(GRADIENT_MODES)]
            grad = crafted_gradient(tuple(a.shape), mode, generator)
            a.grad, b.grad = grad, grad.clone()
        optimizer.step()
        with torch.no_grad():
            _spec_step(theirs, state, lr=0.05, alpha=0.9)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert capsys.readouterr().out == ""
    assert all(optimizer.state[p]["step"] == 130 for p in ours)


def test_simple_fam_weight_decay_extension_and_validation():
    param = torch.nn.Parameter(torch.ones(10))
    optimizer = SimpleFAM([param], lr=0.1, weight_decay=0.5)
    param.grad = torch.zeros(10)
    optimizer.step()
    # g = 0 + 0.5 * 1; m = 0.1 * 0.5; p = 1 - 0.1 * 0.05
    torch.testing.assert_close(param.detach(), torch.full((10,), 0.995))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1.0\)"):
        SimpleFAM([param], alpha=1.0)
