"""The one error type of fambench.optim (its own module so that every other module can raise it)."""

from __future__ import annotations

__all__ = ["OptimizerConfigError"]


class OptimizerConfigError(ValueError):
    """An unknown optimizer name, an invalid hyperparameter or search space (one-line message)."""
