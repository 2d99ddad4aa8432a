"""One training step: batch → forward → CTC loss → backward → clip → optimizer and schedule."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from fambench.machine import CpuSample
from fambench.optim.devices import host_to_device
from fambench.rundir import RunFiles
from fambench.training.batches import BatchSource
from fambench.training.distributed import sum_across
from fambench.training.interrupts import StopRequests
from fambench.training.interval import PendingSteps
from fambench.training.logger import RunLogger
from fambench.training.plan import RunPlan
from fambench.training.state import Trainee, TrainState
from fambench.workloads import WorkloadData
from fambench.workloads.precision import autocast, backward_products
from fambench.workloads.recognition import ctc_loss_sum


@dataclass
class Session:
    """This process's share of the run: its steps, training seconds and per-phase seconds."""

    steps: int = 0
    train_s: float = 0.0
    in_update: bool = False  # between optimizer.step() and the end of the step's bookkeeping
    checkpoint_step: int = 0  # the step of the checkpoint on disk (resumed from or last saved)
    batches: BatchSource | None = None  # where the steps take their batches (set by the loop)
    cpu_mark: CpuSample | None = None  # the CPU clocks when the last accounted span ended
    pending: PendingSteps = field(default_factory=PendingSteps)  # steps not yet read back
    # The model state of the latest evaluation, where the optimizer evaluates at other weights
    # than it trains at (every checkpoint carries it).
    evaluation_model: dict[str, torch.Tensor] | None = None
    timings: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("data_s", "forward_s", "backward_s", "optimizer_s"), 0.0
        )
    )


@dataclass
class RunContext:
    """Everything the loop works with, built once by the runner."""

    plan: RunPlan
    data: WorkloadData
    trainee: Trainee
    state: TrainState
    logger: RunLogger
    files: RunFiles
    session: Session = field(default_factory=Session)
    stops: StopRequests = field(default_factory=StopRequests)


def train_step(run: RunContext, t0: float) -> float:
    """One step; t0 is when this step's share of training time began. Returns its end.

    Nothing in it reads a value back from the device: loss and gradient norm wait in
    ``session.pending`` until the log interval ends (`record_interval`).
    """
    state, trainee, preset, device = run.state, run.trainee, run.plan.preset, run.trainee.device
    ranks = trainee.ranks
    prepared = run.session.batches.next()
    batch, weight, tokens = prepared.batch, prepared.weight, prepared.tokens
    feats, lens, targets = (
        host_to_device(t, device) for t in (batch.feats, batch.feat_lens, batch.targets)
    )
    t1 = time.perf_counter()
    with autocast(run.plan.precision, device):
        log_probs, _ = trainee.forward_model(feats, lens)
    # torch's CTC loss reads its lengths on the host: given device tensors it would copy them
    # back (a host sync on a GPU), so it gets the host's own, the same numbers.
    out_lens = trainee.model.output_lengths(batch.feat_lens, log_probs.shape[1])
    # This rank's part of the batch's mean loss per token; the parts sum to it over the ranks.
    loss = ctc_loss_sum(log_probs, out_lens, targets, batch.target_lens) / tokens
    if weight != 1.0:
        loss = loss * weight
    t2 = time.perf_counter()
    lr = float(trainee.optimizer.param_groups[0]["lr"])
    trainee.optimizer.zero_grad(set_to_none=True)
    # DDP averages the ranks' gradients; the batch's gradient is their sum.
    with backward_products(run.plan.precision, device):
        (loss * ranks.world if ranks.distributed else loss).backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(trainee.model.parameters(), preset.grad_clip)
    t3 = time.perf_counter()
    run.session.in_update = True
    trainee.optimizer.step()
    trainee.scheduler.step()
    t4 = time.perf_counter()
    state.step += 1
    state.train_s += t4 - t0
    state.audio_s += prepared.audio_frames * run.data.hop_s
    state.audio_frames += prepared.audio_frames
    state.padded_frames += prepared.padded_frames
    run.session.pending.add(state.step, lr, loss, grad_norm)
    run.session.in_update = False
    if run.logger.logs_at(state.step):
        record_interval(run)
    _account(run.session, t0, t1, t2, t3, t4)
    run.logger.progress(state, run.session.steps / run.session.train_s)
    return t4


def record_interval(run: RunContext) -> None:
    """Read the pending steps back (one host read) into the run's interval sums, and append
    the interval's row at a log step. Diverged when one of them diverged."""
    ranks = run.trainee.ranks
    values = run.session.pending.read_back(
        run.plan.preset.max_loss, lambda losses: sum_across(losses, ranks)
    )
    run.logger.add_steps(run.state, values)


def _account(session: Session, t0: float, t1: float, t2: float, t3: float, t4: float) -> None:
    session.steps += 1
    session.train_s += t4 - t0
    for key, start, end in (
        ("data_s", t0, t1),
        ("forward_s", t1, t2),
        ("backward_s", t2, t3),
        ("optimizer_s", t3, t4),
    ):
        session.timings[key] += end - start
