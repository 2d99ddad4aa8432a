"""`fambench status OUT`: the run directories' statuses and, for Slurm submissions, the queue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fambench.cli import app, console, err_console, fail
from fambench.cli.printing import fitted_table
from fambench.errors import FambenchError


@app.command("status")
def status_command(
    out: Annotated[Path, typer.Argument(help="The results directory of a grid or tuning study.")],
) -> None:
    """What is queued, running, finished and failed under OUT (run directories and Slurm)."""
    from fambench.slurm import queue, read_jobs
    from fambench.status import run_counts, task_counts, task_table

    if not out.is_dir():
        raise fail(f"{out}: no such results directory")
    try:
        states = None
        if read_jobs(out):
            try:
                states = queue()
            except FambenchError as exc:
                err_console.print(f"[yellow]Slurm's queue unknown: {exc}[/]", highlight=False)
        tasks = task_table(out, states)
        counts = run_counts(out)
    except FambenchError as exc:
        raise fail(str(exc)) from None
    if not tasks.empty:
        console.print(fitted_table(tasks.astype(str), "Slurm tasks"))
        shown = ", ".join(f"{n} {state}" for state, n in sorted(task_counts(tasks).items()))
        console.print(f"tasks: {shown}", highlight=False)
    runs = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none yet"
    console.print(f"runs under {out}: {runs}", highlight=False, soft_wrap=True)
