"""The steps since the last log row: their loss and gradient norm stay on the device until the
log interval ends, then come back to the host in one read (the step itself never waits for
the device). Divergence is checked on the values read back."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


class Diverged(Exception):
    """A non-finite or too large loss, or a non-finite gradient norm, at ``step``. Found when
    the interval's values are read back: the updates up to the end of the interval were applied
    (the run ends there; nothing after it is trained)."""

    def __init__(self, message: str, step: int, loss: float, lr: float, grad_norm: float):
        super().__init__(message)
        self.step, self.loss, self.lr, self.grad_norm = step, loss, lr, grad_norm


@dataclass
class PendingSteps:
    """Per step since the last read-back: its number, learning rate and (loss, grad norm) as a
    device tensor."""

    steps: list[int] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)

    def add(self, step: int, lr: float, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.steps.append(step)
        self.lrs.append(lr)
        self.values.append(torch.stack([loss.detach().float(), grad_norm.detach().float()]))

    def read_back(
        self, max_loss: float, combine: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> list[tuple[int, float, float, float]]:
        """(step, lr, loss, grad norm) of every pending step, in one host read; Diverged at the
        first step whose loss is not finite or above ``max_loss``, or whose gradient norm is
        not finite. ``combine`` turns this process's losses into the run's (the sum over
        data-parallel ranks); gradient norms are the same on every rank."""
        if not self.values:
            return []
        stacked = torch.stack(self.values)
        if combine is not None:
            stacked = torch.stack([combine(stacked[:, 0]), stacked[:, 1]], dim=1)
        pairs = stacked.double().tolist()
        rows = [
            (s, lr, loss, grad)
            for s, lr, (loss, grad) in zip(self.steps, self.lrs, pairs, strict=True)
        ]
        self.steps, self.lrs, self.values = [], [], []
        for step, lr, loss, grad in rows:
            if not math.isfinite(loss) or loss > max_loss:
                raise Diverged(
                    f"diverged at step {step}: train loss {loss:.4g} (bound {max_loss:g}) "
                    f"at lr {lr:.4g}",
                    step, loss, lr, grad,
                )  # fmt: skip
            if not math.isfinite(grad):
                raise Diverged(
                    f"diverged at step {step}: gradient norm {grad} at lr {lr:.4g}",
                    step, loss, lr, grad,
                )  # fmt: skip
        return rows
