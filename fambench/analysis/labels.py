"""How tables, plots and warnings name things: a configuration, a budget, a missing number."""

from __future__ import annotations

import json
import math

import pandas as pd

from fambench.rundir import hparams_key

#: What a table shows for a value that is missing.
MISSING = "—"
#: The budget columns of runs, aggregate and pairwise frames.
BUDGET_KEYS = ("steps_budget", "time_budget_s")


def as_float(value: object) -> float:
    """``value`` as a float; NaN for None, a bool or anything that is not a number."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def config_label(optimizer: str, overrides: object) -> str:
    """An optimizer and the values the user set beyond the tuned ones: ``fam``,
    ``fam[sampling=random]``. One label names one configuration on every workload (the tuned
    values under it differ per workload)."""
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides)
        except ValueError:
            overrides = {}
    if not isinstance(overrides, dict) or not overrides:
        return str(optimizer)
    return f"{optimizer}[{hparams_key(overrides)}]"


def budget_label(steps_budget: object, time_budget_s: object) -> str:
    """``"2000 steps"``, ``"600 s"`` or ``"2000 steps, 600 s"``; "—" without either."""
    steps, seconds = as_float(steps_budget), as_float(time_budget_s)
    parts = [f"{steps:.0f} steps"] if math.isfinite(steps) else []
    if math.isfinite(seconds):
        parts.append(f"{seconds:g} s")
    return ", ".join(parts) or MISSING


def budget_labels(frame: pd.DataFrame) -> list[str]:
    """budget_label of every row of a frame with the BUDGET_KEYS columns."""
    return [budget_label(*v) for v in zip(*(frame[k] for k in BUDGET_KEYS), strict=True)]
