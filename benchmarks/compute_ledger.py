"""The compute a study has spent: CPU-hours per optimizer, for tuning and for the study runs,
and how much of it was timed uncontended.

Reads every run directory under the given results directories (tuning trials and grid runs
alike) from their summary.json: a run's CPU seconds are the process's own (training and
evaluation, every session it ran in); its thread-hours are (train_s + eval_s) x threads, the
cores it held. Runs still without a summary count as nothing spent yet.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/compute_ledger.py \\
        tuning=results/sweeps study=results/study-sota
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from fambench.analysis.tables import to_markdown
from fambench.rundir import find_run_dirs, load_run


def ledger_rows(phase: str, root: Path) -> list[dict]:
    rows = []
    for run_dir in find_run_dirs([root]):
        run = load_run(run_dir)
        summary = run.summary
        if summary is None:
            continue
        held_s = ((summary.train_s or 0.0) + (summary.eval_s or 0.0)) * (summary.threads or 1)
        rows.append(
            {
                "phase": phase,
                "optimizer": run.config.optimizer,
                "runs": 1,
                "cpu_h": (summary.cpu_s or 0.0) / 3600,
                "thread_h": held_s / 3600,
                "uncontended_thread_h": held_s / 3600 if summary.contended is False else 0.0,
                "unmeasured_runs": int(summary.contended is None),
            }
        )
    return rows


def ledger(sources: dict[str, Path]) -> pd.DataFrame:
    rows = [row for phase, root in sources.items() for row in ledger_rows(phase, root)]
    table = pd.DataFrame(rows).groupby(["phase", "optimizer"], as_index=False).sum()
    totals = table.groupby("phase", as_index=False).sum(numeric_only=True)
    totals["optimizer"] = "(all)"
    table = pd.concat([table, totals], ignore_index=True)
    table["uncontended_share"] = table["uncontended_thread_h"] / table["thread_h"]
    return table


def main(argv: list[str]) -> int:
    sources = {}
    for item in argv or ["tuning=results/sweeps", "study=results/study-sota"]:
        phase, _, path = item.partition("=")
        if not path or not Path(path).is_dir():
            print(f"{item!r}: expected PHASE=DIRECTORY with runs under it", file=sys.stderr)
            return 2
        sources[phase] = Path(path)
    table = ledger(sources)
    numbers = table.select_dtypes("number").columns
    table[numbers] = table[numbers].map(lambda v: f"{v:.2f}" if v % 1 else f"{v:.0f}")
    print(to_markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
