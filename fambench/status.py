"""`fambench status`: what a results directory's grid or tuning study is doing, from its run
directories and, for work submitted to Slurm, the queue.

Each Slurm task is shown with its state in the queue while Slurm holds it (PENDING, RUNNING,
REQUEUED, ...) and, once it has left the queue, with its run's recorded status; a task that
left the queue without a finished run is where to look first (its log is under
``<out>/.slurm/logs/``). The run counts cover every run directory under the results
directory, however it was started.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from fambench.rundir import RunFiles
from fambench.rundir.loading import read_summary
from fambench.slurm import SLURM_DIR, read_jobs

GONE = "—"  # not in Slurm's queue (any more)


def run_counts(out_dir: Path) -> Counter[str]:
    """How many run directories under ``out_dir`` have each status."""
    counts: Counter[str] = Counter()
    for summary_path in sorted(Path(out_dir).rglob("summary.json")):
        if SLURM_DIR in summary_path.parts:
            continue
        summary = read_summary(RunFiles(summary_path.parent))
        if summary is not None:
            counts[summary.status] += 1
    return counts


def task_table(out_dir: Path, states: Mapping[str, str] | None) -> pd.DataFrame:
    """One row per Slurm task submitted for ``out_dir``: job, kind, Slurm's state (None:
    unknown), run id and status (grid tasks)."""
    rows = []
    for submitted in read_jobs(out_dir):
        for index, task in enumerate(submitted.task_ids):
            run_id = submitted.run_ids[index] if index < len(submitted.run_ids) else ""
            run_status = ""
            if run_id:
                summary = read_summary(RunFiles(Path(out_dir) / run_id))
                run_status = summary.status if summary is not None else "not started"
            rows.append(
                {
                    "task": task,
                    "kind": submitted.kind,
                    "slurm": "unknown" if states is None else states.get(task, GONE),
                    "run": run_id,
                    "run status": run_status,
                }
            )
    return pd.DataFrame(rows, columns=["task", "kind", "slurm", "run", "run status"])


def task_counts(tasks: pd.DataFrame) -> Counter[str]:
    """Tasks by Slurm state (lower case), those gone from the queue as "left the queue"."""
    return Counter("left the queue" if state == GONE else state.lower() for state in tasks["slurm"])
