"""WarmupHoldCosine: linear warmup, hold, cosine decay to ``eta_min`` — for any optimizer.

``FAMScheduler`` and ``FAMScheduler2``, the FAM specification's names for this schedule, are
aliases of the same class.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["FAMScheduler", "FAMScheduler2", "WarmupHoldCosine"]


class WarmupHoldCosine(LRScheduler):
    """Step-based schedule: linear warmup → hold → cosine decay (every optimizer's schedule).

    At scheduler step ``t`` and base learning rate ``base``:

    * ``t < warmup_steps``: ``warmup_start_lr + (base - warmup_start_lr) * t / warmup_steps``;
    * ``t < decay_start_step``: ``base``;
    * otherwise ``eta_min + (base - eta_min) * (1 + cos(pi * min(1, progress))) / 2`` with
      ``progress = (t - decay_start_step) / (total_steps - decay_start_step)``.

    ``decay_start_step`` defaults to ``warmup_steps``. Unlike the specification, the rate stays at
    ``eta_min`` after ``total_steps`` (the specification's cosine climbs back up) and no ``1e-8`` is
    added during the decay.

    ``warmup_start_factor`` and ``final_factor``, when given, replace ``warmup_start_lr`` and
    ``eta_min`` by ``base x factor`` for each group: an optimizer whose groups have different
    rates (Muon's matrices and its AdamW part) keeps their ratio through the schedule.
    ``final_factor=1`` is warmup and then the base rate to the end.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int = 1000,
        total_steps: int = 100000,
        decay_start_step: int | None = None,
        warmup_start_lr: float = 1e-6,
        eta_min: float = 1e-6,
        last_epoch: int = -1,
        *,
        warmup_start_factor: float | None = None,
        final_factor: float | None = None,
    ) -> None:
        name = type(self).__name__
        decay_start = warmup_steps if decay_start_step is None else decay_start_step
        for key, value in (
            ("warmup_steps", warmup_steps),
            ("total_steps", total_steps),
            ("decay_start_step", decay_start),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: {key} must be a non-negative integer, got {value!r}")
        if total_steps <= warmup_steps:
            raise ValueError(
                f"{name}: total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})"
            )
        if not warmup_steps <= decay_start < total_steps:
            raise ValueError(
                f"{name}: decay_start_step ({decay_start}) must be in "
                f"[warmup_steps, total_steps) = [{warmup_steps}, {total_steps})"
            )
        for key, value in (
            ("warmup_start_lr", warmup_start_lr),
            ("eta_min", eta_min),
            ("warmup_start_factor", warmup_start_factor),
            ("final_factor", final_factor),
        ):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: {key} must be >= 0, got {value!r}")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.decay_start_step = decay_start
        self.warmup_start_lr = warmup_start_lr
        self.eta_min = eta_min
        self.warmup_start_factor = warmup_start_factor
        self.final_factor = final_factor
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int, base_lr: float) -> float:
        """Learning rate at scheduler step ``step`` for a group whose base rate is ``base_lr``."""
        start = self.warmup_start_lr
        if self.warmup_start_factor is not None:
            start = base_lr * self.warmup_start_factor
        end = self.eta_min if self.final_factor is None else base_lr * self.final_factor
        if step < self.warmup_steps:
            fraction = step / self.warmup_steps
            return start + (base_lr - start) * fraction
        if step < self.decay_start_step or end == base_lr:
            return base_lr
        progress = min(
            1.0, (step - self.decay_start_step) / (self.total_steps - self.decay_start_step)
        )
        return end + (base_lr - end) * (1.0 + math.cos(math.pi * progress)) / 2.0

    def get_lr(self) -> list[float]:
        """Learning rates for the current step (closed form)."""
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()


FAMScheduler = WarmupHoldCosine
"""Alias: the FAM specification's name for this schedule."""

FAMScheduler2 = WarmupHoldCosine
"""Alias: the name the specification's usage example calls (the same class)."""
