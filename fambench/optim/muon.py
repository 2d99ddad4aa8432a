"""Muon whose bf16 Newton–Schulz step stays fast on a CPU without bf16 dot products.

Muon orthogonalises each update with Newton–Schulz iterations in bf16, as its authors wrote
it. On a CPU without AVX512_BF16 or AMX, torch emulates each bf16 matrix product in a scalar
loop: a ``commands-small`` run took about 6× as long as AdamW's. A native bf16 product
multiplies bf16 numbers exactly in fp32, sums in fp32 and rounds the result once to bf16; so
does an fp32 GEMM on bf16-valued inputs followed by one rounding. On such a CPU this class
computes every product that way, with the library's rounding points and coefficients: the
same arithmetic up to the order of fp32 summation, at fp32 GEMM speed. Everywhere else (CUDA,
a CPU with native bf16, the library's other Newton–Schulz methods) the library runs as it is.
"""

from __future__ import annotations

import functools

import pytorch_optimizer
import torch

from fambench.machine import cpu_has_bf16_dot_products

__all__ = ["Muon", "newton_schulz_bf16_via_fp32"]

# pytorch_optimizer's normalisation floor in zero_power_via_newton_schulz_5.
_NORM_EPS = 1e-7


def _to_bf16(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` rounded to bf16, kept in fp32 for the next GEMM."""
    return tensor.to(torch.bfloat16).float()


def newton_schulz_bf16_via_fp32(
    matrix: torch.Tensor, steps: int, coefficients: list[tuple[float, float, float]]
) -> torch.Tensor:
    """pytorch_optimizer's quintic Newton–Schulz in bf16, each product an fp32 GEMM rounded to
    bf16. ``matrix`` is 2-D; returns bf16, as the library does; the coefficient schedule's last
    entry repeats past its end, as in the library."""
    if matrix.ndim != 2:
        raise ValueError(f"Newton–Schulz takes a matrix, got {matrix.ndim} dimensions")
    transpose = matrix.size(0) > matrix.size(1)
    x = _to_bf16(matrix.mT if transpose else matrix)
    norm = _to_bf16(_to_bf16(torch.linalg.matrix_norm(x)).clamp_min(_NORM_EPS))
    x = _to_bf16(x / norm)
    for step in range(steps):
        w0, w1, w2 = coefficients[min(step, len(coefficients) - 1)]
        gram = _to_bf16(x @ x.mT)
        poly = _to_bf16(torch.addmm(gram, gram, gram, beta=w1, alpha=w2))
        x = _to_bf16(torch.addmm(x, poly, x, beta=w0, alpha=1.0))
    x = x.to(torch.bfloat16)
    return x.mT if transpose else x


@functools.cache
def _cpu_emulates_bf16() -> bool:
    return not cpu_has_bf16_dot_products()


class Muon(pytorch_optimizer.Muon):
    """pytorch_optimizer.Muon; on a CPU without bf16 dot products its Newton–Schulz products
    run as fp32 GEMMs rounded to bf16 (:func:`newton_schulz_bf16_via_fp32`)."""

    def _orthogonalize(self, group, updates):  # type: ignore[override]
        on_emulating_cpu = updates[0].device.type == "cpu" and _cpu_emulates_bf16()
        if not on_emulating_cpu or group.get("ns_method", "newton_schulz") != "newton_schulz":
            return pytorch_optimizer.Muon._orthogonalize(group, updates)
        return [
            newton_schulz_bf16_via_fp32(
                update.reshape(update.size(0), -1), group["ns_steps"], group["ns_coeffs"]
            )
            for update in updates
        ]
