"""From what the user asked for to the resolved plan of one run, and the run's identity.

`plan_run` validates everything before anything is written: preset, budget, optimizer name,
hyperparameters (the optimizer's own checks, by building it on a probe module), data root,
output directory. The run id hashes what decides the result and nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fambench.errors import ConfigError, ResultsError
from fambench.machine import usable_cores
from fambench.optim import build_optimizer, get_optimizer_spec, resolve_hyperparameters
from fambench.optim.capabilities import Capabilities, has_evaluation_modes
from fambench.rundir import hparams_key
from fambench.targets import WorkloadTarget, load_target
from fambench.training.distributed import Ranks
from fambench.workloads import (
    Preset,
    ScheduleSpec,
    get_preset,
    load_tuned,
    resolve_data_root,
)
from fambench.workloads.precision import resolve_precision


@dataclass(frozen=True)
class RunRequest:
    """What the user asked for. Everything else comes from the preset and the tuned values."""

    optimizer: str
    preset: str = "synth"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    steps: int | None = None  # default: the preset's step budget
    time_budget_s: float | None = None  # stop after this many training seconds
    out_dir: Path = Path("results")
    cache_dir: Path = Path("data")
    data_root: Path | None = None
    force: bool = False
    tensorboard: bool = False
    threads: int | None = None  # default: the CPU cores this process may use, at most 16
    device: str | None = None  # default: cuda when available, else cpu
    command: str | None = None  # the command line, for provenance
    hparams_file: Path | None = None  # tuned values to use instead of the preset's file
    hparams_dir: Path | None = None  # the user's tuned values and targets, read before shipped
    ranks: Ranks = Ranks()  # this process among the run's data-parallel processes (torchrun)
    # Make the next batch on a background thread while a step trains (default: on a GPU). It
    # changes no number, so it is not part of the run's identity.
    prefetch: bool | None = None
    precision: str | None = None  # "fp32" or "bf16"; default: the preset's, where the device has it
    length_bucket_frames: int | None = None  # default: the preset's


@dataclass(frozen=True)
class RunPlan:
    """A validated request: the resolved configuration of one run."""

    request: RunRequest
    preset: Preset
    optimizer_name: str
    ablation_of: str | None  # the registry's word: this optimizer is an ablation of that one
    capabilities: Capabilities  # what the optimizer declares it needs from the trainer
    explicit_hparams: dict[str, Any]  # tuned values + user overrides (labels the run)
    hyperparameters: dict[str, Any]  # everything the optimizer is built with
    tuned_from: str | None  # the sweep the tuned values came from
    schedule: dict[str, int]  # warmup_steps, decay_start_step, total_steps
    run_id: str
    run_dir: Path
    data_root: Path | None
    device: torch.device
    threads: int
    target: WorkloadTarget
    precision: str  # "fp32" or "bf16" (autocast): fambench.workloads.precision

    @property
    def target_wer(self) -> float | None:
        return self.target.wer

    @property
    def total_steps(self) -> int:
        return self.schedule["total_steps"]

    @property
    def prefetch(self) -> bool:
        """Batches made one ahead on a background thread: asked for, or on a GPU (where the
        host would otherwise wait for the device); on a CPU the thread would take a core from
        the step's own threads."""
        if self.request.prefetch is not None:
            return self.request.prefetch
        return self.device.type == "cuda"

    @property
    def hparams_key(self) -> str:
        return hparams_key(self.explicit_hparams)

    @property
    def optimizer_kwargs(self) -> dict[str, Any]:
        """What the optimizer is built with beyond its defaults (no schedule settings)."""
        return {k: v for k, v in self.explicit_hparams.items() if k not in SCHEDULE_KEYS}


def default_threads() -> int:
    """The CPU cores this process may run on (at most 16)."""
    return min(usable_cores(), 16)


def run_identity(
    preset: Preset,
    optimizer: str,
    hyperparameters: Mapping[str, Any],
    request: RunRequest,
    total_steps: int,
    data_root: Path | None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """What decides a run's result: preset settings (no description), resolved
    hyperparameters, seed, budget, data and precision. Equal identities share one run
    directory. fp32 adds no key: an identity without ``precision`` is an fp32 run's, as a
    preset setting at its neutral value adds none (Preset.identity)."""
    identity = {
        "preset": preset.identity(),
        "optimizer": optimizer,
        "hyperparameters": dict(hyperparameters),
        "seed": request.seed,
        "steps": total_steps,
        "time_budget_s": request.time_budget_s,
        "data_root": str(data_root) if data_root is not None else None,
    }
    if precision != "fp32":
        identity["precision"] = precision
    return identity


def run_id_of(identity: Mapping[str, Any]) -> str:
    """``<preset>-<optimizer>-s<seed>-<first 8 hex of sha1(identity as sorted JSON)>``."""
    text = json.dumps(identity, sort_keys=True, default=str, separators=(",", ":"))
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    optimizer = re.sub(r"[^A-Za-z0-9_-]", "_", identity["optimizer"])
    return f"{identity['preset']['name']}-{optimizer}-s{identity['seed']}-{digest}"


def schedule_steps(preset: Preset, total: int) -> dict[str, int]:
    """The schedule's steps; WarmupHoldCosine needs warmup <= decay_start < total."""
    warmup = min(max(1, round(preset.schedule.warmup_fraction * total)), total - 1)
    decay_start = min(max(warmup, round(preset.schedule.decay_start_fraction * total)), total - 1)
    return {"warmup_steps": warmup, "decay_start_step": decay_start, "total_steps": total}


SEED_RANGE = (0, 2**32 - 1)  # what every generator a run seeds accepts


def _check_request(request: RunRequest) -> None:
    low, high = SEED_RANGE
    if isinstance(request.seed, bool) or not isinstance(request.seed, int):
        raise ConfigError(f"--seed must be an integer, got {request.seed!r}")
    if not low <= request.seed <= high:
        raise ConfigError(f"--seed must be in [{low}, {high}], got {request.seed}")
    if request.steps is not None and request.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {request.steps}")
    if request.time_budget_s is not None and not request.time_budget_s > 0:
        raise ConfigError(f"--time-budget must be positive, got {request.time_budget_s}")
    buckets = request.length_bucket_frames
    if buckets is not None and (isinstance(buckets, bool) or not isinstance(buckets, int)):
        raise ConfigError(f"--length-bucket must be an integer, got {buckets!r}")
    if buckets is not None and buckets < 0:
        raise ConfigError(f"--length-bucket must be >= 0 (0: no buckets), got {buckets}")
    if request.threads is not None and request.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {request.threads}")
    if request.ranks.distributed and request.time_budget_s is not None:
        raise ConfigError(
            "--time-budget needs one process: ranks' clocks differ, so they would not agree "
            "on the step to stop at; give --steps instead"
        )
    if request.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install 'fambench[tensorboard]'"
            ) from None


def _check_writable(out_dir: Path) -> None:
    probe = out_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ResultsError(f"cannot write results to {out_dir}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ResultsError(f"cannot write results to {out_dir}: {probe} is not writable")


def _device(request: RunRequest) -> torch.device:
    if request.device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(request.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but torch sees no CUDA device")
    return device


def _probe_step(name: str, hyperparameters: Mapping[str, Any]) -> bool:
    """Build the optimizer on a tiny module and take one step the way the trainer does
    (no closure, dense gradients): its own value checks run, and an optimizer that cannot
    train here (LBFGS needs a closure, SparseAdam sparse gradients) is refused up front.
    Returns whether it has evaluation modes (fambench.optim.capabilities)."""
    with torch.random.fork_rng(devices=[]):  # the probe must not move the global RNG
        probe = torch.nn.Linear(4, 4)
        optimizer = build_optimizer(name, probe, **hyperparameters)
        if has_evaluation_modes(optimizer):
            optimizer.train()  # as the trainer does before the first step
        for parameter in probe.parameters():
            parameter.grad = torch.ones_like(parameter)
        modes = has_evaluation_modes(optimizer)
        try:
            optimizer.step()
        except Exception as exc:  # whatever a plug-in raises: one line, before any file
            raise ConfigError(
                f"optimizer {name!r} cannot be trained by fambench: a probe step failed "
                f"({type(exc).__name__}: {exc}); the trainer calls step() without a closure, "
                "on dense gradients"
            ) from None
        finally:
            close = getattr(optimizer, "close", None)
            if callable(close):
                close()
    return modes


SCHEDULE_KEYS = tuple(f.name for f in dataclasses.fields(ScheduleSpec))


def _with_schedule(preset: Preset, values: Mapping[str, Any]) -> Preset:
    """The preset with tuned or overridden schedule settings (warmup_fraction, ...) applied."""
    changes = {k: values[k] for k in SCHEDULE_KEYS if k in values}
    if not changes:
        return preset
    for key, value in changes.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(f"{key} must be a number in [0, 1), got {value!r}")
    schedule = dataclasses.replace(preset.schedule, **changes)
    if schedule.decay_start_fraction < schedule.warmup_fraction:
        schedule = dataclasses.replace(schedule, decay_start_fraction=schedule.warmup_fraction)
    return dataclasses.replace(preset, schedule=schedule)


def _hyperparameters(
    request: RunRequest, preset: Preset
) -> tuple[Any, dict, dict, str | None, Capabilities]:
    """(spec, explicit, resolved, tuned source, capabilities); the optimizer's own checks run
    on a probe, which also shows whether it has evaluation modes (for its capabilities).

    ``explicit`` (tuned values + overrides) may hold schedule settings; ``resolved`` never does.
    """
    try:
        spec = get_optimizer_spec(request.optimizer)
        tuned = load_tuned(preset.name, request.hparams_file, request.hparams_dir)
        explicit = {**tuned.for_optimizer(spec.name), **request.overrides}
        optimizer_side = {k: v for k, v in explicit.items() if k not in SCHEDULE_KEYS}
        resolved = resolve_hyperparameters(request.optimizer, **optimizer_side)
        modes = _probe_step(request.optimizer, optimizer_side)
    except ValueError as exc:  # OptimizerConfigError: unknown name, key or bad value
        raise ConfigError(str(exc)) from None
    source = tuned.source_of(spec.name) if tuned.for_optimizer(spec.name) else None
    return spec, explicit, resolved, source, spec.capabilities.resolved(modes)


def plan_run(request: RunRequest) -> RunPlan:
    """Validate the request and resolve it; raises a FambenchError for any bad input."""
    preset = get_preset(request.preset)
    _check_request(request)
    spec, explicit, resolved, tuned_from, capabilities = _hyperparameters(request, preset)
    preset = _with_schedule(preset, explicit)
    if capabilities.schedule == "warmup-only":
        # Warmup, then the base rate to the end: the decay's end is the base rate itself.
        preset = dataclasses.replace(
            preset, schedule=dataclasses.replace(preset.schedule, final_factor=1.0)
        )
    if request.length_bucket_frames is not None:
        preset = dataclasses.replace(preset, length_bucket_frames=request.length_bucket_frames)
    data_root = resolve_data_root(preset, request.data_root)
    _check_writable(Path(request.out_dir))
    schedule = schedule_steps(preset, request.steps or preset.steps)
    device = request.ranks.device(_device(request))
    precision = resolve_precision(request.precision, preset.amp, device)
    identity = run_identity(
        preset, spec.name, resolved, request, schedule["total_steps"], data_root, precision
    )
    run_id = run_id_of(identity)
    return RunPlan(
        request=request,
        preset=preset,
        optimizer_name=spec.name,
        ablation_of=spec.ablation_of,
        capabilities=capabilities,
        explicit_hparams=explicit,
        hyperparameters=resolved,
        tuned_from=tuned_from,
        schedule=schedule,
        run_id=run_id,
        run_dir=Path(request.out_dir) / run_id,
        data_root=data_root,
        device=device,
        threads=request.threads or max(1, default_threads() // request.ranks.world),
        target=load_target(preset.name, preset.target_wer, user_dir=request.hparams_dir),
        precision=precision,
    )
