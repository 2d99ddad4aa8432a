"""The paths of a run directory, its writers, and the lock that gives it one owner."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fambench.errors import ResultsError
from fambench.fileio import atomic_write, move_into, write_json
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

    @property
    def previous(self) -> Path:
        """Where --force keeps the old results until the new run has its first checkpoint."""
        return self.root / ".previous"

    def _entries(self) -> list[Path]:
        keep = {self.lock.name, self.previous.name}
        return [p for p in self.root.iterdir() if p.name not in keep]

    def set_aside(self) -> None:
        """Move the run's files into `previous` (a forced rerun starts); if `previous` already
        holds results (an earlier forced run died before its first checkpoint), keep those."""
        if self.previous.is_dir():
            for entry in self._entries():
                _remove(entry)
        else:
            self.previous.mkdir()
            move_into(self._entries(), self.previous)

    def recover_previous(self) -> bool:
        """Put set-aside results back if the forced run that replaced them died before its
        first checkpoint; drop them if it got that far. True when results were put back."""
        if not self.previous.is_dir():
            return False
        if self.checkpoint.is_file():
            self.discard_previous()
            return False
        for entry in self._entries():
            _remove(entry)
        move_into(list(self.previous.iterdir()), self.root)
        self.previous.rmdir()
        return True

    def discard_previous(self) -> None:
        """The new run has a checkpoint: the results it replaces are gone for good."""
        shutil.rmtree(self.previous, ignore_errors=True)

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
    """An exclusive lock on a run directory: one process writes a run at a time.

    `fcntl.flock` on ``run.lock`` (holding "<hostname> <pid>" for people to read): the kernel
    releases it when the owner dies, however it dies, so there is no stale lock to take over
    and no check-then-create race between processes that want it at once. The file is removed
    on release; a process that locked a file someone just removed notices and tries again.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ResultsError(
                    f"run directory {self.path.parent} is in use by another process "
                    f"(lock {self.path}: {self._owner()}); wait for it to finish"
                ) from None
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)  # locked a file its previous owner had just removed: try again
        raise ResultsError(f"could not take the lock {self.path}")

    def _owner(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown owner"
        except OSError:
            return "unknown owner"

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # before unlocking: see acquire()
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def lock_is_held(path: Path) -> bool:
    """Whether a live process holds the run lock at ``path`` (never blocks, never takes it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock if it was taken
    return False
