"""Run directories → a ResultSet: a typed record per run, and every run's metric rows.

Reads run directories through `fambench.rundir` (see results/README.md). Every statistic over
seeds is computed from *completed* runs; diverged, interrupted, running and stale runs are
counted, never averaged, and never crash anything.

Runs are comparable, and pooled as seeds of one configuration, when they share GROUP_KEYS:
preset, optimizer, hyperparameters and budget (steps and training seconds). A run directory
that cannot be read (a file that is not JSON, another format_version, a config.json without a
preset or optimizer) is skipped with a warning (ResultSet.skipped); one run id found twice, or
one seed found twice in a configuration, keeps the most finished copy, then the newest.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from fambench.analysis.labels import as_float, budget_label, config_label
from fambench.errors import ResultsError
from fambench.filelock import is_locked
from fambench.rundir import (
    METRIC_COLUMNS,
    PROVENANCE_KEYS,
    STATUSES,
    SUMMARY_FIELDS,
    LoadedRun,
    RunFiles,
    Summary,
    find_run_dirs,
    hparams_key,
    load_run,
)
from fambench.targets import load_target

log = logging.getLogger(__name__)

#: What makes runs comparable: runs equal on all of these are seeds of one configuration.
GROUP_KEYS = ("preset", "optimizer", "hparams_key", "steps_budget", "time_budget_s")
#: The statuses compare counts (``n_<status>``): the run directory's own, and ``stale`` for a
#: run that says it is running while no live process holds its lock (its owner is gone).
COMPARE_STATUSES = (*STATUSES, "stale")
STALE_MESSAGE = "its process is gone (run lock not held); rerun the same command to resume it"
# The numeric summary fields (target_wer is read from the config's side, not averaged).
SUMMARY_FLOATS = tuple(
    f
    for f in SUMMARY_FIELDS
    if f
    not in (
        "format_version",
        "run_id",
        "status",
        "steps",
        "target_wer",
        "precision",
        "contended",
        "rank_digests",
        "message",
    )
)
# Of two copies of one run (or seed), the more finished one is kept; then the newer summary.
# A status not named here (one a newer fambench writes, say) comes after all of these.
_KEEP_ORDER = {
    "completed": 0,
    "diverged": 1,
    "interrupted": 2,
    "failed": 3,
    "running": 4,
    "stale": 4,
}


@dataclass(frozen=True)
class RunRecord:
    """One run as the analysis sees it: its configuration, status and headline numbers.

    ``numbers`` holds the SUMMARY_FLOATS (NaN where missing; the final and best dev WER
    filled from the metric rows when the summary has none); ``steps_budget`` and
    ``time_budget_s`` are NaN when the run had no such budget; ``status`` is the run's own or
    ``stale``; ``trace`` is the optimizer's trace file when the run kept one.
    """

    run_id: str
    preset: str
    optimizer: str
    ablation_of: str  # "" when the optimizer is no ablation
    hparams_key: str
    optimizer_hparams: Mapping[str, Any]
    optimizer_overrides: Mapping[str, Any]
    seed: int | None
    steps_budget: float
    time_budget_s: float
    status: str
    message: str
    precision: str
    contended: bool | None
    # bf16 on a device without it natively (its products emulated): its times are not bf16's.
    bf16_emulated: bool
    steps: float
    target_wer: float
    numbers: Mapping[str, float]
    provenance: Mapping[str, str]  # PROVENANCE_KEYS, "" where unknown
    run_dir: Path
    trace: Path | None
    summary_mtime: float  # NaN without summary.json

    @property
    def config(self) -> str:
        """The configuration's label (see config_label)."""
        return config_label(self.optimizer, self.optimizer_overrides)

    def row(self) -> dict[str, Any]:
        """The run as one row of ResultSet.runs (nested values as sorted JSON text)."""
        row: dict[str, Any] = {
            "run_id": self.run_id,
            "preset": self.preset,
            "optimizer": self.optimizer,
            "ablation_of": self.ablation_of,
            "hparams_key": self.hparams_key,
            "seed": self.seed,
            "status": self.status,
            "steps": self.steps,
            "steps_budget": self.steps_budget,
            "time_budget_s": self.time_budget_s,
            "message": self.message,
            "optimizer_hparams": json.dumps(self.optimizer_hparams, sort_keys=True),
            "optimizer_overrides": json.dumps(self.optimizer_overrides, sort_keys=True),
            "contended": self.contended,
            "bf16_emulated": self.bf16_emulated,
            "config": self.config,
            "precision": self.precision,
            **self.numbers,
            "target_wer": self.target_wer,
        }
        # A provenance key that names a summary field too (threads) shows the provenance.
        row.update(self.provenance)
        row["run_dir"] = str(self.run_dir)
        row["trace"] = str(self.trace) if self.trace is not None else ""
        row["summary_mtime"] = self.summary_mtime
        return row


@dataclass(frozen=True)
class ResultSet:
    """Runs loaded from disk.

    records: one per run, sorted by preset, budget and name (an ablation right after the
    optimizer it ablates). metrics: every metric row of every run, with a ``run_id`` column.
    skipped: the run directories that could not be read, each with the reason.
    """

    records: tuple[RunRecord, ...]
    metrics: pd.DataFrame
    skipped: tuple[tuple[Path, str], ...] = ()
    # Per preset, the workload target recorded for it (fambench.targets) when loaded.
    workload_targets: Mapping[str, float] = field(default_factory=dict)

    @cached_property
    def runs(self) -> pd.DataFrame:
        """One row per record (RunRecord.row), in their order, with the preset's recorded
        workload target (NaN without one) as ``workload_target_wer``."""
        runs = pd.DataFrame([record.row() for record in self.records])
        if len(runs):
            runs["workload_target_wer"] = [
                self.workload_targets.get(preset, math.nan) for preset in runs["preset"]
            ]
        return runs

    @property
    def presets(self) -> list[str]:
        """Presets present, in order of first appearance."""
        return list(dict.fromkeys(record.preset for record in self.records))


# --------------------------------------------------------------------------- one run


def load_run_dir(run_dir: str | os.PathLike[str]) -> tuple[RunRecord, pd.DataFrame]:
    """One run: its record and its metric rows (with a ``run_id`` column).

    A run without summary.json yet is reported as ``running``; a ``running`` run whose lock no
    live process holds as ``stale`` (its owner died: rerunning the same command resumes it).
    ResultsError when the run cannot be read.
    """
    files = RunFiles(Path(run_dir))
    # Looked at before reading: a run that finishes meanwhile is not taken for a stale one.
    held = is_locked(files.lock)
    run = load_run(files.root)
    record = _record(run, files, stale=run.status == "running" and not held)
    metrics = run.metrics
    metrics.insert(0, "run_id", record.run_id)
    return record, metrics


def run_precision(run: LoadedRun) -> str:
    """The run's arithmetic; a summary that names none is an fp32 run's (the default)."""
    summary = run.summary
    return str((summary.precision if summary is not None else None) or "fp32")


def on_emulated_bf16(run: LoadedRun) -> bool:
    """A bf16 run on a device without native bf16 (its products emulated in fp32): its WER
    counts, its times are not bf16's."""
    return run_precision(run) == "bf16" and run.config.training.get("bf16_native") is False


def _record(run: LoadedRun, files: RunFiles, *, stale: bool) -> RunRecord:
    config, summary = run.config, run.summary
    status = "stale" if stale else run.status
    if stale:
        message = STALE_MESSAGE
    else:
        message = summary.message if summary is not None else "no summary.json yet"
    trace = config.trace
    numbers, steps, target = _numbers(summary, run.metrics, as_float(config.target_wer))
    precision = run_precision(run)
    return RunRecord(
        run_id=run.run_id,
        preset=config.preset,
        optimizer=config.optimizer,
        ablation_of=config.ablation_of or "",
        hparams_key=config.hparams_key or hparams_key(config.optimizer_hparams),
        optimizer_hparams=config.optimizer_hparams,
        optimizer_overrides=config.optimizer_overrides,
        seed=config.seed,
        steps_budget=as_float(config.steps),
        time_budget_s=as_float(config.time_budget_s),
        status=status,
        message=message,
        precision=precision,
        contended=_contended(summary),
        bf16_emulated=on_emulated_bf16(run),
        steps=steps,
        target_wer=target,
        numbers=numbers,
        provenance={
            k: "" if config.provenance.get(k) is None else str(config.provenance[k])
            for k in PROVENANCE_KEYS
        },
        run_dir=run.path,
        trace=run.path / trace if trace and (run.path / trace).is_file() else None,
        summary_mtime=_mtime(files.summary) if summary is not None else math.nan,
    )


def _contended(summary: Summary | None) -> bool | None:
    value = summary.contended if summary is not None else None
    return value if isinstance(value, bool) else None


def _numbers(
    summary: Summary | None, metrics: pd.DataFrame, config_target: float
) -> tuple[dict[str, float], float, float]:
    """(SUMMARY_FLOATS, steps, target WER): the summary's, else what the metric rows tell."""
    values = summary.to_json() if summary is not None else {}
    numbers = {key: as_float(values.get(key)) for key in SUMMARY_FLOATS}
    target = as_float(values.get("target_wer"))
    steps = as_float(values.get("steps"))
    evals = metrics["dev_wer"].dropna()
    if math.isnan(numbers["final_dev_wer"]) and len(evals):
        numbers["final_dev_wer"] = float(evals.iloc[-1])
    if math.isnan(numbers["best_dev_wer"]) and len(evals):
        numbers["best_dev_wer"] = float(evals.min())
    if math.isnan(steps) and metrics["step"].notna().any():
        steps = float(metrics["step"].max())
    return numbers, steps, target if math.isfinite(target) else config_target


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return math.nan


# --------------------------------------------------------------------------- many runs

Loaded = list[tuple[RunRecord, pd.DataFrame]]


def load_results(
    paths: Iterable[str | os.PathLike[str]],
    preset: str | None = None,
    hparams_dir: Path | None = None,
) -> ResultSet:
    """Load every run under ``paths`` (optionally only one preset) into one ResultSet, with
    each preset's recorded workload target (``hparams_dir``'s, else the package's).

    A run directory that cannot be read (invalid JSON, another format_version, no config.json)
    is skipped with a warning and listed in ``skipped``; ResultsError only when none can be read.
    Duplicates (one run id in two directories, or one seed twice in a configuration) keep one
    copy, with a warning: the most finished (completed, diverged, interrupted, running or
    stale), then the one whose summary.json is newest.
    """
    paths = list(paths)
    loaded: Loaded = []
    skipped: list[tuple[Path, str]] = []
    for run_dir in find_run_dirs(paths):
        try:
            loaded.append(load_run_dir(run_dir))
        except ResultsError as exc:
            skipped.append((run_dir, _reason(run_dir, exc)))
    if not loaded:
        raise _nothing_readable(paths, skipped)
    for run_dir, reason in skipped:
        log.warning("skipped run %s: %s", run_dir, reason)
    if preset is not None:
        loaded = _only_preset(loaded, preset, paths)
    _check_one_precision(loaded, paths)
    loaded = _keep_one(loaded, lambda r: r.run_id, lambda r: f"run {r.run_id}")
    loaded = _keep_one(loaded, _seed_key, _seed_label)
    frames = [f for _, f in loaded if len(f)]
    if frames:
        metrics = pd.concat(frames, ignore_index=True)
    else:
        metrics = pd.DataFrame(columns=list(METRIC_COLUMNS), dtype=float)
        metrics.insert(0, "run_id", pd.Series(dtype=str))
    records = sorted((record for record, _ in loaded), key=_sort_key)
    presets = dict.fromkeys(record.preset for record in records)
    targets = {p: load_target(p, None, user_dir=hparams_dir).wer for p in presets}
    return ResultSet(
        records=tuple(records),
        metrics=metrics,
        skipped=tuple(skipped),
        workload_targets={p: float(wer) for p, wer in targets.items() if wer is not None},
    )


def _reason(run_dir: Path, exc: ResultsError) -> str:
    # The error without the run directory it starts with: the warning names that once.
    text = str(exc)
    for prefix in (f"{run_dir}: ", f"{run_dir}{os.sep}"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _nothing_readable(paths: list, skipped: list[tuple[Path, str]]) -> ResultsError:
    where = ", ".join(str(p) for p in paths)
    listed = "; ".join(f"{run_dir}: {reason}" for run_dir, reason in skipped[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return ResultsError(f"{where}: no readable run ({len(skipped)} skipped): {listed}{more}")


def _check_one_precision(loaded: Loaded, paths: list) -> None:
    """A workload's runs must share their arithmetic: an fp32 and a bf16 run of one
    configuration are not seeds of one result (a preset's default precision follows the
    machine, so a study spread over machines could mix them unseen)."""
    for preset in dict.fromkeys(record.preset for record, _ in loaded):
        counts = Counter(record.precision for record, _ in loaded if record.preset == preset)
        if len(counts) > 1:
            where = ", ".join(str(p) for p in paths)
            found = " and ".join(f"{p} ({n} runs)" for p, n in sorted(counts.items()))
            raise ResultsError(
                f"{where}: the runs of preset {preset!r} were trained in {found}: compare one "
                "precision at a time (keep them in separate directories, or pass --precision "
                "to every run of a study)"
            )


def _only_preset(loaded: Loaded, preset: str, paths: list) -> Loaded:
    kept = [item for item in loaded if item[0].preset == preset]
    if not kept:
        found = ", ".join(sorted({record.preset for record, _ in loaded}))
        where = ", ".join(str(p) for p in paths)
        raise ResultsError(f"{where}: no runs of preset {preset!r} (presets found: {found})")
    return kept


def preference(status: str, summary_mtime: float) -> tuple[int, float]:
    """Sort key of copies of one run or seed: the most finished first, then the newest."""
    rank = _KEEP_ORDER.get(status, len(_KEEP_ORDER))
    return (rank, -summary_mtime if math.isfinite(summary_mtime) else math.inf)


def _keep_one(
    loaded: Loaded, key: Callable[[RunRecord], object], label: Callable[[RunRecord], str]
) -> Loaded:
    """One run of those sharing ``key`` (see preference), with a warning per run dropped."""
    by_key: dict[object, list[int]] = {}
    for i, (record, _) in enumerate(loaded):
        by_key.setdefault(key(record), []).append(i)
    dropped: set[int] = set()
    for indices in by_key.values():
        # sorted is stable: copies alike keep the order the walk found them in
        ranked = sorted(indices, key=lambda i: _preference_of(loaded[i][0]))
        kept = loaded[ranked[0]][0]
        for i in ranked[1:]:
            other = loaded[i][0]
            dropped.add(i)
            log.warning(
                "%s found twice: kept %s (%s), ignored %s (%s); the more finished copy is kept, "
                "then the one with the newer summary.json",
                label(kept), kept.run_dir, kept.status, other.run_dir, other.status,
            )  # fmt: skip
    return [item for i, item in enumerate(loaded) if i not in dropped]


def _preference_of(record: RunRecord) -> tuple[int, float]:
    return preference(record.status, record.summary_mtime)


def _key_part(value: float) -> float | None:
    return None if math.isnan(value) else value


def _seed_key(record: RunRecord) -> object:
    if record.seed is None:
        return ("run", str(record.run_dir))  # no seed to share
    budget = (_key_part(record.steps_budget), _key_part(record.time_budget_s))
    return (record.preset, record.optimizer, record.hparams_key, *budget, str(record.seed))


def _seed_label(record: RunRecord) -> str:
    budget = budget_label(record.steps_budget, record.time_budget_s)
    return (
        f"seed {record.seed} of {record.preset} {record.optimizer} [{record.hparams_key}] "
        f"at {budget}"
    )


def _number_key(value: float) -> tuple[int, float]:
    return (0, value) if math.isfinite(value) else (1, 0.0)


def _sort_key(record: RunRecord) -> tuple:
    # By budget, then by name with an ablation right after the optimizer it ablates.
    seed = (0, float(record.seed), "") if record.seed is not None else (1, 0.0, "None")
    return (
        record.preset,
        _number_key(record.steps_budget),
        _number_key(record.time_budget_s),
        record.ablation_of or record.optimizer,
        bool(record.ablation_of),
        record.optimizer,
        record.hparams_key,
        seed,
    )
