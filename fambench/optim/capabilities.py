"""What an optimizer needs from a trainer beyond ``step()``: declared by the optimizer, never
inferred from its name.

* **Evaluation weights** (detected): an optimizer with ``train()`` and ``eval()`` methods, such
  as Schedule-Free AdamW, trains at one set of weights and is evaluated at another. A trainer
  calls ``eval()`` before every evaluation and ``train()`` after it, and before the first step.
  Both must be idempotent and change nothing but the parameters' values and the optimizer's own
  mode flag (so that a trainer may put the training weights back bit for bit afterwards).
* **Normalisation statistics at the evaluation weights** (``norm_batches``): batch norm's
  running statistics were gathered at the training weights, so an optimizer that evaluates
  elsewhere needs them re-estimated there, on this many training batches before each
  evaluation. Undeclared (None), it is :data:`DEFAULT_NORM_BATCHES` for an optimizer with
  evaluation modes and 0 for any other; an optimizer may declare another number (0: none).
* **Schedule** (declared): ``"warmup-hold-cosine"``, the workload's full schedule, or
  ``"warmup-only"``: warmup, then the base learning rate to the end (an optimizer that averages
  its iterates and wants no decay).

A registry entry declares them with :class:`Capabilities`; a plug-in class or factory by an
attribute ``fambench_capabilities`` holding the same keys as a dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "CAPABILITIES_ATTRIBUTE",
    "DEFAULT_NORM_BATCHES",
    "SCHEDULES",
    "Capabilities",
    "has_evaluation_modes",
    "parse_capabilities",
]

CAPABILITIES_ATTRIBUTE = "fambench_capabilities"
SCHEDULES = ("warmup-hold-cosine", "warmup-only")
# Schedule-Free's authors recompute batch-norm statistics on about 50 training batches.
DEFAULT_NORM_BATCHES = 50


@dataclass(frozen=True)
class Capabilities:
    """What an optimizer declares it needs (see the module's docstring)."""

    schedule: str = "warmup-hold-cosine"
    norm_batches: int | None = None

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if self.norm_batches is None:
            return
        if isinstance(self.norm_batches, bool) or not isinstance(self.norm_batches, int):
            raise ValueError(f"norm_batches must be an integer, got {self.norm_batches!r}")
        if self.norm_batches < 0:
            raise ValueError(f"norm_batches must be >= 0, got {self.norm_batches}")

    def resolved(self, evaluation_modes: bool) -> Capabilities:
        """These capabilities for an optimizer that has (or lacks) evaluation modes: an
        undeclared ``norm_batches`` becomes its default."""
        if self.norm_batches is not None:
            return self
        default = DEFAULT_NORM_BATCHES if evaluation_modes else 0
        return Capabilities(schedule=self.schedule, norm_batches=default)

    def to_json(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "norm_batches": self.norm_batches}


def parse_capabilities(data: Capabilities | Mapping[str, Any] | None) -> Capabilities:
    """Capabilities from their dict form (unknown keys refused); ValueError says what is wrong."""
    if data is None:
        return Capabilities()
    if isinstance(data, Capabilities):
        return data
    if not isinstance(data, Mapping):
        raise ValueError(f"capabilities must be a dict, got {type(data).__name__}")
    known = {f.name for f in fields(Capabilities)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown capability {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return Capabilities(**data)


def has_evaluation_modes(optimizer: object) -> bool:
    """Whether ``optimizer`` evaluates at other weights than it trains at (``train()`` and
    ``eval()`` methods, as Schedule-Free's optimizers have; torch's own have neither)."""
    return callable(getattr(optimizer, "train", None)) and callable(
        getattr(optimizer, "eval", None)
    )
