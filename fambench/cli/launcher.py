"""The options that send `bench` and `tune` to Slurm instead of running here, and what they
print once the jobs are submitted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fambench.cli import console
from fambench.errors import ConfigError

LauncherOption = Annotated[
    str,
    typer.Option(
        "--launcher",
        help="local: run here; slurm: submit to Slurm (a grid as one job array, a tuning "
        "study as --workers jobs) and return, or wait with --wait.",
    ),
]
SlurmPartition = Annotated[str | None, typer.Option(help="Slurm partition (default: Slurm's).")]
SlurmTime = Annotated[int | None, typer.Option(help="Time limit per task in minutes (default 60).")]
SlurmCpus = Annotated[
    int | None, typer.Option(help="CPUs per task, also the run's threads (default 1).")
]
SlurmGpus = Annotated[int | None, typer.Option(help="GPUs per task (default 0).")]
SlurmOpt = Annotated[
    list[str] | None,
    typer.Option(help="Any other sbatch option as NAME=VALUE, e.g. qos=high; repeatable."),
]
WaitOption = Annotated[
    bool, typer.Option(help="With --launcher slurm: wait for the jobs, then report.")
]


def slurm_settings(
    launcher: str,
    partition: str | None,
    time_min: int | None,
    cpus: int | None,
    gpus: int | None,
    options: list[str] | None,
    wait: bool,
):  # -> fambench.slurm.SlurmSettings | None
    """The Slurm settings when ``launcher`` is slurm, None when local; ConfigError for an
    unknown launcher or Slurm options given to the local one."""
    from fambench.slurm import SlurmSettings, parse_slurm_option

    if launcher not in ("local", "slurm"):
        raise ConfigError(f"--launcher {launcher!r}: expected local or slurm")
    given = {
        "--slurm-partition": partition,
        "--slurm-time": time_min,
        "--slurm-cpus": cpus,
        "--slurm-gpus": gpus,
        "--slurm-opt": options or None,
        "--wait": wait or None,
    }
    if launcher == "local":
        stray = [name for name, value in given.items() if value is not None]
        if stray:
            raise ConfigError(f"{stray[0]} needs --launcher slurm")
        return None
    settings = SlurmSettings(
        partition=partition,
        time_min=60 if time_min is None else time_min,
        cpus_per_task=1 if cpus is None else cpus,
        gpus_per_task=gpus or 0,
        extra=dict(parse_slurm_option(text) for text in options or []),
    )
    settings.check()
    return settings


def print_submitted(submitted, out: Path) -> None:  # submitted: fambench.slurm.Submitted
    """The job and task ids, and the command that shows progress."""
    what = "job array" if submitted.tasks > 1 else "job"
    tasks = submitted.task_ids
    shown = ", ".join(tasks) if len(tasks) <= 4 else f"{tasks[0]} … {tasks[-1]}"
    console.print(
        f"submitted {submitted.kind} as Slurm {what} {submitted.job_id} "
        f"({submitted.tasks} task{'s' if submitted.tasks > 1 else ''}: {shown})",
        highlight=False,
    )
    console.print(f"progress: fambench status {out}", highlight=False, soft_wrap=True)


def wait_quietly(submitted) -> None:
    """Wait for the submission's tasks, printing the queue whenever it changes."""
    from fambench.slurm import wait

    last: list[str] = []

    def on_poll(held: dict[str, str]) -> None:
        counts = {}
        for state in held.values():
            counts[state.lower()] = counts.get(state.lower(), 0) + 1
        line = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "all done"
        if [line] != last:
            last[:] = [line]
            console.print(f"job {submitted.job_id}: {line}", highlight=False)

    wait([submitted], on_poll=on_poll)
