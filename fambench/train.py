"""The training loop: one run of one optimizer on one workload preset.

`run_training(RunRequest(...))` validates everything first (nothing is written for bad input),
prepares the data (generating the synthetic corpus on first use), then trains, evaluates on
dev at the preset's cadence, checkpoints, and writes the run directory described in
`fambench.results`. Running the same request again resumes an interrupted run from its
checkpoint (bitwise identical on CPU to a run never interrupted) and reports a finished one
without rerunning it (unless `force`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import fambench
from fambench.errors import ConfigError, ResultsError
from fambench.metrics import error_rates, greedy_decode
from fambench.model import ConformerCTC
from fambench.optim import (
    FAMScheduler,
    build_optimizer,
    get_optimizer_spec,
    resolve_hyperparameters,
)
from fambench.results import (
    FORMAT_VERSION,
    RunFiles,
    RunLock,
    write_bytes_atomic,
    write_json_atomic,
)
from fambench.workloads import (
    Preset,
    Split,
    WorkloadData,
    get_preset,
    load_workload_data,
    resolve_data_root,
)

log = logging.getLogger(__name__)

# Optimizer arguments the trainer sets itself; they never enter the hyperparameters or run id.
_TRAINER_OWNED_KEYS = ("debug", "debug_dir")


@dataclass(frozen=True)
class RunRequest:
    """What the user asked for. Everything else comes from the preset."""

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


@dataclass(frozen=True)
class RunOutcome:
    """The result of run_training."""

    run_id: str
    run_dir: Path
    status: str
    summary: dict[str, Any]
    resumed: bool = False
    skipped: bool = False  # True when the run had already finished and was only reported
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase this session


@dataclass(frozen=True)
class RunPlan:
    """A validated request: the resolved configuration of one run."""

    request: RunRequest
    preset: Preset
    optimizer_name: str
    fam_trace: bool  # pass debug/debug_dir so the run keeps a FAM debug trace
    explicit_hparams: dict[str, Any]  # preset defaults + user overrides
    optimizer_hparams: dict[str, Any]  # the optimizer's defaults with the above applied
    hparams_key: str
    total_steps: int
    run_id: str
    run_dir: Path
    data_root: Path | None
    device: torch.device
    threads: int


# ---------------------------------------------------------------------------------------------
# Planning and validation (no side effects)


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _stable_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    return str(value)


def hparams_key(hparams: Mapping[str, Any]) -> str:
    """A short stable string of hyperparameters, e.g. ``lr=0.002,weight_decay=0.01``."""
    if not hparams:
        return "default"
    return ",".join(f"{k}={_format_value(hparams[k])}" for k in sorted(hparams))


def default_threads() -> int:
    """The CPU cores this process may run on (at most 16)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 16))


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


def plan_run(request: RunRequest) -> RunPlan:
    """Validate the request and resolve it; raises a FambenchError for any bad input."""
    preset = get_preset(request.preset)
    if request.steps is not None and request.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {request.steps}")
    if request.time_budget_s is not None and not request.time_budget_s > 0:
        raise ConfigError(f"--time-budget must be positive, got {request.time_budget_s}")
    if request.threads is not None and request.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {request.threads}")
    try:
        spec = get_optimizer_spec(request.optimizer)
        for key in request.overrides:
            if key in _TRAINER_OWNED_KEYS:
                raise ConfigError(f"--opt {key}=... is set by the trainer (the run directory)")
        explicit = preset.optimizer_defaults_for(spec.name)
        explicit.update(request.overrides)
        resolved = resolve_hyperparameters(request.optimizer, **explicit)
    except ValueError as exc:  # OptimizerConfigError: unknown name, key or bad value
        raise ConfigError(str(exc)) from None
    for key in _TRAINER_OWNED_KEYS:
        resolved.pop(key, None)
    data_root = resolve_data_root(preset, request.data_root)
    _check_writable(Path(request.out_dir))
    if request.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install 'fambench[tensorboard]'"
            ) from None
    if request.device is not None:
        device = torch.device(request.device)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but torch sees no CUDA device")
    total_steps = request.steps or preset.steps
    identity = {
        # The preset minus its per-optimizer table: this run's own hyperparameters are in
        # "hparams", and retuning another optimizer must not orphan this run's directory.
        "preset": {k: v for k, v in preset.to_dict().items() if k != "optimizer_defaults"},
        "optimizer": spec.name,
        "hparams": explicit,
        "seed": request.seed,
        "steps": total_steps,
        "time_budget_s": request.time_budget_s,
        "data_root": str(data_root) if data_root is not None else None,
    }
    digest = hashlib.sha1(_stable_json(identity).encode()).hexdigest()[:8]
    run_id = f"{preset.name}-{_sanitize(spec.name)}-s{request.seed}-{digest}"
    return RunPlan(
        request=request,
        preset=preset,
        optimizer_name=spec.name,
        fam_trace=bool(spec.is_fam and spec.trace),
        explicit_hparams=explicit,
        optimizer_hparams=resolved,
        hparams_key=hparams_key(explicit),
        total_steps=total_steps,
        run_id=run_id,
        run_dir=Path(request.out_dir) / run_id,
        data_root=data_root,
        device=device,
        threads=request.threads or default_threads(),
    )


# ---------------------------------------------------------------------------------------------
# Helpers of the loop


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


def _provenance(plan: RunPlan) -> dict[str, Any]:
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
        "command": plan.request.command,
        "hostname": socket.gethostname(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB else


def _schedule_steps(preset: Preset, total: int) -> dict[str, int]:
    # FAMScheduler needs warmup <= decay_start < total (and total > warmup).
    warmup = min(max(1, round(preset.schedule.warmup_fraction * total)), total - 1)
    decay_start = min(max(warmup, round(preset.schedule.decay_start_fraction * total)), total - 1)
    return {"warmup_steps": warmup, "decay_start_step": decay_start, "total_steps": total}


class _BatchStream:
    """Training batches in order: epoch after epoch of the length-bucketed batcher."""

    def __init__(self, batcher: Any) -> None:
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


class _Diverged(Exception):
    """A non-finite or too large loss or gradient norm at `step` (not applied)."""

    def __init__(self, message: str, step: int, loss: float, lr: float, grad_norm: float):
        super().__init__(message)
        self.step, self.loss, self.lr, self.grad_norm = step, loss, lr, grad_norm


@dataclass
class _Progress:
    """Everything about the run's progress that a checkpoint must carry."""

    step: int = 0
    train_s: float = 0.0
    eval_s: float = 0.0
    audio_s: float = 0.0
    last_eval_step: int = -1
    rows: list[dict[str, float]] = field(default_factory=list)
    loss_sum: float = 0.0
    grad_sum: float = 0.0
    interval_steps: int = 0
    time_to_target_s: float | None = None
    final_dev: dict[str, float] | None = None
    best_dev_wer: float | None = None


def _nan() -> float:
    return float("nan")


def _train_row(step: int, wall_s: float, loss: float, lr: float, grad: float) -> dict[str, float]:
    return {
        "step": step,
        "wall_s": wall_s,
        "train_loss": loss,
        "lr": lr,
        "grad_norm": grad,
        "dev_wer": _nan(),
        "dev_cer": _nan(),
        "dev_loss": _nan(),
        "eval_s": _nan(),
    }


# ---------------------------------------------------------------------------------------------
# The run


class _Run:
    """One training run: built from a plan and data, owns the run directory while it trains."""

    def __init__(
        self, plan: RunPlan, data: WorkloadData, progress: ProgressCallback | None
    ) -> None:
        self.plan = plan
        self.preset = plan.preset
        self.data = data
        self.files = RunFiles(plan.run_dir)
        self.device = plan.device
        self.emit = progress or (lambda event: None)
        self.timings = {"data_s": 0.0, "forward_s": 0.0, "backward_s": 0.0, "optimizer_s": 0.0}

        torch.manual_seed(self.plan.request.seed)
        settings = self.preset.model.replace(
            vocab_size=data.tokenizer.vocab_size, n_mels=data.n_mels
        )
        self.model_settings = settings
        self.model = ConformerCTC(settings).to(self.device)
        self.schedule = _schedule_steps(self.preset, plan.total_steps)
        self.optimizer = self._build_optimizer(debug=False)  # validates the hyperparameters
        self.specaug_gen = torch.Generator().manual_seed(self.plan.request.seed + 1)
        self.stream = _BatchStream(
            data.train_batcher(self.preset.batch_frames, self.plan.request.seed)
        )
        self.ctc = torch.nn.CTCLoss(blank=0, reduction="sum", zero_infinity=True)
        self.state = _Progress()
        self.writer: Any = None

    # -- construction ------------------------------------------------------------------------

    def _build_optimizer(self, debug: bool) -> torch.optim.Optimizer:
        kwargs = dict(self.plan.explicit_hparams)
        if self.plan.fam_trace and debug:
            kwargs.update(debug=True, debug_dir=str(self.files.root))
        try:
            optimizer = build_optimizer(self.plan.request.optimizer, self.model, **kwargs)
        except ValueError as exc:  # OptimizerConfigError and plain ValueErrors of plug-ins
            raise ConfigError(str(exc)) from None
        except TypeError as exc:  # a plug-in rejecting a keyword
            raise ConfigError(f"optimizer {self.plan.optimizer_name}: {exc}") from None
        return optimizer

    def _build_scheduler(self) -> FAMScheduler:
        sched = self.preset.schedule
        base_lr = float(self.optimizer.param_groups[0]["lr"])
        return FAMScheduler(
            self.optimizer,
            warmup_steps=self.schedule["warmup_steps"],
            total_steps=self.schedule["total_steps"],
            decay_start_step=self.schedule["decay_start_step"],
            warmup_start_lr=base_lr * sched.warmup_start_factor,
            eta_min=base_lr * sched.final_factor,
        )

    def start(self, resume: bool) -> bool:
        """Attach to the (locked) run directory; returns True when resuming a checkpoint."""
        self.optimizer = self._build_optimizer(debug=True)
        self.scheduler = self._build_scheduler()
        resumed = False
        if resume and self.files.checkpoint.is_file():
            self._load_checkpoint()
            resumed = True
        else:
            for stale in (
                self.files.checkpoint,
                self.files.metrics_parquet,
                self.files.metrics_csv,
                self.files.fam_debug,
                self.files.summary,
            ):
                stale.unlink(missing_ok=True)
            shutil.rmtree(self.files.tensorboard, ignore_errors=True)
            write_json_atomic(self.files.config, self._config())
            self.data.tokenizer.save(self.files.root)
        if self.plan.request.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                log_dir=str(self.files.tensorboard),
                purge_step=self.state.step + 1 if resumed else None,
            )
        self._write_summary("running", "training")
        return resumed

    def _config(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "format_version": FORMAT_VERSION,
            "run_id": plan.run_id,
            "preset": self.preset.name,
            "optimizer": plan.optimizer_name,
            "optimizer_overrides": dict(plan.request.overrides),
            "optimizer_hparams": plan.optimizer_hparams,
            "hparams_key": plan.hparams_key,
            "seed": plan.request.seed,
            "steps": plan.total_steps,
            "time_budget_s": plan.request.time_budget_s,
            "model": {
                **dataclasses.asdict(self.model_settings),
                "parameters": sum(p.numel() for p in self.model.parameters()),
            },
            "data": self.data.describe(),
            "schedule": {
                **self.schedule,
                **dataclasses.asdict(self.preset.schedule),
                "scheduler": "FAMScheduler",
            },
            "training": {
                "batch_frames": self.preset.batch_frames,
                "eval_every": self.preset.eval_every,
                "log_every": self.preset.log_every,
                "grad_clip": self.preset.grad_clip,
                "max_loss": self.preset.max_loss,
                "specaugment": (
                    dataclasses.asdict(self.preset.specaugment) if self.preset.specaugment else None
                ),
                "amp": self.preset.amp and self.device.type == "cuda",
            },
            "target_wer": self.preset.target_wer,
            "provenance": _provenance(plan),
        }

    # -- checkpoints -------------------------------------------------------------------------

    def _rng_state(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state(), "specaug": self.specaug_gen.get_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _save_checkpoint(self, rng: dict[str, Any], stream: Mapping[str, int]) -> None:
        payload = {
            "format_version": FORMAT_VERSION,
            "run_id": self.plan.run_id,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "stream": dict(stream),
            "progress": dataclasses.asdict(self.state),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_bytes_atomic(self.files.checkpoint, buffer.getvalue())

    def _load_checkpoint(self) -> None:
        try:
            payload = torch.load(
                self.files.checkpoint, map_location=self.device, weights_only=False
            )
        except Exception as exc:  # a truncated or foreign file: say which
            raise ResultsError(
                f"cannot read checkpoint {self.files.checkpoint} ({exc}); rerun with --force"
            ) from exc
        if payload.get("run_id") != self.plan.run_id:
            raise ResultsError(
                f"checkpoint {self.files.checkpoint} belongs to another run; rerun with --force"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["rng"]["torch"].cpu())
        self.specaug_gen.set_state(payload["rng"]["specaug"].cpu())
        if "cuda" in payload["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(payload["rng"]["cuda"].cpu(), self.device)
        self.stream.load(payload["stream"])
        self.state = _Progress(**payload["progress"])
        self._truncate_debug_log(self.state.step)
        self._write_metrics()
        log.info("resumed %s at step %d", self.plan.run_id, self.state.step)

    def _truncate_debug_log(self, step: int) -> None:
        """Drop FAM debug records written after the checkpoint (they will be written again)."""
        path = self.files.fam_debug
        if not path.is_file():
            return
        kept = []
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the interruption
                if int(record.get("step", 0)) <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
        write_bytes_atomic(path, "".join(kept).encode())

    # -- files -------------------------------------------------------------------------------

    def _write_metrics(self) -> None:
        self.files.write_metrics(self.state.rows)

    def summary(self, status: str, message: str) -> dict[str, Any]:
        s = self.state
        final = s.final_dev or {}
        test = getattr(self, "test_rates", None) or {}
        return {
            "format_version": FORMAT_VERSION,
            "run_id": self.plan.run_id,
            "status": status,
            "steps": s.step,
            "train_s": round(s.train_s, 3),
            "eval_s": round(s.eval_s, 3),
            "final_dev_wer": final.get("wer"),
            "final_dev_cer": final.get("cer"),
            "best_dev_wer": s.best_dev_wer,
            "test_wer": test.get("wer"),
            "test_cer": test.get("cer"),
            "target_wer": self.preset.target_wer,
            "time_to_target_s": s.time_to_target_s,
            "steps_per_s": s.step / s.train_s if s.train_s > 0 else None,
            "audio_s_per_s": s.audio_s / s.train_s if s.train_s > 0 else None,
            "peak_memory_mb": round(_peak_memory_mb(self.device), 1),
            "message": message,
        }

    def _write_summary(self, status: str, message: str) -> dict[str, Any]:
        summary = self.summary(status, message)
        write_json_atomic(self.files.summary, summary)
        return summary

    # -- evaluation --------------------------------------------------------------------------

    @torch.inference_mode()
    def _evaluate(self, split: Split) -> dict[str, float]:
        self.model.eval()
        loss_sum, tokens = 0.0, 0
        hyps: list[str] = []
        for batch in split.batches:
            feats = batch.feats.to(self.device, non_blocking=True)
            lens = batch.feat_lens.to(self.device)
            with self._autocast():
                log_probs, out_lens = self.model(feats, lens)
            loss = self.ctc(
                log_probs.float().transpose(0, 1),
                batch.targets.to(self.device),
                out_lens,
                batch.target_lens.to(self.device),
            )
            loss_sum += float(loss)
            tokens += int(batch.target_lens.sum())
            hyps.extend(
                " ".join(self.data.tokenizer.decode(ids).split())
                for ids in greedy_decode(log_probs, out_lens)
            )
        self.model.train()
        rates = error_rates(split.references, hyps)
        rates["loss"] = loss_sum / max(tokens, 1)
        return rates

    def _eval_dev(self) -> None:
        s = self.state
        started = time.perf_counter()
        rates = self._evaluate(self.data.dev)
        eval_s = time.perf_counter() - started
        s.eval_s += eval_s
        s.last_eval_step = s.step
        s.rows.append(
            {
                "step": s.step,
                "wall_s": s.train_s,
                "train_loss": _nan(),
                "lr": _nan(),
                "grad_norm": _nan(),
                "dev_wer": rates["wer"],
                "dev_cer": rates["cer"],
                "dev_loss": rates["loss"],
                "eval_s": eval_s,
            }
        )
        s.final_dev = {"wer": rates["wer"], "cer": rates["cer"]}
        if s.best_dev_wer is None or rates["wer"] < s.best_dev_wer:
            s.best_dev_wer = rates["wer"]
        target = self.preset.target_wer
        if target is not None and s.time_to_target_s is None and rates["wer"] <= target:
            s.time_to_target_s = s.train_s
        if self.writer is not None:
            for key in ("wer", "cer", "loss"):
                self.writer.add_scalar(f"dev/{key}", rates[key], s.step)
        log.info(
            "step %d: dev WER %.4f CER %.4f loss %.4f (%.1f s)",
            s.step,
            rates["wer"],
            rates["cer"],
            rates["loss"],
            eval_s,
        )
        self.emit(ProgressEvent("eval", s.step, self.plan.total_steps, dev_wer=rates["wer"]))

    # -- training ----------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.preset.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _train_step(self, t0: float) -> float:
        """One step; t0 is when this step's share of training time began. Returns its end."""
        s = self.state
        indices = self.stream.next()
        batch = self.data.train_batch(indices, self.specaug_gen)
        feats = batch.feats.to(self.device, non_blocking=True)
        lens = batch.feat_lens.to(self.device, non_blocking=True)
        targets = batch.targets.to(self.device, non_blocking=True)
        target_lens = batch.target_lens.to(self.device, non_blocking=True)
        t1 = time.perf_counter()
        with self._autocast():
            log_probs, out_lens = self.model(feats, lens)
        loss = self.ctc(log_probs.float().transpose(0, 1), targets, out_lens, target_lens)
        loss = loss / target_lens.sum()
        loss_value = float(loss.detach())
        t2 = time.perf_counter()
        lr = float(self.optimizer.param_groups[0]["lr"])
        if not math.isfinite(loss_value) or loss_value > self.preset.max_loss:
            raise _Diverged(
                f"diverged at step {s.step + 1}: train loss {loss_value:.4g} "
                f"(bound {self.preset.max_loss:g}) at lr {lr:.4g}",
                s.step + 1,
                loss_value,
                lr,
                _nan(),
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.preset.grad_clip)
        )
        t3 = time.perf_counter()
        if not math.isfinite(grad_norm):
            raise _Diverged(
                f"diverged at step {s.step + 1}: gradient norm {grad_norm} at lr {lr:.4g}",
                s.step + 1,
                loss_value,
                lr,
                grad_norm,
            )
        self._in_update = True
        self.optimizer.step()
        self.scheduler.step()
        t4 = time.perf_counter()
        s.step += 1
        s.train_s += t4 - t0
        self._session_train_s += t4 - t0
        s.audio_s += float(batch.feat_lens.sum()) * self.data.hop_s
        s.loss_sum += loss_value
        s.grad_sum += grad_norm
        s.interval_steps += 1
        if s.step % self.preset.log_every == 0 or s.step == self.plan.total_steps:
            n = s.interval_steps
            s.rows.append(_train_row(s.step, s.train_s, s.loss_sum / n, lr, s.grad_sum / n))
            if self.writer is not None:
                self.writer.add_scalar("train/loss", s.loss_sum / n, s.step)
                self.writer.add_scalar("train/lr", lr, s.step)
                self.writer.add_scalar("train/grad_norm", s.grad_sum / n, s.step)
            s.loss_sum = s.grad_sum = 0.0
            s.interval_steps = 0
        self._in_update = False
        self.timings["data_s"] += t1 - t0
        self.timings["forward_s"] += t2 - t1
        self.timings["backward_s"] += t3 - t2
        self.timings["optimizer_s"] += t4 - t3
        self._session_steps += 1
        rate = self._session_steps / self._session_train_s
        self.emit(
            ProgressEvent(
                "train",
                s.step,
                self.plan.total_steps,
                train_loss=loss_value,
                dev_wer=s.final_dev["wer"] if s.final_dev else None,
                steps_per_s=rate,
                eta_s=(self.plan.total_steps - s.step) / rate,
            )
        )
        return t4

    def _budget_spent(self) -> bool:
        s = self.state
        budget = self.plan.request.time_budget_s
        return s.step >= self.plan.total_steps or (budget is not None and s.train_s >= budget)

    def train(self) -> tuple[str, str]:
        """The loop; returns (status, message)."""
        s = self.state
        self._in_update = False
        self._session_steps, self._session_train_s = 0, 0.0
        self.model.train()
        boundary = (s.step, self._rng_state(), self.stream.state())
        try:
            while True:
                done = self._budget_spent()
                if (
                    s.step > 0
                    and s.last_eval_step != s.step
                    and (done or s.step % self.preset.eval_every == 0)
                ):
                    self._eval_dev()
                    self._save_checkpoint(self._rng_state(), self.stream.state())
                    self._write_metrics()
                    self._write_summary("running", "training")
                if done:
                    break
                # The state at the step boundary: what an interruption inside the step saves
                # (the forward pass has drawn dropout and SpecAugment randomness by then).
                mark = time.perf_counter()
                boundary = (s.step, self._rng_state(), self.stream.state())
                ended = self._train_step(mark)
                # Bookkeeping and the progress display count as training time too.
                tail = time.perf_counter() - ended
                s.train_s += tail
                self._session_train_s += tail
        except _Diverged as exc:
            s.rows.append(_train_row(exc.step, s.train_s, exc.loss, exc.lr, exc.grad_norm))
            self._write_metrics()
            return "diverged", str(exc)
        except KeyboardInterrupt:
            if self._in_update:
                message = (
                    "interrupted during an update; run the same command to resume "
                    "from the last checkpoint"
                )
            else:
                step, rng, stream = boundary
                if step != s.step:  # the step had finished: its end is the boundary
                    rng, stream = self._rng_state(), self.stream.state()
                self._save_checkpoint(rng, stream)
                message = f"interrupted at step {s.step}; run the same command to resume"
            self._write_metrics()
            return "interrupted", message
        if self.data.test is not None:
            started = time.perf_counter()
            self.test_rates = self._evaluate(self.data.test)
            s.eval_s += time.perf_counter() - started
        self._write_metrics()
        message = f"completed {s.step} steps"
        if self.plan.request.time_budget_s is not None and s.step < self.plan.total_steps:
            message += f" (time budget of {self.plan.request.time_budget_s:g} s reached)"
        return "completed", message

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        close = getattr(self.optimizer, "close", None)
        if callable(close):
            close()


def _read_summary(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


_FINISHED = ("completed", "diverged")


def run_training(request: RunRequest, progress: ProgressCallback | None = None) -> RunOutcome:
    """Train (or resume, or report) the run described by request; see the module docstring.

    Raises a FambenchError (ConfigError, DataError, ResultsError) for bad input, before
    anything is written. KeyboardInterrupt inside the loop is caught: the run is saved with
    status "interrupted" and returned.
    """
    plan = plan_run(request)
    files = RunFiles(plan.run_dir)
    emit = progress or (lambda event: None)
    previous = _read_summary(files.summary)
    if previous and previous.get("status") in _FINISHED and not request.force:
        return RunOutcome(plan.run_id, plan.run_dir, previous["status"], previous, skipped=True)

    torch.set_num_threads(plan.threads)
    emit(ProgressEvent("setup", total_steps=plan.total_steps, message="preparing data"))
    data = load_workload_data(
        plan.preset,
        Path(request.cache_dir),
        plan.data_root,
        log_message=lambda m: emit(ProgressEvent("setup", total_steps=plan.total_steps, message=m)),
    )
    run = _Run(plan, data, progress)

    try:
        files.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"cannot create run directory {files.root}: {exc.strerror}") from exc
    lock = RunLock(files.lock)
    lock.acquire()
    try:
        previous = _read_summary(files.summary)
        if previous and previous.get("status") in _FINISHED and not request.force:
            return RunOutcome(plan.run_id, plan.run_dir, previous["status"], previous, skipped=True)
        resumed = run.start(resume=not request.force)
        try:
            status, message = run.train()
        finally:
            run.close()
        summary = run._write_summary(status, message)
        emit(ProgressEvent("done", run.state.step, plan.total_steps, message=message))
        timings = {**run.timings, "train_s": run._session_train_s}
        return RunOutcome(
            plan.run_id, plan.run_dir, status, summary, resumed=resumed, timings=timings
        )
    finally:
        lock.release()
