"""Evaluating at the weights an optimizer wants evaluated: its ``eval()`` weights, with batch
norm's statistics re-estimated there where it declares that it needs them
(fambench.optim.capabilities).

Training goes on from exactly the weights and buffers it had before (restored bit for bit, not
recomputed by ``train()``), so a run that evaluates and one resumed from a checkpoint written
around that evaluation train the same numbers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from fambench.optim.capabilities import has_evaluation_modes
from fambench.training.step import RunContext
from fambench.workloads.recognition import reestimate_norm_statistics


@dataclass
class Evaluated:
    """The model's state at the evaluation weights (set when the evaluation ended normally;
    None where they are the training weights)."""

    state: dict[str, torch.Tensor] | None = None


def moves_weights(run: RunContext) -> bool:
    """Whether this run evaluates at other weights or statistics than it trains with."""
    optimizer = run.trainee.optimizer
    return has_evaluation_modes(optimizer) or run.plan.capabilities.norm_batches > 0


@contextlib.contextmanager
def evaluation_weights(run: RunContext) -> Iterator[Evaluated]:
    """Inside: the model at the optimizer's evaluation weights (and re-estimated batch-norm
    statistics, where declared), on every rank. Afterwards: the training weights and buffers
    as they were, and the optimizer back in training mode."""
    evaluated = Evaluated()
    if not moves_weights(run):
        yield evaluated
        return
    trainee, plan = run.trainee, run.plan
    model, optimizer = trainee.model, trainee.optimizer
    training = {name: t.detach().clone() for name, t in model.state_dict().items()}
    modes = has_evaluation_modes(optimizer)
    try:
        started = time.perf_counter()
        if modes:
            optimizer.eval()
        if plan.capabilities.norm_batches:
            batches = run.data.clean_batches(
                plan.preset.batch_frames, plan.capabilities.norm_batches, plan.request.seed
            )
            reestimate_norm_statistics(model, batches, plan.precision, trainee.device)
        run.state.eval_s += time.perf_counter() - started
        yield evaluated
        evaluated.state = {name: t.detach().clone() for name, t in model.state_dict().items()}
    finally:
        if modes:
            optimizer.train()
        model.load_state_dict(training)
        model.train()
