"""Helpers for tests that train and compare runs: stop one at a step, compare what two trained."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

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


def wait_for_checkpoint(
    run_root: Path,
    steps: int,
    still_going: Callable[[], bool] = lambda: True,
    timeout_s: float = 300,
) -> Path:
    """The run directory under ``run_root`` once its summary shows a checkpoint at ``steps``
    or later (the run still running); AssertionError when ``still_going()`` turns False or
    the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for summary in run_root.glob("*/summary.json"):
            try:
                data = json.loads(summary.read_text())
            except (OSError, ValueError):
                continue
            if data.get("status") == "running" and (data.get("steps") or 0) >= steps:
                return summary.parent
        assert still_going(), "the run ended before it could be stopped"
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step {steps} or later under {run_root}")
