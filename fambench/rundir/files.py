"""The paths of a run directory, its writers, and the lock that gives it one owner."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fambench.errors import ResultsError
from fambench.fileio import atomic_write, move_into, write_json
from fambench.filelock import FileLock
from fambench.rundir.records import RunConfig, Summary, metrics_frame


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

    def write_config(self, config: RunConfig) -> None:
        write_json(self.config, config.to_json())

    def write_summary(self, summary: Summary) -> None:
        write_json(self.summary, summary.to_json())

    def write_metrics(self, rows: Iterable[Mapping[str, float]]) -> pd.DataFrame:
        """Write the metric rows as parquet and CSV; returns the table."""
        frame = metrics_frame(rows)
        atomic_write(self.metrics_parquet, lambda tmp: frame.to_parquet(tmp, index=False))
        atomic_write(self.metrics_csv, lambda tmp: frame.to_csv(tmp, index=False))
        return frame


class RunLock(FileLock):
    """The lock of a run directory (``run.lock``): one process writes a run at a time. Taken
    without waiting; it names its holder, and the file goes when the run lets it go."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, blocking=False, record_owner=True, remove_on_release=True)

    def acquire(self) -> bool:
        try:
            taken = super().acquire()
        except OSError as exc:
            raise ResultsError(f"cannot take the lock {self.path}: {exc.strerror}") from exc
        if not taken:
            raise ResultsError(
                f"run directory {self.path.parent} is in use by another process "
                f"(lock {self.path}: {self.owner()}); wait for it to finish"
            )
        return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
