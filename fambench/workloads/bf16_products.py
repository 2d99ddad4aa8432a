"""bf16 autocast on a CPU without bf16 dot products, at about 1.35x fp32's cost.

Such a CPU (no AVX512_BF16, no AMX) has torch emulate every bf16 matrix product and
convolution in a scalar loop, about 7x fp32's time for a `digits` forward and backward
(docs/scaling.md). Native bf16 multiplies bf16 operands exactly and sums the products in fp32,
rounding the result once to bf16; an fp32 GEMM on the same bf16 values, rounded once, is that
arithmetic up to summation order, which any two machines' kernels differ in. So under
`Bf16ProductsInFp32` each such operation with a bf16 operand runs on the operands widened to
fp32, and its outputs are rounded to the dtype the native operation gives. Everything else
(norms, activations, the loss) runs as autocast leaves it.

One difference from the native kernels stays: flash attention's probabilities enter their
product with the values unrounded, where the native kernel rounds them to bf16 first.

Times measured this way are not those of bf16 hardware: a run records whether its device had
native bf16 (``config.training.bf16_native``), and the analysis leaves the times of bf16 runs
without it out (``bf16_emulated`` in fambench.analysis.load).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

aten = torch.ops.aten

# The products torch would emulate, with the outputs the native operation gives in fp32 (by
# position): flash attention's log-sum-exp.
_PRODUCTS: dict[Any, frozenset[int]] = {
    aten.mm.default: frozenset(),
    aten.addmm.default: frozenset(),
    aten.bmm.default: frozenset(),
    aten.baddbmm.default: frozenset(),
    aten.convolution.default: frozenset(),
    aten.convolution_backward.default: frozenset(),
    aten._scaled_dot_product_flash_attention_for_cpu.default: frozenset({1}),
    aten._scaled_dot_product_flash_attention_for_cpu_backward.default: frozenset(),
}


def _widen(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:
        return value.float()
    return value


@functools.cache
def _is_composite(func: Any) -> bool:
    """Whether ``func`` is defined by other aten operations (CompositeImplicitAutograd)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd")


def _is_bf16(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16


class Bf16ProductsInFp32(TorchDispatchMode):
    """Within it, matrix products, convolutions and CPU flash attention that have a bf16
    operand compute in fp32 on the bf16 values and return bf16 (see the module's note)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kept = _PRODUCTS.get(func)
        # Every other operation passes through untouched, before any look at its operands
        # (the training step dispatches thousands of them).
        if kept is None and not _is_composite(func):
            return func(*args, **kwargs)
        if not any(_is_bf16(a) for a in (*args, *kwargs.values())):
            return func(*args, **kwargs)
        if kept is None:
            # Under inference mode composite operations (linear, conv1d, attention) arrive
            # whole: decomposed here, with the mode on, as autograd would have, so that their
            # products are met.
            with self:
                out = func.decompose(*args, **kwargs)
            return func(*args, **kwargs) if out is NotImplemented else out
        out = func(*tree_map(_widen, args), **tree_map(_widen, kwargs))
        if isinstance(out, torch.Tensor):
            return out.bfloat16()
        return type(out)(
            o.bfloat16() if isinstance(o, torch.Tensor) and i not in kept else o
            for i, o in enumerate(out)
        )
