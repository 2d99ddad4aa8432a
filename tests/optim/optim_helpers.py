"""Helpers for the optimizer tests: gradients with a chosen spectrum."""

from __future__ import annotations

import torch


def crafted_gradient(
    shape: tuple[int, ...], mode: object, generator: torch.Generator
) -> torch.Tensor:
    """A gradient whose spectrum is steered: 'smooth' (low), 'alternating' (top bin), 'noise'
    (flat) or a float f in (0, 0.5): a sinusoid at f cycles per entry (a chosen band)."""
    n = 1
    for dim in shape:
        n *= dim
    noise = torch.randn(n, generator=generator, dtype=torch.float64)
    position = torch.arange(n, dtype=torch.float64)
    if mode == "smooth":
        values = noise.cumsum(0) / max(n, 1) ** 0.5
    elif mode == "alternating":
        values = torch.where(position % 2 == 0, 1.0, -1.0) + 0.3 * noise
    elif mode == "noise":
        values = noise
    else:
        values = torch.cos(2 * torch.pi * float(mode) * position) + 0.2 * noise
    return values.float().reshape(shape)


GRADIENT_MODES = ("smooth", "alternating", "noise", 0.05, 0.15, 0.25, 0.35, 0.45)
