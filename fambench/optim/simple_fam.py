"""SimpleFAM: the specification's lightweight FAM variant (one rule, no handlers, no trace).

For tensors with more than 1000 entries, after their 100th step, the momentum becomes
``min(0.98, alpha + 0.05 * r)`` where ``r`` is the share of the upper half of the magnitude
spectrum of the first 1000 gradient entries; otherwise it is ``alpha``. The update is the same
EMA momentum as FAMOptimizer: ``m <- a*m + (1-a)*g``, ``p <- p - lr*m``.

Differences from the specification: no ``print``; the spectra of all eligible tensors are
computed in one batch with no host synchronisation; an optional ``weight_decay`` (default 0,
the specification's behaviour) adds ``weight_decay * p`` to the gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["SimpleFAM"]


class SimpleFAM(Optimizer):
    """Simplified Frequency-Adaptive Momentum.

    Args:
        params: parameters or parameter groups (groups may set lr, alpha, beta, weight_decay).
        lr: learning rate.
        alpha: base momentum (EMA coefficient).
        beta: accepted for compatibility with the specification; unused by its rule.
        weight_decay: L2 penalty added to the gradient (extension; default 0).
    """

    start_step = 100
    min_numel = 1000
    sample_size = 1000
    boost = 0.05
    cap = 0.98

    def __init__(
        self,
        params,
        lr: float = 0.001,
        alpha: float = 0.9,
        beta: float = 0.99,
        *,
        weight_decay: float = 0.0,
    ) -> None:
        for key, value, high in (("lr", lr, None), ("alpha", alpha, 1.0), ("beta", beta, 1.0)):
            if not (math.isfinite(value) and value >= 0 and (high is None or value < high)):
                bound = f"in [0, {high})" if high is not None else ">= 0"
                raise ValueError(f"SimpleFAM: {key} must be {bound}, got {value!r}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"SimpleFAM: weight_decay must be >= 0, got {weight_decay!r}")
        super().__init__(params, dict(lr=lr, alpha=alpha, beta=beta, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimisation step; ``closure`` re-evaluates the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        samples: list[Tensor] = []
        rows_m: list[Tensor] = []
        rows_g: list[Tensor] = []
        rows_alpha: list[float] = []
        updates = []
        for group in self.param_groups:
            params, grads, moms, eligible = [], [], [], []
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError("SimpleFAM does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                if p.numel() > self.min_numel and state["step"] > self.start_step:
                    eligible.append(len(params))
                params.append(p)
                grads.append(grad)
                moms.append(state["exp_avg"])
            if not params:
                continue
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            chosen = set(eligible)
            for j in eligible:
                samples.append(grads[j].reshape(-1)[: self.sample_size])
                rows_m.append(moms[j])
                rows_g.append(grads[j])
                rows_alpha.append(group["alpha"])
            fixed_m = [m for j, m in enumerate(moms) if j not in chosen]
            fixed_g = [g for j, g in enumerate(grads) if j not in chosen]
            if fixed_m:
                torch._foreach_lerp_(fixed_m, fixed_g, 1.0 - group["alpha"])
            updates.append((params, moms, group["lr"]))

        if samples:
            # One batch per sample length (all 1000 unless a subclass lowers min_numel).
            by_length: dict[int, list[int]] = {}
            for row, sample in enumerate(samples):
                by_length.setdefault(sample.shape[0], []).append(row)
            for rows in by_length.values():
                batch = torch.stack([samples[r] for r in rows]).float()
                power = torch.fft.rfft(batch).abs()
                half = power.shape[1] // 2
                high_ratio = power[:, half:].sum(dim=1) / (power.sum(dim=1) + 1e-8)
                alpha = torch.tensor(
                    [rows_alpha[r] for r in rows], dtype=torch.float32, device=batch.device
                )
                momentum = torch.clamp(alpha + self.boost * high_ratio, max=self.cap)
                torch._foreach_lerp_(
                    [rows_m[r] for r in rows],
                    [rows_g[r] for r in rows],
                    list((1.0 - momentum).unbind()),
                )

        for params, moms, lr in updates:
            torch._foreach_add_(params, moms, alpha=-lr)
        return loss
