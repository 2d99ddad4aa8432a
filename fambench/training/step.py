"""One training step: batch → forward → CTC loss → backward → clip → optimizer and schedule."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from fambench.machine import CpuSample
from fambench.rundir import RunFiles
from fambench.training.interrupts import StopRequests
from fambench.training.logger import RunLogger
from fambench.training.plan import RunPlan
from fambench.training.state import Trainee, TrainState
from fambench.workloads import WorkloadData
from fambench.workloads.recognition import autocast, ctc_loss_sum


class Diverged(Exception):
    """A non-finite or too large loss or gradient norm at `step` (the update was not applied)."""

    def __init__(self, message: str, step: int, loss: float, lr: float, grad_norm: float):
        super().__init__(message)
        self.step, self.loss, self.lr, self.grad_norm = step, loss, lr, grad_norm


@dataclass
class Session:
    """This process's share of the run: its steps, training seconds and per-phase seconds."""

    steps: int = 0
    train_s: float = 0.0
    in_update: bool = False  # between optimizer.step() and the end of the step's bookkeeping
    cpu_mark: CpuSample | None = None  # the CPU clocks when the last accounted span ended
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
    """One step; t0 is when this step's share of training time began. Returns its end."""
    state, trainee, preset, device = run.state, run.trainee, run.plan.preset, run.trainee.device
    batch = run.data.train_batch(trainee.stream.next(), trainee.specaug_gen)
    feats = batch.feats.to(device, non_blocking=True)
    lens = batch.feat_lens.to(device, non_blocking=True)
    targets = batch.targets.to(device, non_blocking=True)
    target_lens = batch.target_lens.to(device, non_blocking=True)
    t1 = time.perf_counter()
    with autocast(preset, device):
        log_probs, out_lens = trainee.model(feats, lens)
    loss = ctc_loss_sum(log_probs, out_lens, targets, target_lens) / target_lens.sum()
    loss_value = float(loss.detach())
    t2 = time.perf_counter()
    lr = float(trainee.optimizer.param_groups[0]["lr"])
    if not math.isfinite(loss_value) or loss_value > preset.max_loss:
        raise Diverged(
            f"diverged at step {state.step + 1}: train loss {loss_value:.4g} "
            f"(bound {preset.max_loss:g}) at lr {lr:.4g}",
            state.step + 1, loss_value, lr, math.nan,
        )  # fmt: skip
    trainee.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainee.model.parameters(), preset.grad_clip))
    t3 = time.perf_counter()
    if not math.isfinite(grad_norm):
        raise Diverged(
            f"diverged at step {state.step + 1}: gradient norm {grad_norm} at lr {lr:.4g}",
            state.step + 1, loss_value, lr, grad_norm,
        )  # fmt: skip
    run.session.in_update = True
    trainee.optimizer.step()
    trainee.scheduler.step()
    t4 = time.perf_counter()
    state.step += 1
    state.train_s += t4 - t0
    state.audio_s += float(batch.feat_lens.sum()) * run.data.hop_s
    run.logger.train_step(state, loss_value, grad_norm, lr)
    run.session.in_update = False
    _account(run.session, t0, t1, t2, t3, t4)
    run.logger.progress(state, loss_value, run.session.steps / run.session.train_s)
    return t4


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
