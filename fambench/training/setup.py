"""Building what a run trains: the workload's model, the optimizer, its schedule, the data order."""

from __future__ import annotations

import torch

from fambench.errors import ConfigError
from fambench.optim import WarmupHoldCosine, build_optimizer
from fambench.optim.capabilities import has_evaluation_modes
from fambench.training.distributed import use_global_batch_norm
from fambench.training.plan import RunPlan
from fambench.training.state import BatchStream, Trainee
from fambench.workloads import WorkloadData
from fambench.workloads.recognition import build_model


def build_trainee(plan: RunPlan, data: WorkloadData) -> Trainee:
    """Model initialised from the seed, optimizer with the plan's hyperparameters, schedule."""
    seed, ranks = plan.request.seed, plan.request.ranks
    torch.manual_seed(seed)  # the same initial model on every rank
    model = build_model(plan.preset, data).to(plan.device)
    parallel = None
    if ranks.distributed:
        use_global_batch_norm(model, ranks)
        parallel = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[plan.device] if plan.device.type == "cuda" else None,
            **_no_buffer_sync(),  # batch-norm statistics are global already
        )
        torch.manual_seed(ranks.seed_of(seed))  # each rank's own dropout stream
    try:
        optimizer = build_optimizer(plan.request.optimizer, model, **plan.optimizer_kwargs)
    except ValueError as exc:  # OptimizerConfigError: the optimizer's own checks
        raise ConfigError(str(exc)) from None
    if has_evaluation_modes(optimizer):
        optimizer.train()  # before the first step, as its authors require
    shape = plan.preset.schedule
    # Each group's own rate times the factors: groups with different rates keep their ratio.
    scheduler = WarmupHoldCosine(
        optimizer,
        warmup_steps=plan.schedule["warmup_steps"],
        total_steps=plan.schedule["total_steps"],
        decay_start_step=plan.schedule["decay_start_step"],
        warmup_start_factor=shape.warmup_start_factor,
        final_factor=shape.final_factor,
    )
    return Trainee(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        specaug_gen=torch.Generator().manual_seed(seed + 1),
        stream=BatchStream(data.train_batcher(plan.preset.batch_frames, seed)),
        device=plan.device,
        ranks=ranks,
        parallel=parallel,
    )


def _no_buffer_sync() -> dict[str, bool]:
    """DDP's switch for not broadcasting buffers every forward: ``forward_sync_buffers`` where
    this torch's DDP takes it, else ``broadcast_buffers``."""
    import inspect

    parameters = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    if "forward_sync_buffers" in parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}
