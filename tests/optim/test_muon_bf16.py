"""Muon's bf16 Newton–Schulz as fp32 GEMMs rounded to bf16 (fambench.optim.muon): the library's
arithmetic, bf16 at every rounding point, and used by the registry's muon exactly where the CPU
would otherwise emulate bf16 products."""

from __future__ import annotations

import pytest
import pytorch_optimizer
import torch
from pytorch_optimizer.optimizer.utils.matrix import (
    get_newton_schulz_weights,
    zero_power_via_newton_schulz_5,
)
from torch import nn

from fambench.optim import build_optimizer
from fambench.optim import muon as muon_module
from fambench.optim.muon import newton_schulz_bf16_via_fp32

COEFFICIENTS = get_newton_schulz_weights("original")


def _matrix(rows: int, cols: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(48, 48), (24, 80), (96, 40)])
def test_it_computes_the_library_s_bf16_newton_schulz(shape):
    matrix = _matrix(*shape, seed=shape[0])
    ours = newton_schulz_bf16_via_fp32(matrix, 5, COEFFICIENTS)
    library_bf16 = zero_power_via_newton_schulz_5(matrix, num_steps=5, weights=COEFFICIENTS)
    library_fp32 = zero_power_via_newton_schulz_5(
        matrix, num_steps=5, weights=COEFFICIENTS, dtype=torch.float32
    )
    assert ours.dtype == torch.bfloat16 and ours.shape == matrix.shape
    gap_to_bf16 = (ours.float() - library_bf16.float()).abs()
    gap_to_fp32 = (ours.float() - library_fp32).abs()
    # Both bf16 versions round at the same points and differ only in summation order: their
    # gap is a few bf16 steps at most, and far below bf16's own distance from fp32.
    assert gap_to_bf16.max() <= 4 * 2**-8 * library_bf16.float().abs().max()
    assert gap_to_bf16.mean() < 0.5 * gap_to_fp32.mean()


def test_it_orthogonalises_like_newton_schulz():
    # Quintic Newton–Schulz maps every singular value into roughly [0.7, 1.2].
    singular_values = torch.linalg.svdvals(
        newton_schulz_bf16_via_fp32(_matrix(64, 32, seed=1), 5, COEFFICIENTS).float()
    )
    assert singular_values.min() > 0.6 and singular_values.max() < 1.3


def test_it_repeats_the_schedule_s_last_coefficients():
    matrix = _matrix(16, 24, seed=2)
    schedule = [(3.4445, -4.7750, 2.0315), (2.0, -1.5, 0.5)]
    spelled_out = schedule + [schedule[-1]] * 3
    assert torch.equal(
        newton_schulz_bf16_via_fp32(matrix, 5, schedule),
        newton_schulz_bf16_via_fp32(matrix, 5, spelled_out),
    )


def test_it_refuses_what_is_not_a_matrix():
    with pytest.raises(ValueError, match="takes a matrix, got 3 dimensions"):
        newton_schulz_bf16_via_fp32(torch.ones(2, 3, 4), 5, COEFFICIENTS)


def _one_step(emulate: bool, monkeypatch) -> tuple[list[torch.Tensor], int]:
    monkeypatch.setattr(muon_module, "_cpu_emulates_bf16", lambda: emulate)
    calls = []
    real = muon_module.newton_schulz_bf16_via_fp32

    def counted(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(muon_module, "newton_schulz_bf16_via_fp32", counted)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.Linear(32, 5))
    optimizer = build_optimizer("muon", model)
    model(torch.randn(8, 12)).square().mean().backward()
    optimizer.step()
    return [p.detach().clone() for p in model.parameters()], len(calls)


def test_the_registry_s_muon_uses_it_only_where_the_cpu_emulates_bf16(monkeypatch):
    emulated, emulated_calls = _one_step(True, monkeypatch)
    native, native_calls = _one_step(False, monkeypatch)
    optimizer = build_optimizer("muon", nn.Linear(4, 4))
    assert isinstance(optimizer, pytorch_optimizer.Muon)
    # Muon takes the one hidden 32×32 matrix here; the first and last layers go to AdamW.
    assert (emulated_calls, native_calls) == (1, 0)
    for ours, library in zip(emulated, native, strict=True):
        assert torch.allclose(ours, library, atol=2e-4)
