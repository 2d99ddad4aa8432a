"""What a run records about itself: config.json (settings and provenance) and its summary."""

from __future__ import annotations

import dataclasses
import math
import platform
import resource
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import fambench
from fambench.machine import is_contended, load_average, usable_cores
from fambench.optim import get_optimizer_spec, optimizer_source
from fambench.rundir import RunConfig, Summary, metrics_frame, time_to_target
from fambench.training.plan import RunPlan
from fambench.training.state import TrainState
from fambench.workloads import WorkloadData
from fambench.workloads.precision import has_bf16_dot_products


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(fambench.__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(plan: RunPlan) -> dict[str, Any]:
    """Versions, machine, threads and command line (rundir.PROVENANCE_KEYS)."""
    import torchaudio

    device = str(plan.device)
    if plan.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(plan.device)})"
    return {
        "fambench_version": fambench.__version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "device": device,
        "threads": plan.threads,
        "world_size": plan.request.ranks.world,
        # The distribution and version the optimizer's code came from.
        "optimizer_source": optimizer_source(get_optimizer_spec(plan.request.optimizer)),
        "command": plan.request.command,
        "hostname": socket.gethostname(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_config(
    plan: RunPlan, model: torch.nn.Module, data: WorkloadData, trace: str | None
) -> RunConfig:
    """config.json: every resolved setting of the run, and its provenance."""
    preset = plan.preset
    return RunConfig(
        run_id=plan.run_id,
        preset=preset.name,
        optimizer=plan.optimizer_name,
        ablation_of=plan.ablation_of,
        optimizer_overrides=dict(plan.request.overrides),
        optimizer_hparams=plan.hyperparameters,
        optimizer_capabilities=plan.capabilities.to_json(),
        tuned_from=plan.tuned_from,
        hparams_key=plan.hparams_key,
        seed=plan.request.seed,
        steps=plan.total_steps,
        time_budget_s=plan.request.time_budget_s,
        model={
            **dataclasses.asdict(model.settings),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        data=data.describe(),
        schedule={
            **plan.schedule,
            **dataclasses.asdict(preset.schedule),
            "scheduler": "WarmupHoldCosine",
            "shape": plan.capabilities.schedule,
        },
        training={
            "batch_frames": preset.batch_frames,
            "eval_every": preset.eval_every,
            "log_every": preset.log_every,
            "grad_clip": preset.grad_clip,
            "max_loss": preset.max_loss,
            "specaugment": (dataclasses.asdict(preset.specaugment) if preset.specaugment else None),
            "precision": plan.precision,
            # Whether the device multiplies bf16 natively: where not, a bf16 preset runs fp32.
            "bf16_native": has_bf16_dot_products(plan.device),
            "length_bucket_frames": preset.length_bucket_frames,
        },
        target_wer=plan.target_wer,
        target_method=plan.target.method,
        trace=trace,
        provenance=provenance(plan),
    )


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB else


def run_summary(plan: RunPlan, state: TrainState, status: str, message: str) -> Summary:
    """The summary of the run as it stands (time to target from its metric rows)."""
    final = state.final_dev or {}
    test = state.test or {}
    target = plan.target_wer
    ttt = time_to_target(metrics_frame(state.rows), target)
    return Summary(
        run_id=plan.run_id,
        status=status,
        steps=state.step,
        train_s=round(state.train_s, 3),
        eval_s=round(state.eval_s, 3),
        final_dev_wer=final.get("wer"),
        final_dev_cer=final.get("cer"),
        best_dev_wer=state.best_dev_wer,
        test_wer=test.get("wer"),
        test_cer=test.get("cer"),
        target_wer=target,
        time_to_target_s=None if math.isnan(ttt) else ttt,
        steps_per_s=state.step / state.train_s if state.train_s > 0 else None,
        audio_s_per_s=state.audio_s / state.train_s if state.train_s > 0 else None,
        peak_memory_mb=round(peak_memory_mb(plan.device), 1),
        precision=plan.precision,
        padded_share=(
            round(1 - state.audio_frames / state.padded_frames, 4) if state.padded_frames else None
        ),
        **cpu_record(plan, state),
        world_size=plan.request.ranks.world,
        rank_digests=list(state.rank_digests) or None,
        message=message,
    )


def cpu_record(plan: RunPlan, state: TrainState) -> dict[str, Any]:
    """The summary's honest-wall-clock fields (see fambench.machine); None until measured."""
    cores = usable_cores()
    # The run's other ranks share this machine's cores by design: count their threads as ours.
    threads = plan.threads * plan.request.ranks.world
    measured = state.measured_s > 0
    mean = state.others_cpu_s / state.measured_s if measured else math.nan
    return {
        "cpu_s": round(state.cpu_s, 3) if measured else None,
        "wall_s": round(state.measured_s, 3) if measured else None,
        "threads": plan.threads,
        "cores": cores,
        "load_start": state.load_start,
        "load_end": load_average(),
        "others_cores": round(mean, 3) if measured else None,
        "others_cores_peak": round(state.others_cores_peak, 3) if measured else None,
        "contended": (
            is_contended(max(mean, state.others_cores_peak), threads, cores) if measured else None
        ),
    }
