"""Data-parallel training on torch.distributed: which process this is, the process group, and
what the ranks must agree on.

A run on N ranks trains the same global batches as a run on one process: every rank takes a
contiguous share of each length-bucketed batch (`Ranks.share`), pads it to the whole batch's
longest utterance, and divides its CTC loss sum by the whole batch's token count; DDP averages
the gradients, so each update is the one-process update up to float reduction order. Batch
norm, the one layer that mixes utterances, takes its statistics over every rank's share
(`GlobalBatchNorm1d`). What stays per rank is torch's own random stream (dropout): presets
without dropout (synth, smoke-nodropout) follow the same trajectory on any number of ranks.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# torchrun sets these for every worker it starts.
_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# Evaluation runs on rank 0 while the others wait in a collective: give it hours, not Gloo's
# default 30 minutes.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=4)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the run's processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory and evaluates."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Ranks:
        """The ranks torchrun describes in the environment; one process when it is not set."""
        env = os.environ if environ is None else environ
        if not all(key in env for key in _ENV_KEYS):
            return cls()
        rank, world, local = (int(env[key]) for key in _ENV_KEYS)
        if not (0 <= rank < world and 0 <= local <= rank):
            raise ValueError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world}")
        return cls(rank, world, local)

    def share(self, indices: list[int]) -> tuple[list[int], float]:
        """This rank's contiguous slice of a global batch, and its loss weight.

        Slices differ in size by one at most. A batch with fewer utterances than ranks leaves
        some ranks none: they repeat the batch's first utterance with weight 0 (they must
        still take part in the gradient all-reduce), which adds nothing to the gradient.
        """
        count = len(indices)
        start = self.rank * count // self.world
        end = (self.rank + 1) * count // self.world
        if start == end:
            return indices[:1], 0.0
        return indices[start:end], 1.0

    def seed_of(self, seed: int) -> int:
        """The seed of this rank's own random stream (dropout): the run's seed on rank 0."""
        return seed + (self.rank << 32)

    def device(self, requested: torch.device) -> torch.device:
        """The device this rank trains on: its own GPU (LOCAL_RANK) on CUDA."""
        if requested.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return requested


def start_process_group(ranks: Ranks, device: torch.device) -> None:
    """Join the run's process group (NCCL on CUDA, Gloo on CPU); torchrun's environment
    tells every rank where rank 0 listens."""
    if not ranks.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        rank=ranks.rank,
        world_size=ranks.world,
        timeout=COLLECTIVE_TIMEOUT,
        device_id=device if device.type == "cuda" else None,
    )
    global _control_group
    _control_group = dist.new_group(backend="gloo")  # any_rank's: host memory, also beside NCCL


def end_process_group() -> None:
    global _control_group
    _control_group = None
    if dist.is_initialized():
        dist.destroy_process_group()


_control_group: Any = None


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """Whether `flag` is set on any rank. A collective on host memory (a Gloo group of its
    own, also beside NCCL), so asking after every step never waits for a GPU."""
    if not ranks.distributed:
        return flag
    box = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(box, op=dist.ReduceOp.MAX, group=_control_group)
    return bool(box.item())


def sum_across(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The element-wise sum of `tensor` over every rank (itself on one process)."""
    if not ranks.distributed:
        return tensor
    total = tensor.detach().clone().contiguous()
    dist.all_reduce(total)
    return total


def gather(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's `value` (picklable), in rank order, on every rank."""
    if not ranks.distributed:
        return [value]
    values: list[Any] = [None] * ranks.world
    dist.all_gather_object(values, value)
    return values


def from_main(value: Any, ranks: Ranks) -> Any:
    """Rank 0's `value`, on every rank."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover every rank's share of the batch.

    torch's SyncBatchNorm runs on GPUs only; this one all-reduces (sum, sum of squares, count)
    per channel through an autograd-aware all-reduce, so it works with Gloo on CPU as well.
    Same parameters and buffers as BatchNorm1d: checkpoints are interchangeable with it.
    """

    group: Any = None  # the process group; None behaves like plain BatchNorm1d

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.group is None:
            return super().forward(input)
        x = input.float()
        channels = x.shape[1]
        count = x.new_full((1,), x.numel() / channels)
        local = torch.cat([x.sum(dim=(0, 2)), (x * x).sum(dim=(0, 2)), count])
        total = _SumAcrossRanks.apply(local, self.group)
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels : 2 * channels] / n - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = (
                self.momentum
                if self.momentum is not None
                else 1.0 / float(self.num_batches_tracked)
            )
            unbiased = var * (n / (n - 1).clamp_min(1.0))
            self.running_mean.mul_(1 - momentum).add_(momentum * mean.to(self.running_mean))
            self.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(self.running_var))
        scale = torch.rsqrt(var + self.eps)
        y = (x - mean[None, :, None]) * scale[None, :, None]
        if self.affine:
            y = y * self.weight[None, :, None] + self.bias[None, :, None]
        return y.to(input.dtype)


class _SumAcrossRanks(torch.autograd.Function):
    """all-reduce (sum) with its gradient: every rank's output is the sum, so the gradient
    with respect to each rank's input is the sum of every rank's output gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        total = tensor.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        total = grad.contiguous().clone()
        dist.all_reduce(total, group=ctx.group)
        return total, None


def use_global_batch_norm(model: nn.Module, ranks: Ranks) -> None:
    """Turn every BatchNorm1d of `model` into a GlobalBatchNorm1d over the run's ranks (in
    place; parameters and buffers are kept). Nothing changes on one process."""
    if not ranks.distributed:
        return
    group = dist.new_group()  # its own group: never interleaved with DDP's gradient buckets
    for module in model.modules():
        if type(module) is nn.BatchNorm1d:
            module.__class__ = GlobalBatchNorm1d
            module.group = group


def state_digest(model: nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """sha1 of every parameter, buffer and optimizer-state tensor's bytes: equal digests mean
    bitwise-equal models and optimizer states (FAM's momenta included)."""
    digest = hashlib.sha1()

    def add(tensor: torch.Tensor) -> None:
        flat = tensor.detach().cpu().reshape(-1).contiguous()
        digest.update(flat.view(torch.uint8).numpy().tobytes())

    for tensor in model.state_dict().values():
        add(tensor)
    for state in optimizer.state_dict()["state"].values():
        for key in sorted(state, key=str):
            value = state[key]
            if isinstance(value, torch.Tensor):
                add(value)
            else:
                digest.update(repr(value).encode())
    return digest.hexdigest()
