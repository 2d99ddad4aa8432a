"""bf16 on a CPU without bf16 dot products: its products as fp32 arithmetic on bf16 values,
rounded once to bf16 (fambench.workloads.bf16_products), and used only there."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

import fambench.workloads.precision as precision_module
from fambench.model import ConformerCTC
from fambench.workloads import get_preset
from fambench.workloads.bf16_products import Bf16ProductsInFp32
from fambench.workloads.precision import autocast, backward_products, emulates_bf16

CPU = torch.device("cpu")


def _native(monkeypatch, value: bool) -> None:
    monkeypatch.setattr(precision_module, "cpu_has_bf16_dot_products", lambda: value)


def _as_bf16_products(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A bf16 linear layer's arithmetic: bf16 operands, fp32 sums, one rounding to bf16."""
    b16 = lambda t: t.bfloat16().float()  # noqa: E731
    return (b16(x) @ b16(weight).T + b16(bias)).bfloat16()


def test_a_linear_layer_is_one_fp32_product_of_the_bf16_values_rounded_once(monkeypatch):
    _native(monkeypatch, False)
    torch.manual_seed(0)
    x, weight, bias = torch.randn(7, 64), torch.randn(96, 64), torch.randn(96)
    with autocast("bf16", CPU):
        y = F.linear(x, weight, bias)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, _as_bf16_products(x, weight, bias))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch_bf16 = F.linear(x, weight, bias)  # torch's own bf16 (native or emulated)
    torch.testing.assert_close(y.float(), torch_bf16.float(), rtol=2**-7, atol=1e-2)


def test_attention_keeps_its_log_sum_exp_in_fp32_and_matches_torchs_bf16():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 8, dtype=torch.bfloat16) for _ in range(3))
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
    with Bf16ProductsInFp32():
        out, logsumexp = flash(q, k, v)
    reference_out, reference_lse = flash(q, k, v)
    assert (out.dtype, logsumexp.dtype) == (reference_out.dtype, reference_lse.dtype)
    assert (out.dtype, logsumexp.dtype) == (torch.bfloat16, torch.float32)
    torch.testing.assert_close(out.float(), reference_out.float(), rtol=2**-6, atol=2e-2)
    torch.testing.assert_close(logsumexp, reference_lse, rtol=1e-3, atol=1e-3)


def test_fp32_operations_pass_through_unchanged():
    torch.manual_seed(0)
    a, b = torch.randn(5, 6), torch.randn(6, 3)
    with Bf16ProductsInFp32():
        product = a @ b
    assert product.dtype == torch.float32 and torch.equal(product, a @ b)


def test_a_conformer_step_under_emulation_is_torchs_bf16_up_to_rounding(monkeypatch):
    """Forward and backward of the smoke Conformer: the emulated bf16 step is torch's own bf16
    step up to bf16 roundings, and is not fp32's."""
    torch.manual_seed(0)
    model = ConformerCTC(get_preset("smoke").model.replace(vocab_size=12))
    feats, lens = torch.randn(2, 60, 80), torch.tensor([60, 44])

    def step(context, backward) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        with context:
            log_probs, _ = model(feats, lens)
        with backward:
            log_probs.float().sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return log_probs.detach().float(), grads

    fp32 = step(contextlib.nullcontext(), contextlib.nullcontext())
    torch_bf16 = step(torch.autocast("cpu", dtype=torch.bfloat16), contextlib.nullcontext())
    _native(monkeypatch, False)
    emulated = step(autocast("bf16", CPU), backward_products("bf16", CPU))
    relative = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    for i in (0, 1):  # log-probabilities, then gradients (measured: <= 0.4% and 1.1%)
        assert relative(emulated[i], torch_bf16[i]) < 0.02
        assert 1e-4 < relative(emulated[i], fp32[i]) < 0.03  # bf16, not fp32


def test_under_inference_mode_linear_convolution_and_attention_are_emulated_too(monkeypatch):
    """Evaluation runs under inference mode, where composite operations (linear, conv1d,
    attention) reach the mode whole: decomposed there, they compute as in training."""
    _native(monkeypatch, False)
    torch.manual_seed(0)
    x, weight, bias = torch.randn(7, 64), torch.randn(96, 64), torch.randn(96)
    with torch.inference_mode(), autocast("bf16", CPU):
        y = F.linear(x, weight, bias)
    assert torch.equal(y, _as_bf16_products(x, weight, bias))
    model = ConformerCTC(get_preset("smoke").model.replace(vocab_size=12)).eval()
    feats, lens = torch.randn(2, 60, 80), torch.tensor([60, 44])
    outputs = []
    for context in (torch.inference_mode, torch.no_grad):
        with context(), autocast("bf16", CPU):
            outputs.append(model(feats, lens)[0].float())
    assert torch.equal(outputs[0], outputs[1])


def test_only_bf16_on_a_cpu_without_it_is_emulated(monkeypatch):
    _native(monkeypatch, True)
    assert not emulates_bf16("bf16", CPU)
    assert isinstance(autocast("bf16", CPU), torch.autocast)
    assert isinstance(backward_products("bf16", CPU), contextlib.nullcontext)
    _native(monkeypatch, False)
    assert emulates_bf16("bf16", CPU) and not emulates_bf16("fp32", CPU)
    assert isinstance(autocast("fp32", CPU), contextlib.nullcontext)
    assert isinstance(backward_products("fp32", CPU), contextlib.nullcontext)
    assert isinstance(backward_products("bf16", CPU), Bf16ProductsInFp32)
