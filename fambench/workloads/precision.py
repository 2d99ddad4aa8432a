"""The arithmetic a run computes in: fp32, or bf16 autocast where the device multiplies bf16.

Under bf16 autocast the matrix products and convolutions run in bf16; the model's output
log-softmax and the CTC loss are computed in fp32 (`ConformerCTC.forward`, `ctc_loss_sum`),
and layer and batch norm accumulate their statistics in fp32 (torch's CPU and CUDA kernels do
for bf16 inputs; batch norm's running statistics stay fp32 tensors).
"""

from __future__ import annotations

import contextlib

import torch

from fambench.errors import ConfigError
from fambench.machine import cpu_has_bf16_dot_products

PRECISIONS = ("fp32", "bf16")


def has_bf16_dot_products(device: torch.device) -> bool:
    """Whether bf16 matrix products are native on ``device`` (faster than fp32, not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16_dot_products()


def resolve_precision(requested: str | None, default_bf16: bool, device: torch.device) -> str:
    """The precision a run uses: ``requested`` (refused where the device lacks bf16), else
    bf16 when the preset asks for it and the device has it, else fp32."""
    if requested is not None and requested not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    native = has_bf16_dot_products(device)
    if requested == "bf16" and not native:
        raise ConfigError(
            f"--precision bf16: this {device.type.upper()} has no native bf16 dot products "
            "(a CPU needs AVX512_BF16 or AMX), so bf16 would be slower than fp32; "
            "use --precision fp32"
        )
    if requested is not None:
        return requested
    return "bf16" if default_bf16 and native else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for precision "bf16"; nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
