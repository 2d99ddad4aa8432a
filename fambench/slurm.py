"""Grids and tuning studies as Slurm jobs, through submitit.

A grid becomes one job array, one task per cell: the task is the cell's ordinary run (finished
runs reported, interrupted ones resumed, a cell claimed as in a local grid). A tuning study
becomes N worker tasks sharing the study's Optuna storage. Every submission is recorded in
``<out>/.slurm/jobs.json`` (what `fambench status` reads beside the run directories); Slurm
writes each task's output under ``<out>/.slurm/logs/``.

Preemption and time limits: Slurm signals the task (SIGTERM on preemption or ``scancel
--signal=TERM``; SIGUSR2, submitit's signal, ``signal_delay_s`` before the time limit), the run
saves at the end of its step (fambench.training.interrupts) and the task asks Slurm to requeue
it; the requeued task resumes the run from that checkpoint, bitwise on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fambench.errors import ConfigError, FambenchError, ResultsError
from fambench.fileio import write_text

SLURM_DIR = ".slurm"
JOBS_FILE = "jobs.json"
_OPTION_NAME = re.compile(r"[a-z][a-z0-9-]*")
#: Options fambench sets itself (from its own flags, or as submitit needs them).
_RESERVED = {"array", "output", "error", "open-mode", "signal", "partition", "time",
             "cpus-per-task", "gpus-per-task", "job-name"}  # fmt: skip


@dataclass(frozen=True)
class SlurmSettings:
    """What every task of a submission asks Slurm for."""

    partition: str | None = None
    time_min: int = 60
    cpus_per_task: int = 1
    gpus_per_task: int = 0
    signal_delay_s: int = 90  # SIGUSR2 this long before the time limit: time to save a step
    extra: Mapping[str, str] = field(default_factory=dict)  # other sbatch options, verbatim

    def check(self) -> None:
        """ConfigError naming the option whose value cannot work."""
        if self.time_min < 1:
            raise ConfigError(f"--slurm-time must be at least 1 minute, got {self.time_min}")
        if self.cpus_per_task < 1:
            raise ConfigError(f"--slurm-cpus must be at least 1, got {self.cpus_per_task}")
        if self.gpus_per_task < 0:
            raise ConfigError(f"--slurm-gpus must be 0 or more, got {self.gpus_per_task}")
        for name in self.extra:
            if name in _RESERVED:
                raise ConfigError(
                    f"--slurm-opt {name}: set by fambench (use its own option, or none)"
                )

    def executor(self, folder: Path, name: str) -> Any:
        """A submitit executor for these settings, writing logs under ``folder``."""
        import submitit

        executor = submitit.SlurmExecutor(folder=str(folder / "%j"))
        parameters: dict[str, Any] = {
            "job_name": name,
            "time": self.time_min,
            "cpus_per_task": self.cpus_per_task,
            "signal_delay_s": self.signal_delay_s,
            "additional_parameters": dict(self.extra),
        }
        if self.partition:
            parameters["partition"] = self.partition
        if self.gpus_per_task:
            parameters["gpus_per_task"] = self.gpus_per_task
        executor.update_parameters(**parameters)
        return executor


def parse_slurm_option(text: str) -> tuple[str, str]:
    """``"qos=high"`` or ``"--qos=high"`` → ``("qos", "high")``; ConfigError otherwise."""
    name, sep, value = text.removeprefix("--").partition("=")
    if not sep or not _OPTION_NAME.fullmatch(name) or not value:
        raise ConfigError(f"--slurm-opt {text!r}: expected an sbatch option as NAME=VALUE")
    return name, value


@dataclass(frozen=True)
class Submitted:
    """One submission: a job array of ``tasks`` tasks (a single task is a plain job)."""

    job_id: str
    kind: str  # "grid" or "tune"
    tasks: int
    run_ids: tuple[str, ...] = ()  # a grid's run per task, in task order
    submitted_at: str = ""

    def task_id(self, index: int) -> str:
        """Slurm's id of task ``index``: ``123_4`` in an array, ``123`` for a single task."""
        return self.job_id if self.tasks == 1 else f"{self.job_id}_{index}"

    @property
    def task_ids(self) -> list[str]:
        return [self.task_id(i) for i in range(self.tasks)]


def jobs_file(out_dir: Path) -> Path:
    return Path(out_dir) / SLURM_DIR / JOBS_FILE


def read_jobs(out_dir: Path) -> list[Submitted]:
    """Every submission recorded under ``out_dir``, oldest first ([] when none)."""
    path = jobs_file(out_dir)
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
        return [Submitted(**{**row, "run_ids": tuple(row.get("run_ids", ()))}) for row in rows]
    except (OSError, ValueError, TypeError) as exc:
        raise ResultsError(f"{path}: not a fambench jobs file ({exc})") from None


def _record(out_dir: Path, submitted: Submitted) -> None:
    rows = [dataclasses.asdict(s) for s in [*read_jobs(out_dir), submitted]]
    write_text(jobs_file(out_dir), json.dumps(rows, indent=2) + "\n")


def _check_slurm() -> None:
    if shutil.which("sbatch") is None:
        raise ConfigError("--launcher slurm: sbatch not found; run this on a Slurm login node")


def _submit(
    settings: SlurmSettings,
    out_dir: Path,
    kind: str,
    task: Callable[[Any], Any],
    arguments: Sequence[Any],
    run_ids: Sequence[str] = (),
) -> Submitted:
    settings.check()
    _check_slurm()
    executor = settings.executor(Path(out_dir) / SLURM_DIR / "logs", f"fambench-{kind}")
    try:
        jobs = executor.map_array(task, list(arguments))
    except Exception as exc:  # submitit raises plain errors with sbatch's message
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"sbatch refused the {kind}: {first}") from None
    job_id = str(jobs[0].job_id).split("_")[0]
    submitted = Submitted(
        job_id=job_id,
        kind=kind,
        tasks=len(jobs),
        run_ids=tuple(run_ids),
        submitted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    _record(Path(out_dir), submitted)
    return submitted


# ---------------------------------------------------------------------------- the tasks


def _requeue_if_stopped(stopped: bool) -> None:
    """In a Slurm task whose run was stopped by a signal: ask Slurm to queue it again (the
    next attempt resumes from the checkpoint). A cancelled job refuses, which is right."""
    job = os.environ.get("SLURM_JOB_ID")
    if stopped and job:
        subprocess.run(["scontrol", "requeue", job], capture_output=True, timeout=60)


def run_cell_task(cell: Any) -> str:
    """One grid cell (fambench.bench.GridCell) as a Slurm task; returns the run's status."""
    from fambench.bench import run_cells

    runs, interrupted = run_cells([cell])
    _requeue_if_stopped(interrupted)
    return runs[0].status


def tune_worker_task(request: Any) -> bool:
    """One tuning worker (fambench.tune.TuneRequest) as a Slurm task; True when every study
    has its trials. The worker that finds them all done writes the tables."""
    from fambench.tune import run_worker, studies_complete, summarize

    finished = run_worker(request)
    _requeue_if_stopped(not finished)
    if finished and studies_complete(request):
        summarize(request)
    return finished


def submit_grid(cells: Sequence[Any], settings: SlurmSettings, out_dir: Path) -> Submitted:
    """The grid's cells as one job array (every request validated first, nothing submitted
    if one fails); each run uses the task's CPUs as threads unless ``--threads`` was given."""
    from fambench.training import plan_run

    cells = [
        c if c.threads else dataclasses.replace(c, threads=settings.cpus_per_task) for c in cells
    ]
    run_ids = [plan_run(cell.request()).run_id for cell in cells]
    return _submit(settings, out_dir, "grid", run_cell_task, cells, run_ids)


def submit_tune(request: Any, workers: int, settings: SlurmSettings) -> Submitted:
    """``workers`` tasks working on the same studies (the request validated first)."""
    from fambench.tune import check_request

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if not request.threads:
        request = dataclasses.replace(request, threads=settings.cpus_per_task)
    check_request(request)
    return _submit(settings, Path(request.out_dir), "tune", tune_worker_task, [request] * workers)


# ---------------------------------------------------------------------------- the queue


def queue() -> dict[str, str]:
    """Slurm's state of every task of this user in the queue: {"123_4": "RUNNING", ...}."""
    try:
        done = subprocess.run(
            ["squeue", "--me", "--array", "--noheader", "--format=%i|%T"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FambenchError(f"squeue: {exc}") from None
    if done.returncode != 0:
        raise FambenchError(f"squeue: {done.stderr.strip() or 'failed'}")
    states = {}
    for line in done.stdout.splitlines():
        task, _, state = line.strip().partition("|")
        if task:
            states[task] = state
    return states


def in_queue(submitted: Submitted, states: Mapping[str, str]) -> dict[str, str]:
    """The submission's tasks that Slurm still holds, with their states."""
    return {t: states[t] for t in submitted.task_ids if t in states}


def wait(
    submissions: Sequence[Submitted],
    poll_s: float = 5.0,
    on_poll: Callable[[dict[str, str]], None] | None = None,
) -> None:
    """Return once no task of ``submissions`` is queued or running (requeued ones included)."""
    while True:
        states = queue()
        held = {t: s for sub in submissions for t, s in in_queue(sub, states).items()}
        if on_poll is not None:
            on_poll(held)
        if not held:
            return
        time.sleep(poll_s)
