"""Running a plan (see :mod:`fambench.optim.fam.plan`): from the analysed gradients to momenta.

Per step, with no host synchronisation and no Python loop over bands: the samples of all rows
are copied into the plan's buffer with one ``_foreach_copy_``; each bucket is one ``rfft`` whose
squared parts go to one shared buffer, so the magnitudes are a single pass; band sums are one
matrix product per bucket; the normalised band shares update the EMAs; each group's handler maps
its rows' EMAs to momenta at once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fambench.optim.devices import host_to_device
from fambench.optim.fam.plan import Buffers, Part, Plan

__all__ = ["momentum_weights", "seed_generator"]


def momentum_weights(
    plan: Plan, grads: list[Tensor], generator: torch.Generator | None
) -> list[Tensor]:
    """``1 - a`` of each analysed row as 0-dim tensors, ``a`` its effective momentum.

    ``grads`` are the rows' gradients (weight decay added); ``generator`` draws the samples of
    ``sampling="random"`` rows. Updates ``plan.ema`` (the band EMAs) and ``plan.momentum``.
    """
    _band_sums(plan, grads, generator)
    _update_ema(plan, _band_shares(plan))
    momentum = _handler_momenta(plan)
    plan.momentum = momentum
    torch.sub(plan.one, momentum, out=plan.weights)
    return plan.weight_views


def seed_generator(generator: torch.Generator | None, seed: int, step: int) -> torch.Generator:
    """``generator`` (a new one if None) seeded for ``step`` of a run with ``seed``."""
    # Re-seeding from (seed, step) keeps random sampling reproducible and lets a run resumed
    # from a state dict draw the same samples, with no generator state to save.
    if generator is None:
        generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + step * 7_919) % (2**63 - 1))
    return generator


def _band_sums(plan: Plan, grads: list[Tensor], generator: torch.Generator | None) -> None:
    """Sample every row into the buffers, then its spectrum's band sums and total."""
    buffers = plan.buffers
    sources: list[Tensor] = []
    for bucket in plan.buckets:
        for part in bucket.parts:
            sources.extend(_part_samples(part, grads, generator, plan.device))
    torch._foreach_copy_(buffers.destinations, sources)
    for bucket in plan.buckets:
        # rfft's out= would compute into a new tensor and copy it; squaring reads it once.
        spectrum = torch.view_as_real(torch.fft.rfft(bucket.samples))
        torch.mul(spectrum, spectrum, out=bucket.squares)
    _magnitude(buffers)
    for bucket in plan.buckets:
        torch.matmul(bucket.magnitude, bucket.matrix, out=bucket.sums)


def _band_shares(plan: Plan) -> Tensor:
    """(N, max_bands): each row's band sums over its spectrum's total (plus eps)."""
    picked = torch.take(plan.buffers.sums, plan.gather).to(plan.ema.dtype)
    n_bands = plan.ema.shape[1]
    bands, total = picked[:, :n_bands], picked[:, n_bands:]
    denom = total + plan.denom_eps
    if plan.guard_zero:
        denom = torch.where(total > 0, denom, torch.ones_like(denom))
    return bands / denom


def _update_ema(plan: Plan, observed: Tensor) -> None:
    if plan.first_weight is not None:
        plan.ema.lerp_(observed, plan.first_weight)
        plan.first_weight = None
    else:
        plan.ema.lerp_(observed, plan.ema_weight)


def _handler_momenta(plan: Plan) -> Tensor:
    """(N,): each block's handler applied to its rows' EMAs (fixed blocks keep their alpha)."""
    momenta = []
    for block in plan.blocks:
        base = block.base_alpha
        if block.adaptive:
            values = plan.ema[block.start : block.stop, : block.n_bands]
            momenta.append(block.handler.momentum(values, base))
        else:
            momenta.append(base)
    momentum = momenta[0] if len(momenta) == 1 else torch.cat(momenta)
    if momentum.shape != plan.weights.shape:
        raise RuntimeError(
            f"frequency handler returned momenta of shape {tuple(momentum.shape)}, "
            f"expected {tuple(plan.weights.shape)}"
        )
    return momentum


def _part_samples(
    part: Part,
    grads: list[Tensor],
    generator: torch.Generator | None,
    device: torch.device,
) -> list[Tensor]:
    """The sample of each row of ``part``, shaped like its destination in the buffers."""
    sources = [grads[r] for r in part.rows]
    if part.kind == "full":
        return sources
    if part.kind == "strided":
        return _strided_samples(part, sources)
    if part.kind == "random_nd":
        return _random_nd_samples(part, sources, generator, device)
    numel = part.shape[0]  # random_1d
    picks = [
        host_to_device(torch.randperm(numel, generator=generator)[: part.counts[0]], device)
        for _ in sources
    ]
    return [torch.take(g, idx) for g, idx in zip(sources, picks, strict=True)]


def _strided_samples(part: Part, sources: list[Tensor]) -> list[Tensor]:
    views = []
    for g, stride, fallback in zip(sources, part.strides, part.fallbacks, strict=True):
        if g.is_contiguous():
            views.append(g.as_strided(part.size, stride))
        elif fallback is not None:
            rows = g[fallback]
            views.append(rows.reshape(rows.shape[0], -1)[:, : part.size[1]])
        else:
            views.append(g.unfold(0, part.size[1], stride[0])[: part.size[0]])
    return views


def _random_nd_samples(
    part: Part, sources: list[Tensor], generator: torch.Generator | None, device: torch.device
) -> list[Tensor]:
    n = len(sources)
    n_rows, n_cols = part.counts
    dim0, dim1 = part.shape[0], part.shape[1]
    rest = math.prod(part.shape[2:])
    rows = torch.rand(n, dim0, generator=generator).argsort(dim=1)[:, :n_rows]
    cols = torch.rand(n, dim1, generator=generator).argsort(dim=1)[:, :n_cols]
    flat = (rows * (dim1 * rest))[:, :, None] + (cols * rest)[:, None, :]
    if rest > 1:
        flat = flat[..., None] + torch.arange(rest)
    flat = host_to_device(flat.reshape(n, -1), device)
    return [torch.take(g, flat[j]) for j, g in enumerate(sources)]


def _magnitude(buffers: Buffers) -> None:
    """``sqrt(re^2 + im^2)`` of every bin into ``magnitudes``: several times faster than
    complex abs (hypot) on CPU."""
    torch.add(buffers.squares[:, 0], buffers.squares[:, 1], out=buffers.magnitudes)
    buffers.magnitudes.sqrt_()
