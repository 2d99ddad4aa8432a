"""Time to target: the one definition, used by the trainer's summary and by compare."""

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
    if target is None or not math.isfinite(target):
        return math.nan
    points = evals.dropna(subset=["dev_wer", "train_s"]).sort_values("step", kind="stable")
    wer, secs = points["dev_wer"].to_numpy(), points["train_s"].to_numpy()
    hits = np.flatnonzero(wer <= target)
    if hits.size == 0:
        return math.nan
    i = int(hits[0])
    if i == 0:
        return float(secs[0])
    w0, w1, t0, t1 = wer[i - 1], wer[i], secs[i - 1], secs[i]
    return float(t0 + (w0 - target) / (w0 - w1) * (t1 - t0))
