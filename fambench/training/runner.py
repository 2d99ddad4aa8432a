"""Running one request end to end: plan, skip or resume, lock the directory, train, record."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fambench.errors import FambenchError, ResultsError
from fambench.fileio import sweep_temporaries
from fambench.optim import TraceWriter
from fambench.rundir import FINISHED, RunConfig, RunFiles, RunLock
from fambench.rundir.loading import read_json, read_summary
from fambench.training.checkpoint import load_checkpoint
from fambench.training.distributed import end_process_group, from_main, start_process_group
from fambench.training.interrupts import StopRequests
from fambench.training.logger import ProgressCallback, RunLogger
from fambench.training.loop import account_cpu, train_loop
from fambench.training.plan import RunPlan, RunRequest, plan_run
from fambench.training.record import provenance, run_config
from fambench.training.setup import build_trainee
from fambench.training.state import TrainState
from fambench.training.step import RunContext
from fambench.workloads import load_workload_data


@dataclass(frozen=True)
class RunOutcome:
    """The result of run_training."""

    run_id: str
    run_dir: Path
    status: str
    summary: dict[str, Any]
    resumed: bool = False
    skipped: bool = False  # True when the run had already finished and was only reported
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase this session


def _finished(files: RunFiles, force: bool) -> RunOutcome | None:
    summary = None if force else read_summary(files)
    if summary is None or summary.status not in FINISHED:
        return None
    return RunOutcome(summary.run_id, files.root, summary.status, summary.to_json(), skipped=True)


def run_training(request: RunRequest, progress: ProgressCallback | None = None) -> RunOutcome:
    """Train (or resume, or report) the run described by request.

    Raises a FambenchError (ConfigError, DataError, ResultsError, ...) for bad input, before
    anything is written. A finished run (completed or diverged) is reported, not rerun, unless
    ``force``; an interrupted or failed one resumes from its checkpoint. Ctrl-C and SIGTERM are
    honoured at the next step boundary: the run is saved with status "interrupted" and
    returned. An error while training (a full disk, an optimizer that raises) is recorded in
    the summary as status "failed" with its message, then raised as RunFailed.

    On several data-parallel ranks (``request.ranks``, from torchrun) every rank calls this;
    rank 0 decides skip / resume / start, holds the lock and writes the run directory.
    """
    stops = StopRequests()
    with stops.installed():
        try:
            return _run(request, progress, stops)
        finally:
            end_process_group()


def _run(request: RunRequest, progress: ProgressCallback | None, stops: StopRequests) -> RunOutcome:
    plan = plan_run(request)
    ranks = request.ranks
    files = RunFiles(plan.run_dir)
    start_process_group(ranks, plan.device)
    if done := from_main(_finished(files, request.force) if ranks.is_main else None, ranks):
        return done
    torch.set_num_threads(plan.threads)
    if plan.device.type == "cuda":  # TF32 matmuls and convolutions on every CUDA run
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    logger = RunLogger(plan, files, progress if ranks.is_main else None, writes=ranks.is_main)
    logger.message("setup", "preparing data")
    data = _load_data(plan, logger)
    trainee = build_trainee(plan, data)
    if ranks.is_main:
        try:
            files.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResultsError(f"cannot create run directory {files.root}: {exc.strerror}") from exc
    with RunLock(files.lock) if ranks.is_main else contextlib.nullcontext():
        done = None
        if ranks.is_main:
            sweep_temporaries(files.root)
            files.recover_previous()
            done = _finished(files, request.force)
        if (done := from_main(done, ranks)) is not None:
            return done
        run = RunContext(plan, data, trainee, TrainState(), logger, files, stops=stops)
        resumed = start(run)
        try:
            status, message = train_loop(run)
        except Exception as exc:  # recorded as "failed", then one line for the user
            raise _failed(run, exc) from exc
        finally:
            logger.close()
            close = getattr(trainee.optimizer, "close", None)
            if callable(close):
                close()
        summary = logger.write_summary(run.state, status, message)
        logger.message("done", message, run.state.step)
        timings = {**run.session.timings, "train_s": run.session.train_s}
        return RunOutcome(
            plan.run_id, plan.run_dir, status, summary.to_json(), resumed, timings=timings
        )


def _load_data(plan: RunPlan, logger: RunLogger):
    """The workload's data; on several ranks rank 0 goes first (it generates the corpus and
    the feature cache once), the others then read what it made."""
    ranks = plan.request.ranks

    def load():
        return load_workload_data(
            plan.preset,
            Path(plan.request.cache_dir),
            plan.data_root,
            log_message=lambda text: logger.message("setup", text),
        )

    data = load() if ranks.is_main else None
    from_main(None, ranks)  # the others wait here for rank 0
    return data if data is not None else load()


class RunFailed(FambenchError):
    """Training stopped on an error; the run's summary says "failed" and why."""


def _failed(run: RunContext, exc: Exception) -> RunFailed:
    """Record the failure in the run directory (as far as the disk allows); the error to raise."""
    reason = str(exc) if isinstance(exc, FambenchError) else f"{type(exc).__name__}: {exc}"
    message = f"failed at step {run.state.step}: {reason}"
    with contextlib.suppress(FambenchError, OSError):
        account_cpu(run)
        run.logger.write_metrics(run.state)
        run.logger.write_summary(run.state, "failed", message)
    return RunFailed(
        f"run {run.plan.run_id} {message} (recorded in {run.files.summary}; "
        "the same command resumes from the last checkpoint)"
    )


# What a resumed run must share with the run that started it, or its numbers would change.
_MUST_MATCH = ("threads", "torch", "device")


def check_launch(request: RunRequest) -> None:
    """What `--nproc` checks before it starts the ranks: the request is valid and, if the run
    has a checkpoint to resume, it can resume with this many ranks."""
    plan = plan_run(request)
    files = RunFiles(plan.run_dir)
    if not request.force and _finished(files, False) is None and files.checkpoint.is_file():
        _check_resumable(files, plan)


def _check_resumable(files: RunFiles, plan: RunPlan) -> None:
    """Refuse to resume with settings that change the numbers (thread count, torch, device,
    the number of data-parallel ranks)."""
    try:
        started = RunConfig.from_json(read_json(files.config), files.config).provenance
    except ResultsError:
        return  # no readable config: the checkpoint's own check decides
    world = started.get("world_size") or 1
    if world != plan.request.ranks.world:
        raise ResultsError(
            f"{files.root} was trained by {world} data-parallel process(es): it resumes only "
            f"with --nproc {world} (another count splits every batch differently and draws "
            "other random numbers), or starts over with --force"
        )
    now = provenance(plan)
    for key in _MUST_MATCH:
        old, new = started.get(key), now[key]
        if key == "device":
            old, new = str(old).split(":")[0].split()[0], str(new).split(":")[0].split()[0]
        if old is not None and old != new:
            raise ResultsError(
                f"{files.root} was started with {key} {old}; resuming with {new} would change "
                f"its numbers: resume with {key} {old}, or start it over with --force"
            )


def start(run: RunContext) -> bool:
    """Attach to the locked run directory: resume its checkpoint, or start it afresh (results
    of an earlier attempt set aside until the first checkpoint). True when resuming.

    On several ranks rank 0 decides and every rank loads the same checkpoint."""
    files, plan, ranks = run.files, run.plan, run.trainee.ranks
    decision: tuple[bool, str | None] = (False, None)
    if ranks.is_main:
        resume = not plan.request.force and files.checkpoint.is_file()
        try:
            if resume:
                _check_resumable(files, plan)
            decision = (resume, None)
        except ResultsError as exc:
            decision = (resume, str(exc))
    resume, problem = from_main(decision, ranks)
    if problem is not None:
        raise ResultsError(problem)
    if resume:
        run.state, run.session.evaluation_model = load_checkpoint(
            files.checkpoint, plan.run_id, run.trainee
        )
        run.session.checkpoint_step = run.state.step
    if not ranks.is_main:
        return resume
    if not resume:
        files.set_aside()
    optimizer = run.trainee.optimizer
    trace = None
    if isinstance(optimizer, TraceWriter):  # a declared capability, not a name
        trace = optimizer.start_trace(files.root, resume_step=run.state.step)
    if resume:
        run.logger.write_metrics(run.state)  # the rows as of the checkpoint
    else:
        files.write_config(run_config(plan, run.trainee.model, run.data, trace))
        run.data.tokenizer.save(files.root)
    if plan.request.tensorboard:
        run.logger.open_tensorboard(run.state.step if resume else None)
    run.logger.write_summary(run.state, "running", "training")
    return resume
