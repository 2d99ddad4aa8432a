"""Helpers for tests that train and compare runs: stop one at a step, compare what two trained."""

from __future__ import annotations

import pandas as pd


def comparable(metrics: pd.DataFrame) -> pd.DataFrame:
    """A run's metrics without the columns that time it (equal runs differ only there)."""
    return metrics.drop(columns=["train_s", "eval_s"]).reset_index(drop=True)


def interrupt_at(step: int):
    """A progress hook that interrupts the run (as Ctrl-C would) when ``step`` has trained."""

    def hook(event):
        if event.phase == "train" and event.step == step:
            raise KeyboardInterrupt

    return hook
