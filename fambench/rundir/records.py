"""The records of a run directory: metric rows, the configuration, the summary, provenance
keys, the version."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fambench.errors import ResultsError

FORMAT_VERSION = 3
# Format 2 differs only in the metric rows' name for training seconds, read as LEGACY_COLUMNS say.
READABLE_VERSIONS = (2, 3)
LEGACY_COLUMNS = {"wall_s": "train_s"}

METRIC_COLUMNS = (
    "step",
    "train_s",  # training seconds so far (evaluation time not counted)
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


def train_row(step: int, train_s: float, loss: float, lr: float, grad: float) -> dict[str, float]:
    """A metric row of a logged training step (evaluation columns NaN)."""
    return {
        "step": step,
        "train_s": train_s,
        "train_loss": loss,
        "lr": lr,
        "grad_norm": grad,
        "dev_wer": _nan(),
        "dev_cer": _nan(),
        "dev_loss": _nan(),
        "eval_s": _nan(),
    }


def eval_row(step: int, train_s: float, rates: Mapping[str, float], eval_s: float) -> dict:
    """A metric row of a dev evaluation (training columns NaN)."""
    return {
        "step": step,
        "train_s": train_s,
        "train_loss": _nan(),
        "lr": _nan(),
        "grad_norm": _nan(),
        "dev_wer": rates["wer"],
        "dev_cer": rates["cer"],
        "dev_loss": rates["loss"],
        "eval_s": eval_s,
    }


def metrics_frame(rows: Iterable[Mapping[str, float]]) -> pd.DataFrame:
    """A metrics table with exactly METRIC_COLUMNS (missing values NaN, step as int64); rows
    with format 2's column names (a format-2 checkpoint holds them) are read under format 3's
    (LEGACY_COLUMNS)."""
    rows = [{LEGACY_COLUMNS.get(k, k): v for k, v in row.items()} for row in rows]
    frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS), dtype="float64")
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
    wall_s: float | None = None  # measured wall seconds over the same spans as cpu_s
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


@dataclass(frozen=True)
class RunConfig:
    """config.json: every resolved setting of a run, and its provenance. The trainer writes it
    (fambench.training.record); `load_run` reads it back, checking each value's type."""

    run_id: str
    preset: str
    optimizer: str
    seed: int | None = None
    ablation_of: str | None = None  # the registry's word: this optimizer ablates that one
    optimizer_overrides: Mapping[str, Any] = field(default_factory=dict)  # the user's --opt
    optimizer_hparams: Mapping[str, Any] = field(default_factory=dict)  # resolved, all of them
    optimizer_capabilities: Mapping[str, Any] = field(default_factory=dict)
    tuned_from: str | None = None  # the sweep table the tuned values came from
    hparams_key: str = ""  # tuned values + the user's: what groups seeds into a configuration
    steps: int | None = None  # the step budget
    time_budget_s: float | None = None
    model: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    schedule: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    target_wer: float | None = None
    target_method: str = ""
    trace: str | None = None  # the optimizer's trace file in the run directory
    provenance: Mapping[str, Any] = field(default_factory=dict)  # PROVENANCE_KEYS
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON object, format_version first."""
        data = dataclasses.asdict(self)
        return {"format_version": data.pop("format_version"), **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: object) -> RunConfig:
        """Read back, checking types; ResultsError naming ``path`` and the key otherwise.
        Unknown keys are ignored, missing ones take their defaults."""
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            value = data.get(item.name)
            if value is None:
                if item.name in _REQUIRED:
                    raise ResultsError(f"{path}: {item.name} should be text, found missing")
                continue
            kind = _CONFIG_TYPES[item.name]
            if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
                what = {str: "text", int: "an integer", dict: "an object"}.get(kind, "a number")
                raise ResultsError(f"{path}: {item.name} should be {what}, found {value!r}")
            values[item.name] = float(value) if kind == (int, float) else value
        return cls(**values)


_REQUIRED = ("run_id", "preset", "optimizer")
_CONFIG_TYPES: dict[str, Any] = {
    **dict.fromkeys(
        ("run_id", "preset", "optimizer", "ablation_of", "tuned_from", "hparams_key",
         "target_method", "trace"),
        str,
    ),
    **dict.fromkeys(
        ("optimizer_overrides", "optimizer_hparams", "optimizer_capabilities", "model", "data",
         "schedule", "training", "provenance"),
        dict,
    ),
    **dict.fromkeys(("seed", "steps", "format_version"), int),
    **dict.fromkeys(("time_budget_s", "target_wer"), (int, float)),
}  # fmt: skip


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
