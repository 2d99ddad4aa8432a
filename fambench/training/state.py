"""What a run carries from step to step, and so what a checkpoint must hold to continue it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from fambench.data.batching import LengthBucketBatcher
from fambench.errors import ConfigError
from fambench.machine import MIN_JUDGED_INTERVAL_S, CpuInterval
from fambench.training.distributed import Ranks


@dataclass
class TrainState:
    """The run's progress: counters, clocks, metric rows, the interval being averaged."""

    step: int = 0
    train_s: float = 0.0
    eval_s: float = 0.0
    audio_s: float = 0.0
    audio_frames: int = 0  # feature frames trained on, and the same with the batches' padding
    padded_frames: int = 0
    last_eval_step: int = -1
    rows: list[dict[str, float]] = field(default_factory=list)
    loss_sum: float = 0.0  # over the steps since the last logged row
    grad_sum: float = 0.0
    interval_steps: int = 0
    final_dev: dict[str, float] | None = None  # wer, cer of the latest evaluation
    best_dev_wer: float | None = None
    test: dict[str, float] | None = None  # wer, cer, loss on the test split, once completed
    # CPU accounting over the measured spans (training and evaluation) of every session.
    measured_s: float = 0.0  # wall seconds
    cpu_s: float = 0.0  # this process's CPU seconds
    others_cpu_s: float = 0.0  # CPU seconds other processes took on our cores
    others_cores_peak: float = 0.0  # the most cores others kept busy over one judged interval
    load_start: float | None = None  # 1-minute load average when the run first started
    rank_digests: list[str] = field(default_factory=list)  # per rank, at the last checkpoint

    def record_eval(self, rates: Mapping[str, float]) -> None:
        self.last_eval_step = self.step
        self.final_dev = {"wer": rates["wer"], "cer": rates["cer"]}
        if self.best_dev_wer is None or rates["wer"] < self.best_dev_wer:
            self.best_dev_wer = rates["wer"]

    def add_cpu(self, interval: CpuInterval) -> None:
        self.measured_s += interval.wall_s
        self.cpu_s += interval.own_cpu_s
        self.others_cpu_s += interval.others_cpu_s
        if interval.wall_s >= MIN_JUDGED_INTERVAL_S:
            self.others_cores_peak = max(self.others_cores_peak, interval.others_cores)


class BatchStream:
    """Training batches in order: epoch after epoch of the length-bucketed batcher."""

    def __init__(self, batcher: LengthBucketBatcher) -> None:
        self.batcher = batcher
        self.epoch = 0
        self.position = 0
        self._epoch_batches: list[list[int]] | None = None

    def next(self) -> list[int]:
        if self._epoch_batches is None:
            self._epoch_batches = self.batcher.batches(self.epoch)
            if not self._epoch_batches:
                raise ConfigError("the training subset yields no batches")
        if self.position >= len(self._epoch_batches):
            self.epoch += 1
            self.position = 0
            self._epoch_batches = self.batcher.batches(self.epoch)
        batch = self._epoch_batches[self.position]
        self.position += 1
        return batch

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load(self, state: Mapping[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._epoch_batches = None


@dataclass
class Trainee:
    """The objects a step changes: model, optimizer, schedule, augmentation RNG, data order."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    specaug_gen: torch.Generator
    stream: BatchStream
    device: torch.device
    ranks: Ranks = Ranks()
    parallel: torch.nn.Module | None = None  # the DDP wrapper that trains `model` on N ranks

    @property
    def forward_model(self) -> torch.nn.Module:
        """What a training step calls: the DDP wrapper on several ranks, else the model."""
        return self.parallel if self.parallel is not None else self.model

    def rng_state(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state(), "specaug": self.specaug_gen.get_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_rng_state(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"].cpu())
        self.specaug_gen.set_state(state["specaug"].cpu())
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"].cpu(), self.device)


@dataclass(frozen=True)
class Boundary:
    """What a step changes besides parameters and optimizer state, as it was at a step
    boundary: RNGs, data position and model buffers (BatchNorm statistics move in the forward
    pass). A step interrupted before its update is saved as this boundary."""

    step: int
    rng: dict[str, Any]
    stream: dict[str, int]
    buffers: dict[str, torch.Tensor]

    @classmethod
    def of(cls, trainee: Trainee, state: TrainState) -> Boundary:
        buffers = {name: b.detach().clone() for name, b in trainee.model.named_buffers()}
        return cls(state.step, trainee.rng_state(), trainee.stream.state(), buffers)

    def model_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with its buffers as they were at this boundary."""
        state = model.state_dict()
        state.update({k: v for k, v in self.buffers.items() if k in state})
        return state
