"""The compute a study has spent: CPU-hours per optimizer, for tuning and for the study runs,
and how much of it was timed uncontended.

Every run directory under a phase's directories counts (tuning trials and grid runs alike),
read from its summary.json: a run's CPU hours are the process's own CPU seconds (training and
evaluation, every session it ran in); its thread-hours are (train_s + eval_s) × threads, the
cores it held. A run still without a summary counts as nothing spent yet. Thread-hours on
emulated bf16 are counted apart as well: uncontended or not, their times are not bf16's and the
comparisons leave them out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import pandas as pd

from fambench.analysis.load import on_emulated_bf16
from fambench.rundir import find_run_dirs, load_run

COLUMNS = [
    "phase", "optimizer", "runs", "cpu_h", "thread_h", "uncontended_thread_h",
    "emulated_bf16_thread_h", "unmeasured_runs", "uncontended_share",
]  # fmt: skip


def _rows(phase: str, roots: Sequence[str | os.PathLike[str]]) -> list[dict]:
    rows = []
    for run_dir in find_run_dirs(roots):
        run = load_run(run_dir)
        summary = run.summary
        if summary is None:
            continue
        held_h = ((summary.train_s or 0.0) + (summary.eval_s or 0.0)) * (summary.threads or 1)
        held_h /= 3600
        rows.append(
            {
                "phase": phase,
                "optimizer": run.config.optimizer,
                "runs": 1,
                "cpu_h": (summary.cpu_s or 0.0) / 3600,
                "thread_h": held_h,
                "uncontended_thread_h": held_h if summary.contended is False else 0.0,
                "emulated_bf16_thread_h": held_h if on_emulated_bf16(run) else 0.0,
                "unmeasured_runs": int(summary.contended is None),
            }
        )
    return rows


def compute_ledger(sources: Mapping[str, Sequence[str | os.PathLike[str]]]) -> pd.DataFrame:
    """Per phase (a key of ``sources``, e.g. "tuning", "study") and optimizer, then an
    "(all)" row per phase: runs, CPU-hours, thread-hours, the uncontended thread-hours and
    their share, the thread-hours on emulated bf16, and the runs that ran before contention
    was measured."""
    rows = [row for phase, roots in sources.items() for row in _rows(phase, roots)]
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.DataFrame(rows).groupby(["phase", "optimizer"], as_index=False, sort=False).sum()
    totals = table.groupby("phase", as_index=False, sort=False).sum(numeric_only=True)
    totals["optimizer"] = "(all)"
    table = pd.concat([table, totals], ignore_index=True)
    table["uncontended_share"] = table["uncontended_thread_h"] / table["thread_h"]
    order = {phase: i for i, phase in enumerate(sources)}
    table = table.sort_values(
        ["phase", "optimizer"], key=lambda c: c.map(order) if c.name == "phase" else c
    )
    return table[COLUMNS].reset_index(drop=True)


def has_emulated_bf16(table: pd.DataFrame) -> bool:
    """Whether any run of the ledger trained on emulated bf16."""
    return bool((table["emulated_bf16_thread_h"] > 0).any())


def ledger_display(table: pd.DataFrame) -> pd.DataFrame:
    """The ledger as text: hours to two decimals, the share as a percentage; the emulated bf16
    column only where some run had it."""
    frame = table.copy()
    for column in ("cpu_h", "thread_h", "uncontended_thread_h", "emulated_bf16_thread_h"):
        frame[column] = [f"{v:.2f}" for v in table[column]]
    frame["uncontended_share"] = [f"{v:.0%}" for v in table["uncontended_share"]]
    for column in ("runs", "unmeasured_runs"):
        frame[column] = [f"{int(v)}" for v in table[column]]
    if not has_emulated_bf16(table):
        frame = frame.drop(columns="emulated_bf16_thread_h")
    return frame.rename(
        columns={
            "cpu_h": "CPU h",
            "thread_h": "thread h",
            "uncontended_thread_h": "uncontended thread h",
            "emulated_bf16_thread_h": "emulated bf16 thread h",
            "unmeasured_runs": "runs not measured",
            "uncontended_share": "uncontended share",
        }
    )
