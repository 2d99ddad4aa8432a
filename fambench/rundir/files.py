"""The paths of a run directory, its writers, and the lock that gives it one owner."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fambench.errors import ResultsError
from fambench.fileio import atomic_write, write_json
from fambench.rundir.records import Summary, metrics_frame


@dataclass(frozen=True)
class RunFiles:
    """The paths of one run directory, and the one writer of each of its files."""

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
    def lock(self) -> Path:
        return self.root / "run.lock"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def write_config(self, config: Mapping[str, Any]) -> None:
        write_json(self.config, dict(config))

    def write_summary(self, summary: Summary) -> None:
        write_json(self.summary, summary.to_json())

    def write_metrics(self, rows: Iterable[Mapping[str, float]]) -> pd.DataFrame:
        """Write the metric rows as parquet and CSV; returns the table."""
        frame = metrics_frame(rows)
        atomic_write(self.metrics_parquet, lambda tmp: frame.to_parquet(tmp, index=False))
        atomic_write(self.metrics_csv, lambda tmp: frame.to_csv(tmp, index=False))
        return frame


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
