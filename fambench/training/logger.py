"""Logging a run: metric rows, TensorBoard scalars, progress events and the files they go to."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fambench.rundir import RunFiles, Summary, eval_row, train_row
from fambench.training.plan import RunPlan
from fambench.training.record import run_summary
from fambench.training.state import TrainState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """What the trainer reports to a progress callback (after each step and evaluation)."""

    phase: str  # "setup", "train", "eval", "done"
    step: int = 0
    total_steps: int = 0
    train_loss: float | None = None
    dev_wer: float | None = None
    steps_per_s: float | None = None
    eta_s: float | None = None
    message: str | None = None


ProgressCallback = Callable[[ProgressEvent], None]


class RunLogger:
    """Turns what the loop measures into metric rows, TensorBoard scalars and progress events."""

    def __init__(
        self,
        plan: RunPlan,
        files: RunFiles,
        emit: ProgressCallback | None,
        writes: bool = True,
    ) -> None:
        self.plan = plan
        self.files = files
        self.writes = writes  # False on data-parallel ranks other than 0: they write nothing
        self.emit = emit or (lambda event: None)
        self.writer: Any = None
        self.lr = 0.0  # of the latest step read back
        self.last_loss: float | None = None  # the latest logged interval mean

    def open_tensorboard(self, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = resume_step + 1 if resume_step is not None else None
        self.writer = SummaryWriter(log_dir=str(self.files.tensorboard), purge_step=purge)

    def _scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def logs_at(self, step: int) -> bool:
        """Whether ``step`` ends a log interval (every log_every steps, and the last)."""
        return step % self.plan.preset.log_every == 0 or step == self.plan.total_steps

    def add_steps(self, state: TrainState, values: list[tuple[int, float, float, float]]) -> None:
        """Add read-back steps (step, lr, loss, grad norm) to the interval; at a log step,
        append the interval's mean as a row."""
        for _, lr, loss, grad_norm in values:
            state.loss_sum += loss
            state.grad_sum += grad_norm
            state.interval_steps += 1
            self.lr = lr
        if not values or not self.logs_at(state.step) or values[-1][0] != state.step:
            return
        n = state.interval_steps
        mean_loss, mean_grad = state.loss_sum / n, state.grad_sum / n
        state.rows.append(train_row(state.step, state.train_s, mean_loss, self.lr, mean_grad))
        self._scalars(
            "train", {"loss": mean_loss, "lr": self.lr, "grad_norm": mean_grad}, state.step
        )
        self.last_loss = mean_loss
        state.loss_sum = state.grad_sum = 0.0
        state.interval_steps = 0

    def evaluation(self, state: TrainState, rates: Mapping[str, float], eval_s: float) -> None:
        state.rows.append(eval_row(state.step, state.train_s, rates, eval_s))
        self._scalars("dev", {k: rates[k] for k in ("wer", "cer", "loss")}, state.step)
        log.info(
            "step %d: dev WER %.4f CER %.4f loss %.4f (%.1f s)",
            state.step,
            rates["wer"],
            rates["cer"],
            rates["loss"],
            eval_s,
        )
        self.emit(ProgressEvent("eval", state.step, self.plan.total_steps, dev_wer=rates["wer"]))

    def progress(self, state: TrainState, steps_per_s: float) -> None:
        self.emit(
            ProgressEvent(
                "train",
                state.step,
                self.plan.total_steps,
                train_loss=self.last_loss,
                dev_wer=state.final_dev["wer"] if state.final_dev else None,
                steps_per_s=steps_per_s,
                eta_s=(self.plan.total_steps - state.step) / steps_per_s,
            )
        )

    def message(self, phase: str, text: str, step: int = 0) -> None:
        self.emit(ProgressEvent(phase, step, self.plan.total_steps, message=text))

    def write_metrics(self, state: TrainState) -> None:
        if self.writes:
            self.files.write_metrics(state.rows)

    def write_summary(self, state: TrainState, status: str, message: str) -> Summary:
        summary = run_summary(self.plan, state, status, message)
        if self.writes:
            self.files.write_summary(summary)
        return summary

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
