"""Run directories: what a training run writes and how to load runs back into pandas.

Layout of ``results/<run-id>/`` (format_version 1):

- ``config.json``: the resolved configuration and provenance of the run;
- ``metrics.parquet`` and ``metrics.csv``: one row per logged train step and per evaluation,
  columns METRIC_COLUMNS (NaN where not applicable);
- ``summary.json``: status and headline numbers (SUMMARY_FIELDS);
- ``checkpoint.pt``, ``tokenizer.json``, ``fam_debug.jsonl`` (FAM variants), ``run.lock``
  while a process owns the directory, ``tensorboard/`` on request.

Every file is written to a temporary name in the same directory and renamed into place, so a
reader never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fambench.errors import ResultsError

FORMAT_VERSION = 1

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

SUMMARY_FIELDS = (
    "format_version",
    "run_id",
    "status",
    "steps",
    "train_s",
    "eval_s",
    "final_dev_wer",
    "final_dev_cer",
    "best_dev_wer",
    "test_wer",
    "test_cer",
    "target_wer",
    "time_to_target_s",
    "steps_per_s",
    "audio_s_per_s",
    "peak_memory_mb",
    "message",
)

STATUSES = ("completed", "diverged", "interrupted", "running")


@dataclass(frozen=True)
class RunFiles:
    """The paths of one run directory."""

    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def metrics_parquet(self) -> Path:
        return self.root / "metrics.parquet"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def fam_debug(self) -> Path:
        return self.root / "fam_debug.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / "run.lock"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def write_metrics(self, rows: list[dict[str, float]]) -> pd.DataFrame:
        """Write the metric rows as parquet and CSV (atomically); returns the table."""
        frame = metrics_frame(rows)
        write_table_atomic(frame, self.metrics_parquet)
        write_table_atomic(frame, self.metrics_csv)
        return frame


def metrics_frame(rows: Iterable[dict[str, float]]) -> pd.DataFrame:
    """A metrics table with exactly METRIC_COLUMNS (missing values NaN, step as int64)."""
    frame = pd.DataFrame(list(rows), columns=list(METRIC_COLUMNS), dtype="float64")
    frame["step"] = frame["step"].astype("int64")
    return frame


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    # os.open (not mkstemp) so the file gets the usual permissions (0666 minus the umask).
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON (NaN/inf as null) via a temporary file and a rename."""
    text = json.dumps(_json_safe(data), indent=2, sort_keys=False, allow_nan=False)
    with _atomic_path(Path(path)) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def write_table_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write a table as .parquet or .csv (by the suffix) via a temporary file and a rename."""
    path = Path(path)
    with _atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            raise ValueError(f"unknown table format for {path} (use .parquet or .csv)")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write bytes via a temporary file and a rename."""
    with _atomic_path(Path(path)) as tmp:
        tmp.write_bytes(data)


class RunLock:
    """An exclusive lock file in a run directory: one process writes a run at a time.

    Created with O_EXCL; holds "<hostname> <pid>". A lock left by a dead process on the same
    host is taken over; a live owner (or one on another host) makes acquire() fail.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._held = False

    def acquire(self) -> None:
        host = socket.gethostname()
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._stale(host):
                    self.path.unlink(missing_ok=True)
                    continue
                raise ResultsError(
                    f"run directory {self.path.parent} is in use by another process "
                    f"(lock {self.path}: {self._owner()}); wait for it or remove the lock file"
                ) from None
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{host} {os.getpid()}\n")
            self._held = True
            return
        raise ResultsError(f"could not take the lock {self.path}")

    def _owner(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown owner"
        except OSError:
            return "unknown owner"

    def _stale(self, host: str) -> bool:
        parts = self._owner().split()
        if len(parts) != 2 or parts[0] != host or not parts[1].isdigit():
            return False
        pid = int(parts[1])
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class LoadedRun:
    """One run directory read back."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: pd.DataFrame

    @property
    def run_id(self) -> str:
        return str(self.config.get("run_id") or self.path.name)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path} is not valid JSON (line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise ResultsError(f"{path} does not hold a JSON object")
    return data


def _check_format(path: Path, data: dict[str, Any]) -> None:
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ResultsError(
            f"{path} has format_version {version!r}; this fambench reads format_version "
            f"{FORMAT_VERSION} (re-run with this version or use a matching fambench)"
        )


def load_run(path: Path) -> LoadedRun:
    """Read one run directory. A run without summary/metrics yet reads as status 'running'."""
    files = RunFiles(Path(path))
    if not files.config.is_file():
        raise ResultsError(f"{files.root} is not a run directory (no config.json)")
    config = _read_json(files.config)
    _check_format(files.config, config)
    if files.summary.is_file():
        summary = _read_json(files.summary)
        _check_format(files.summary, summary)
    else:
        summary = {"format_version": FORMAT_VERSION, "run_id": config.get("run_id")}
    summary = {field: summary.get(field) for field in SUMMARY_FIELDS}
    summary["status"] = summary["status"] or "running"
    if files.metrics_parquet.is_file():
        try:
            metrics = pd.read_parquet(files.metrics_parquet)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise ResultsError(f"cannot read {files.metrics_parquet}: {exc}") from exc
        missing = [c for c in METRIC_COLUMNS if c not in metrics.columns]
        if missing:
            raise ResultsError(f"{files.metrics_parquet} lacks columns {', '.join(missing)}")
    else:
        metrics = metrics_frame([])
    return LoadedRun(path=files.root, config=config, summary=summary, metrics=metrics)
