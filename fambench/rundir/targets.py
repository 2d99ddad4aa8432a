"""Time and steps to target: the one definition, used by the trainer's summary and by compare."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def time_to_target(evals: pd.DataFrame, target: float | None) -> float:
    """Training seconds at which dev WER first reaches ``target``.

    Linear interpolation in training seconds between the two evaluations that bracket the
    target; the first evaluation's time when it is already at or under the target; NaN when
    the target is never reached (or there is none). ``evals`` needs ``step``, ``train_s`` and
    ``dev_wer`` columns (rows with NaN dev WER are ignored).
    """
    return _first_reach(evals, target, "train_s")


def steps_to_target(evals: pd.DataFrame, target: float | None) -> float:
    """The optimizer step at which dev WER first reaches ``target``, interpolated like
    time_to_target (so it is fractional); NaN when never reached."""
    return _first_reach(evals, target, "step")


def _first_reach(evals: pd.DataFrame, target: float | None, x: str) -> float:
    if target is None or not math.isfinite(target):
        return math.nan
    points = evals.dropna(subset=["dev_wer", x]).sort_values("step", kind="stable")
    wer, xs = points["dev_wer"].to_numpy(), points[x].to_numpy(dtype=float)
    hits = np.flatnonzero(wer <= target)
    if hits.size == 0:
        return math.nan
    i = int(hits[0])
    if i == 0:
        return float(xs[0])
    w0, w1, x0, x1 = wer[i - 1], wer[i], xs[i - 1], xs[i]
    return float(x0 + (w0 - target) / (w0 - w1) * (x1 - x0))
