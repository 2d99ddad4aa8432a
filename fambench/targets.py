"""Workload targets: the dev WER a run must reach for its time to target to count.

AlgoPerf sets a workload's target from data, not by hand: the best tuned baseline is rerun with
several seeds and the target is the median of their final validation metric. The target so set
is data, ``targets/<preset>.json`` with how it was set: the package ships the project's, a
user's directory (see `fambench.hparams_dirs`) holds theirs and is read first; a preset with
neither keeps the hand-set ``Preset.target_wer``. This module imports no
torch: `compare` reads targets too.

A target is not part of a run's identity (it changes no trained number, only the time read off
the dev curve), so setting one after the runs never orphans them: `compare` reads the time to
the current target from each run's metric rows.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fambench.errors import ConfigError
from fambench.fileio import write_json
from fambench.hparams_dirs import SHIPPED_DIR, target_path

SHIPPED_TARGETS_DIR: Path | None = SHIPPED_DIR  # None: read no shipped targets
#: AlgoPerf's rule needs at least this many seeds of the baseline.
MIN_TARGET_SEEDS = 5


@dataclass(frozen=True)
class WorkloadTarget:
    """A preset's target dev WER and how it was set."""

    preset: str
    wer: float | None
    method: str
    source: str | None = None
    baseline: str | None = None  # the optimizer whose runs set it
    seeds: tuple[int, ...] = ()
    values: tuple[float, ...] = ()  # their final dev WER, in seed order
    cer_values: tuple[float, ...] = ()  # their final dev CER, in seed order
    # The baseline's seconds per run (training + evaluation) by thread count: threads ->
    # (median over its uncontended runs, how many runs).
    run_seconds: tuple[tuple[int, float, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "target_wer": self.wer,
            "method": self.method,
            "source": self.source,
            "baseline": self.baseline,
            "seeds": list(self.seeds),
            "final_dev_wer": list(self.values),
            "final_dev_cer": list(self.cer_values),
            "run_seconds": {
                str(threads): {"median": seconds, "runs": runs}
                for threads, seconds, runs in self.run_seconds
            },
        }


def load_target(
    preset: str,
    hand_set: float | None,
    path: Path | None = None,
    user_dir: Path | None = None,
) -> WorkloadTarget:
    """The recorded target of ``preset`` (``path``, else the user's directory's, else the
    shipped one), else the hand-set one; ConfigError if the file read is malformed."""
    if path is not None:
        files = [Path(path)]
    else:
        directories = (user_dir, SHIPPED_TARGETS_DIR)
        files = [target_path(d, preset) for d in directories if d is not None]
    path = next((f for f in files if f.is_file()), None)
    if path is None:
        return WorkloadTarget(preset, hand_set, "set by hand in the preset")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        wer = float(data["target_wer"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read the workload target ({exc})") from exc
    if data.get("preset", preset) != preset or not 0 < wer:
        raise ConfigError(f"{path}: not a target for preset {preset!r} (target_wer {wer})")
    return WorkloadTarget(
        preset=preset,
        wer=wer,
        method=str(data.get("method", "")),
        source=data.get("source"),
        baseline=data.get("baseline"),
        seeds=tuple(int(s) for s in data.get("seeds", ())),
        values=tuple(float(v) for v in data.get("final_dev_wer", ())),
        cer_values=tuple(float(v) for v in data.get("final_dev_cer", ())),
        run_seconds=tuple(
            (int(threads), float(timing["median"]), int(timing["runs"]))
            for threads, timing in data.get("run_seconds", {}).items()
        ),
    )


def median_target(
    preset: str,
    candidates: Mapping[str, Mapping[int, float]],
    source: str,
    *,
    min_seeds: int = MIN_TARGET_SEEDS,
) -> WorkloadTarget:
    """AlgoPerf's target: among the baselines (name → {seed: final dev WER}), the one with the
    lowest median final dev WER; the target is that median.

    ConfigError when no baseline has ``min_seeds`` finite values.
    """
    eligible = {
        name: {s: float(v) for s, v in runs.items() if math.isfinite(float(v))}
        for name, runs in candidates.items()
    }
    eligible = {name: runs for name, runs in eligible.items() if len(runs) >= min_seeds}
    if not eligible:
        counts = ", ".join(f"{name}: {len(runs)}" for name, runs in candidates.items()) or "none"
        raise ConfigError(
            f"setting the target of {preset} needs a baseline with {min_seeds} completed seeds "
            f"(completed seeds found: {counts})"
        )
    medians = {name: float(np.median(list(runs.values()))) for name, runs in eligible.items()}
    best = min(medians, key=lambda name: (medians[name], name))
    seeds = tuple(sorted(eligible[best]))
    ranked = ", ".join(f"{name} {medians[name]:.4f}" for name in sorted(medians, key=medians.get))
    return WorkloadTarget(
        preset=preset,
        wer=medians[best],
        method=(
            f"AlgoPerf: median final dev WER of the best tuned baseline ({best}) over "
            f"{len(seeds)} seeds; baselines' medians: {ranked}"
        ),
        source=source,
        baseline=best,
        seeds=seeds,
        values=tuple(eligible[best][s] for s in seeds),
    )


def record_target(target: WorkloadTarget, directory: Path) -> Path:
    """Write ``target`` as the preset's recorded target under ``directory``; returns the file."""
    return write_json(target_path(directory, target.preset), target.to_json())


def with_measurements(target: WorkloadTarget, rows: Sequence[Mapping[str, Any]]) -> WorkloadTarget:
    """``target`` with its baseline's final dev CER on the target's seeds and its seconds per
    run by thread count, from completed run rows (``optimizer``, ``seed``, ``status``,
    ``final_dev_cer``, ``threads``, ``train_s``, ``eval_s``, ``contended``, ``bf16_emulated``). A seed run at
    several thread counts gives its CER at the fewest threads, as `baseline_values` does."""
    done = [
        r for r in rows if r.get("optimizer") == target.baseline and r.get("status") == "completed"
    ]
    cer: dict[int, float] = {}
    for row in sorted(done, key=lambda r: -float(r.get("threads") or 0)):
        cer[int(row["seed"])] = float(row["final_dev_cer"])
    seconds: dict[int, list[float]] = {}
    for row in done:
        threads = row.get("threads")
        if row.get("contended") is True or row.get("bf16_emulated") is True:
            continue
        if threads is None or not math.isfinite(float(threads)):
            continue
        total = float(row["train_s"]) + float(row.get("eval_s") or 0.0)
        seconds.setdefault(int(threads), []).append(total)
    return dataclasses.replace(
        target,
        cer_values=tuple(cer[s] for s in target.seeds if s in cer),
        run_seconds=tuple(
            (threads, float(np.median(values)), len(values))
            for threads, values in sorted(seconds.items())
        ),
    )


def baseline_values(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, float]]:
    """{optimizer: {seed: final dev WER}} from completed run rows (``optimizer``, ``seed``,
    ``status``, ``final_dev_wer``, optionally ``threads``): a seed run at several thread
    counts (threads round differently) counts with its run at the fewest threads."""
    out: dict[str, dict[int, float]] = {}
    for row in sorted(rows, key=lambda r: -float(r.get("threads") or 0)):
        if row.get("status") == "completed" and row.get("seed") is not None:
            out.setdefault(str(row["optimizer"]), {})[int(row["seed"])] = float(
                row["final_dev_wer"]
            )
    return out


def target_from_runs(
    runs: pd.DataFrame, preset: str, reference: str, source: str
) -> WorkloadTarget:
    """The AlgoPerf target of ``preset`` from a runs table (fambench.analysis's ResultSet.runs):
    baselines are the optimizers run with their tuned values only (no values set on top) that
    are neither ``reference`` nor an ablation of it. ConfigError when a baseline ran with
    several hyperparameter settings (which one is tuned?) or none has enough seeds."""
    baselines = runs[
        (runs["optimizer"] != reference)
        & (runs["ablation_of"] != reference)
        & (runs["config"] == runs["optimizer"])
    ]
    if baselines["hparams_key"].groupby(baselines["optimizer"]).nunique().max() > 1:
        raise ConfigError(
            f"a baseline ran {preset} with several hyperparameter settings under {source}: "
            "point at the runs of the tuned one"
        )
    rows = baselines.to_dict("records")
    return with_measurements(median_target(preset, baseline_values(rows), source), rows)
