"""The records of a run directory: metric rows, the summary, provenance keys, the version."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

# 2: interpolated time to target in summary.json; the optimizer trace is `fam_trace.jsonl`
# (was fam_debug.jsonl); config.json gained `ablation_of`, `trace`, `tuned_from`.
FORMAT_VERSION = 2

METRIC_COLUMNS = (
    "step",
    "wall_s",
    "train_loss",
    "lr",
    "grad_norm",
    "dev_wer",
    "dev_cer",
    "dev_loss",
    "eval_s",
)

STATUSES = ("completed", "diverged", "interrupted", "failed", "running")
FINISHED = ("completed", "diverged")  # a run with one of these is reported, not rerun

PROVENANCE_KEYS = (
    "fambench_version",
    "git_commit",
    "python",
    "torch",
    "torchaudio",
    "device",
    "threads",
    "world_size",
    "optimizer_source",
    "command",
    "hostname",
    "started_at",
)


def _nan() -> float:
    return math.nan


def train_row(step: int, wall_s: float, loss: float, lr: float, grad: float) -> dict[str, float]:
    """A metric row of a logged training step (evaluation columns NaN)."""
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


def eval_row(step: int, wall_s: float, rates: Mapping[str, float], eval_s: float) -> dict:
    """A metric row of a dev evaluation (training columns NaN)."""
    return {
        "step": step,
        "wall_s": wall_s,
        "train_loss": _nan(),
        "lr": _nan(),
        "grad_norm": _nan(),
        "dev_wer": rates["wer"],
        "dev_cer": rates["cer"],
        "dev_loss": rates["loss"],
        "eval_s": eval_s,
    }


def metrics_frame(rows: Iterable[Mapping[str, float]]) -> pd.DataFrame:
    """A metrics table with exactly METRIC_COLUMNS (missing values NaN, step as int64)."""
    frame = pd.DataFrame(list(rows), columns=list(METRIC_COLUMNS), dtype="float64")
    frame["step"] = frame["step"].astype("int64")
    return frame


@dataclass(frozen=True)
class Summary:
    """summary.json: a run's status and headline numbers."""

    run_id: str
    status: str = "running"
    steps: int | None = None
    train_s: float | None = None
    eval_s: float | None = None
    final_dev_wer: float | None = None
    final_dev_cer: float | None = None
    best_dev_wer: float | None = None
    test_wer: float | None = None
    test_cer: float | None = None
    target_wer: float | None = None
    time_to_target_s: float | None = None
    steps_per_s: float | None = None
    audio_s_per_s: float | None = None
    peak_memory_mb: float | None = None
    precision: str | None = None  # "fp32" or "bf16" (autocast)
    padded_share: float | None = None  # of the frames trained, the share that was padding
    # Honest wall-clock: CPU seconds beside wall seconds over the same spans, the threads the
    # run used of the cores it could use, the 1-minute load at start and end, the cores other
    # processes kept busy (mean and worst interval), and whether that contended the run.
    cpu_s: float | None = None
    wall_s: float | None = None
    threads: int | None = None
    cores: int | None = None
    load_start: float | None = None
    load_end: float | None = None
    others_cores: float | None = None
    others_cores_peak: float | None = None
    contended: bool | None = None
    # Data-parallel runs: the number of processes, and at the last checkpoint the sha1 of
    # each rank's model and optimizer state (equal when the ranks agree, as they must).
    world_size: int | None = None
    rank_digests: list[str] | None = None
    message: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON object, format_version first."""
        data = dataclasses.asdict(self)
        return {"format_version": data.pop("format_version"), **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], run_id: str) -> Summary:
        """Read back; unknown keys are ignored, missing ones take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("run_id", run_id)
        values["status"] = values.get("status") or "running"
        values["message"] = values.get("message") or ""
        return cls(**values)


SUMMARY_FIELDS = (
    "format_version",
    *(f.name for f in dataclasses.fields(Summary) if f.name != "format_version"),
)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    return str(value)


def hparams_key(hparams: Mapping[str, Any]) -> str:
    """A short stable label of hyperparameters, e.g. ``lr=0.002,weight_decay=0.01``.

    Runs with the same preset, optimizer and key are seeds of one configuration.
    """
    if not hparams:
        return "default"
    return ",".join(f"{k}={_format_value(hparams[k])}" for k in sorted(hparams))
