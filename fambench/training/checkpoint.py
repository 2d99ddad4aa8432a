"""Save and load everything a run needs to continue: model, optimizer, schedule, RNGs, data
position and progress, all taken at one step boundary."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import torch

from fambench.errors import ResultsError
from fambench.fileio import write_bytes
from fambench.optim import TraceWriter
from fambench.rundir import FORMAT_VERSION
from fambench.training.state import Boundary, Trainee, TrainState


def save_checkpoint(
    path: Path, run_id: str, trainee: Trainee, state: TrainState, boundary: Boundary
) -> None:
    """Write the checkpoint atomically; an optimizer's trace is flushed to match it."""
    payload = {
        "format_version": FORMAT_VERSION,
        "run_id": run_id,
        "model": boundary.model_state(trainee.model),
        "optimizer": trainee.optimizer.state_dict(),
        "scheduler": trainee.scheduler.state_dict(),
        "rng": boundary.rng,
        "stream": dict(boundary.stream),
        "progress": dataclasses.asdict(state),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())
    if isinstance(trainee.optimizer, TraceWriter):
        trainee.optimizer.flush_trace()


def load_checkpoint(path: Path, run_id: str, trainee: Trainee) -> TrainState:
    """Restore ``trainee`` from the checkpoint at ``path``; returns the saved progress."""
    try:
        payload = torch.load(path, map_location=trainee.device, weights_only=False)
        progress = TrainState(**payload["progress"])
    except Exception as exc:  # a truncated, foreign or older file: say which
        raise ResultsError(f"cannot read checkpoint {path} ({exc}); rerun with --force") from exc
    if payload.get("run_id") != run_id:
        raise ResultsError(f"checkpoint {path} belongs to another run; rerun with --force")
    trainee.model.load_state_dict(payload["model"])
    trainee.optimizer.load_state_dict(payload["optimizer"])
    trainee.scheduler.load_state_dict(payload["scheduler"])
    trainee.load_rng_state(payload["rng"])
    trainee.stream.load(payload["stream"])
    return progress
