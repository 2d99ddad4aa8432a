"""Reading run directories back: the one reader used by compare, sweeps, tune and tests."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fambench.errors import ResultsError
from fambench.rundir.files import RunFiles
from fambench.rundir.records import (
    LEGACY_COLUMNS,
    METRIC_COLUMNS,
    READABLE_VERSIONS,
    RunConfig,
    Summary,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedRun:
    """One run directory read back. ``summary`` is None while the run has written none."""

    path: Path
    config: RunConfig
    summary: Summary | None
    metrics: pd.DataFrame

    @property
    def run_id(self) -> str:
        return self.config.run_id or self.path.name

    @property
    def status(self) -> str:
        return self.summary.status if self.summary is not None else "running"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ResultsError naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object")
    return data


def _check_version(data: dict[str, Any], path: Path) -> None:
    version = data.get("format_version")
    if version not in READABLE_VERSIONS:
        what = "has no format_version" if version is None else f"is format {version!r}"
        raise ResultsError(
            f"{path.parent}: {path.name} {what}; this fambench reads formats "
            f"{', '.join(map(str, READABLE_VERSIONS))} (written by a different fambench version: rerun the run or use a matching fambench)"
        )


def read_summary(files: RunFiles) -> Summary | None:
    """The run's summary, or None when it has none or it cannot be read (never raises)."""
    try:
        data = read_json(files.summary)
    except ResultsError:
        return None
    return Summary.from_json(data, files.run_id)


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """A run's metric rows (parquet, else CSV; empty when neither is readable).

    Columns are METRIC_COLUMNS (NaN where not applicable; format 2's names read as format 3's),
    sorted by step (int64). Evaluation rows whose ``train_s`` is missing get it interpolated
    from the training rows' step → seconds curve.
    """
    import pyarrow as pa

    files = RunFiles(Path(run_dir))
    frame: pd.DataFrame | None = None
    if files.metrics_parquet.is_file():
        try:
            frame = pd.read_parquet(files.metrics_parquet)
        except (OSError, ValueError, pa.ArrowException) as exc:
            log.warning("%s: unreadable (%s); trying metrics.csv", files.metrics_parquet, exc)
    if frame is None and files.metrics_csv.is_file():
        try:
            frame = pd.read_csv(files.metrics_csv)
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            log.warning("%s: unreadable (%s)", files.metrics_csv, exc)
    if frame is None:
        frame = pd.DataFrame(columns=list(METRIC_COLUMNS))
    frame = frame.rename(columns=LEGACY_COLUMNS)
    for column in METRIC_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame = frame[list(METRIC_COLUMNS)].dropna(subset=["step"])
    frame = frame.sort_values("step", kind="stable").reset_index(drop=True)
    frame["step"] = frame["step"].astype("int64")
    _fill_eval_train_s(frame)
    return frame


def _fill_eval_train_s(frame: pd.DataFrame) -> None:
    missing = frame["train_s"].isna() & frame["dev_wer"].notna()
    known = frame["train_s"].notna() & frame["step"].notna()
    if missing.any() and known.sum() >= 1:
        frame.loc[missing, "train_s"] = np.interp(
            frame.loc[missing, "step"], frame.loc[known, "step"], frame.loc[known, "train_s"]
        )


def load_run(run_dir: str | os.PathLike[str]) -> LoadedRun:
    """Read one run directory; a run without summary.json yet reads as status 'running'."""
    files = RunFiles(Path(run_dir))
    if not files.config.is_file():
        what = "summary.json without config.json" if files.summary.is_file() else "no config.json"
        raise ResultsError(f"{files.root}: {what}; not a complete run")
    data = read_json(files.config)
    _check_version(data, files.config)
    config = RunConfig.from_json(data, files.config)
    summary = None
    if files.summary.is_file():
        data = read_json(files.summary)
        _check_version(data, files.summary)
        summary = Summary.from_json(data, config.run_id or files.run_id)
    return LoadedRun(files.root, config, summary, read_metrics(files.root))


def find_run_dirs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Run directories under ``paths``: each path is a run directory or is searched recursively.

    A run directory is one holding ``config.json`` or ``summary.json``; its subdirectories are
    not searched. Raises ResultsError for a missing path or a path holding no run.
    """
    found: dict[Path, None] = {}
    given = [Path(p) for p in paths]
    if not given:
        raise ResultsError("no results directory given")
    for root in given:
        if not root.exists():
            raise ResultsError(f"{root}: no such directory")
        if not root.is_dir():
            raise ResultsError(f"{root}: not a directory (give a results or run directory)")
        before = len(found)
        for run_dir in _walk_run_dirs(root):
            found.setdefault(run_dir.resolve(), None)
        if len(found) == before:
            raise ResultsError(
                f"{root}: no runs found (a run directory holds config.json and summary.json; "
                "create some with `fambench run` or `fambench bench`)"
            )
    return list(found)


def _walk_run_dirs(root: Path) -> list[Path]:
    if _is_run_dir(root):
        return [root]
    out: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        here = Path(dirpath)
        if here != root and _is_run_dir(here):
            out.append(here)
            dirnames[:] = []
    return out


def _is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "summary.json").is_file()
