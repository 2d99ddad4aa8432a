"""Save and load everything a run needs to continue: model, optimizer, schedule, RNGs, data
position and progress, all taken at one step boundary."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import torch

from fambench.errors import ResultsError
from fambench.fileio import write_bytes
from fambench.optim import TraceWriter
from fambench.rundir import FORMAT_VERSION
from fambench.training.state import Boundary, Trainee, TrainState


def save_checkpoint(
    path: Path,
    run_id: str,
    trainee: Trainee,
    state: TrainState,
    boundary: Boundary,
    rank_rngs: list[dict[str, Any]] | None = None,
    evaluation_model: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the checkpoint atomically; an optimizer's trace is flushed to match it.

    ``rank_rngs``: on several data-parallel ranks, every rank's RNG states at the boundary
    (rank 0 writes the file; each rank resumes its own). ``evaluation_model``: the model state
    the latest dev evaluation was at, where the optimizer evaluates elsewhere than it trains (kept
    under "evaluation_model"; "model" is always what training continues from).
    """
    ranks = trainee.ranks
    payload = {
        "format_version": FORMAT_VERSION,
        "run_id": run_id,
        "world_size": ranks.world,
        "model": boundary.model_state(trainee.model),
        "optimizer": trainee.optimizer.state_dict(),
        "scheduler": trainee.scheduler.state_dict(),
        "rng": {"ranks": rank_rngs} if ranks.distributed and rank_rngs else boundary.rng,
        "stream": dict(boundary.stream),
        "progress": dataclasses.asdict(state),
    }
    if evaluation_model is not None:
        payload["evaluation_model"] = evaluation_model
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())
    if isinstance(trainee.optimizer, TraceWriter):
        trainee.optimizer.flush_trace()


def load_checkpoint(
    path: Path, run_id: str, trainee: Trainee
) -> tuple[TrainState, dict[str, torch.Tensor] | None]:
    """Restore ``trainee`` from the checkpoint at ``path``; returns the saved progress and the
    model state of the latest evaluation, where that was not the training state."""
    try:
        payload = torch.load(path, map_location=trainee.device, weights_only=False)
        progress = TrainState(**payload["progress"])
    except Exception as exc:  # a truncated, foreign or older file: say which
        raise ResultsError(f"cannot read checkpoint {path} ({exc}); rerun with --force") from exc
    if payload.get("run_id") != run_id:
        raise ResultsError(f"checkpoint {path} belongs to another run; rerun with --force")
    world, ranks = int(payload.get("world_size", 1)), trainee.ranks
    if world != ranks.world:
        raise ResultsError(
            f"checkpoint {path} was written by {world} data-parallel process(es), and this "
            f"run has {ranks.world}: a different count splits every batch differently and draws "
            f"other random numbers, so it resumes only with --nproc {world} (or starts over "
            "with --force)"
        )
    rng = payload["rng"]
    if "ranks" in rng:
        rng = rng["ranks"][ranks.rank]
    trainee.model.load_state_dict(payload["model"])
    trainee.optimizer.load_state_dict(payload["optimizer"])
    trainee.scheduler.load_state_dict(payload["scheduler"])
    trainee.load_rng_state(rng)
    trainee.stream.load(payload["stream"])
    return progress, payload.get("evaluation_model")
