"""The arithmetic a run computes in: fp32, or bf16 autocast.

Under bf16 autocast the matrix products and convolutions run in bf16; the model's output
log-softmax and the CTC loss are computed in fp32 (`ConformerCTC.forward`, `ctc_loss_sum`),
and layer and batch norm accumulate their statistics in fp32 (torch's CPU and CUDA kernels do
for bf16 inputs; batch norm's running statistics stay fp32 tensors). A preset's default bf16
applies only where the device multiplies bf16 natively; asked for on a CPU without, bf16's
products run as fp32 arithmetic on bf16 values (fambench.workloads.bf16_products), so that a
study pinned to bf16 can go on on any CPU, its times then left out.
"""

from __future__ import annotations

import contextlib

import torch

from fambench.errors import ConfigError
from fambench.machine import cpu_has_bf16_dot_products
from fambench.workloads.bf16_products import Bf16ProductsInFp32

PRECISIONS = ("fp32", "bf16")


def has_bf16_dot_products(device: torch.device) -> bool:
    """Whether bf16 matrix products are native on ``device`` (faster than fp32, not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16_dot_products()


def resolve_precision(requested: str | None, default_bf16: bool, device: torch.device) -> str:
    """The precision a run uses: ``requested`` (bf16 refused on a GPU without it), else bf16
    when the preset asks for it and the device has it natively, else fp32."""
    if requested is not None and requested not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    native = has_bf16_dot_products(device)
    if requested == "bf16" and not native and device.type != "cpu":
        raise ConfigError(
            f"--precision bf16: this {device.type.upper()} has no bf16 support; "
            "use --precision fp32"
        )
    if requested is not None:
        return requested
    return "bf16" if default_bf16 and native else "fp32"


def emulates_bf16(precision: str, device: torch.device) -> bool:
    """Whether bf16's products run as fp32 arithmetic here (a CPU without bf16 dot products)."""
    return precision == "bf16" and device.type == "cpu" and not has_bf16_dot_products(device)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for precision "bf16"; nothing for "fp32"."""
    if precision != "bf16":
        return contextlib.nullcontext()
    if not emulates_bf16(precision, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    stack = contextlib.ExitStack()
    stack.enter_context(Bf16ProductsInFp32())
    stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
    return stack


def backward_products(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """What the backward pass of a step under `autocast` runs in: the same products, where
    they are emulated (autocast itself covers only the forward pass)."""
    return Bf16ProductsInFp32() if emulates_bf16(precision, device) else contextlib.nullcontext()
