"""Compare runs: load run directories, aggregate over seeds, bootstrap CIs, pairwise deltas.

Reads run directories through `fambench.rundir` (see results/README.md); names no optimizer:
the reference of the pairwise table is a parameter, and an optimizer that is an ablation of the
reference says so in its config (``ablation_of``). Every statistic over seeds is computed from *completed* runs;
diverged, interrupted and running runs are counted, never averaged, and never crash anything.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fambench.errors import ConfigError, ResultsError
from fambench.fileio import atomic_write, write_text
from fambench.rundir import (
    METRIC_COLUMNS,
    PROVENANCE_KEYS,
    STATUSES,
    SUMMARY_FIELDS,
    find_run_dirs,
    hparams_key,
    load_run,
    time_to_target,
)

log = logging.getLogger(__name__)

WER_STATS = ("final_dev_wer", "best_dev_wer", "test_wer")
# The numeric summary fields (target_wer is read from the config's side, not averaged).
SUMMARY_FLOATS = tuple(
    f
    for f in SUMMARY_FIELDS
    if f not in ("format_version", "run_id", "status", "steps", "target_wer", "message")
)
TABLE_FORMATS = ("table", "markdown", "csv", "parquet")
DEFAULT_BOOTSTRAP = 10_000
_MISSING = "—"
_METRIC_LABELS = {
    "final_dev_wer": "final dev WER",
    "best_dev_wer": "best dev WER",
    "test_wer": "test WER",
}


@dataclass(frozen=True)
class ResultSet:
    """Runs loaded from disk.

    runs: one row per run (config and summary flattened, plus ``run_dir`` and ``trace``, the path of the optimizer's trace file or "").
    metrics: every metric row of every run, with a ``run_id`` column.
    """

    runs: pd.DataFrame
    metrics: pd.DataFrame

    @property
    def presets(self) -> list[str]:
        """Presets present, in order of first appearance."""
        return list(dict.fromkeys(self.runs["preset"]))


# --------------------------------------------------------------------------- loading


def _float(value: object) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def load_run_dir(run_dir: str | os.PathLike[str]) -> tuple[dict, pd.DataFrame]:
    """One run: its flattened row (config + summary) and its metric rows.

    A run without summary.json yet is reported as ``running``. Summary values that are missing
    are filled from the metrics (final and best dev WER).
    """
    run = load_run(run_dir)
    config, metrics = run.config, run.metrics
    summary = run.summary.to_json() if run.summary is not None else {}
    row: dict = {
        "run_id": run.run_id,
        "preset": str(config.get("preset", "?")),
        "optimizer": str(config.get("optimizer", "?")),
        "ablation_of": config.get("ablation_of") or "",
        "hparams_key": str(
            config.get("hparams_key") or hparams_key(config.get("optimizer_hparams", {}))
        ),
        "seed": config.get("seed"),
        "status": run.status,
        "steps": _float(summary.get("steps")),
        "steps_budget": _float(config.get("steps")),
        "time_budget_s": _float(config.get("time_budget_s")),
        "message": str(summary.get("message") or ("no summary.json yet" if not summary else "")),
        "optimizer_hparams": json.dumps(config.get("optimizer_hparams", {}), sort_keys=True),
        "optimizer_overrides": json.dumps(config.get("optimizer_overrides", {}), sort_keys=True),
    }
    for key in SUMMARY_FLOATS:
        row[key] = _float(summary.get(key))
    target = _float(summary.get("target_wer"))
    row["target_wer"] = target if math.isfinite(target) else _float(config.get("target_wer"))
    evals = metrics["dev_wer"].dropna()
    if math.isnan(row["final_dev_wer"]) and len(evals):
        row["final_dev_wer"] = float(evals.iloc[-1])
    if math.isnan(row["best_dev_wer"]) and len(evals):
        row["best_dev_wer"] = float(evals.min())
    if math.isnan(row["steps"]) and metrics["step"].notna().any():
        row["steps"] = float(metrics["step"].max())
    provenance = config.get("provenance")
    provenance = provenance if isinstance(provenance, dict) else {}
    for key in PROVENANCE_KEYS:
        value = provenance.get(key)
        row[key] = "" if value is None else str(value)
    row["run_dir"] = str(run.path)
    trace = config.get("trace")
    row["trace"] = str(run.path / trace) if trace and (run.path / trace).is_file() else ""
    metrics.insert(0, "run_id", row["run_id"])
    return row, metrics


def load_results(paths: Iterable[str | os.PathLike[str]], preset: str | None = None) -> ResultSet:
    """Load every run under ``paths`` (optionally only one preset) into one ResultSet."""
    paths = list(paths)
    rows: list[dict] = []
    frames: list[pd.DataFrame] = []
    seen: dict[str, str] = {}
    for run_dir in find_run_dirs(paths):
        row, metrics = load_run_dir(run_dir)
        if row["run_id"] in seen:
            log.warning(
                "%s: run %s already loaded from %s; skipped",
                run_dir,
                row["run_id"],
                seen[row["run_id"]],
            )
            continue
        seen[row["run_id"]] = row["run_dir"]
        rows.append(row)
        frames.append(metrics)
    runs = pd.DataFrame(rows)
    if preset is not None:
        found = sorted(set(runs["preset"]))
        keep = runs["preset"] == preset
        if not keep.any():
            where = ", ".join(str(p) for p in paths)
            raise ResultsError(
                f"{where}: no runs of preset {preset!r} (presets found: {', '.join(found)})"
            )
        runs = runs[keep].reset_index(drop=True)
        kept = set(runs["run_id"])
        frames = [f for f in frames if len(f) and f["run_id"].iloc[0] in kept]
    frames = [f for f in frames if len(f)]
    if frames:
        metrics = pd.concat(frames, ignore_index=True)
    else:
        metrics = pd.DataFrame(columns=list(METRIC_COLUMNS), dtype=float)
        metrics.insert(0, "run_id", pd.Series(dtype=str))
    return ResultSet(runs=_sort_runs(runs), metrics=metrics)


def _sort_runs(runs: pd.DataFrame) -> pd.DataFrame:
    # By name, an ablation right after the optimizer it ablates.
    key = runs.apply(
        lambda r: (
            r["preset"],
            r["ablation_of"] or r["optimizer"],
            bool(r["ablation_of"]),
            r["optimizer"],
            r["hparams_key"],
            str(r["seed"]),
        ),
        axis=1,
    )
    return runs.iloc[sorted(range(len(runs)), key=lambda i: key.iloc[i])].reset_index(drop=True)


# --------------------------------------------------------------------------- statistics


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; (nan, nan) with fewer than two finite values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    return _percentiles(means, level)


def bootstrap_diff_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a) − mean(b), resampling a and b independently."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size < 2 or y.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    mx = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    my = y[rng.integers(0, y.size, size=(n_boot, y.size))].mean(axis=1)
    return _percentiles(mx - my, level)


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def _stats(values: Iterable[float], n_boot: int, seed: int) -> dict[str, float]:
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    low, high = bootstrap_ci(x, n_boot=n_boot, seed=seed)
    return {
        "mean": float(x.mean()) if x.size else math.nan,
        "std": float(x.std(ddof=1)) if x.size >= 2 else math.nan,
        "ci_low": low,
        "ci_high": high,
    }


def _mean(values: pd.Series) -> float:
    x = pd.to_numeric(values, errors="coerce").dropna()
    return float(x.mean()) if len(x) else math.nan


def aggregate(
    runs: pd.DataFrame,
    metrics: pd.DataFrame,
    target_wer: float | None = None,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (preset, optimizer, hparams_key) with statistics over completed seeds.

    Columns: counts (``n_runs``, ``n_seeds``, ``seeds``, ``n_<status>``); for final/best/test WER
    ``<m>_mean``, ``<m>_std``, ``<m>_ci_low``, ``<m>_ci_high`` (bootstrap 95% CI of the mean,
    NaN with one seed); ``target_wer`` (``target_wer`` argument, else the runs' own),
    ``reached`` (completed seeds that reached it), ``time_to_target_s`` (mean over those that
    did, interpolated between bracketing evaluations); ``train_s``, ``steps``, ``steps_per_s``,
    ``audio_s_per_s`` means and ``peak_memory_mb`` (max).
    """
    if runs.empty:
        raise ResultsError("no runs to aggregate")
    by_run = {rid: frame for rid, frame in metrics.groupby("run_id", sort=False)}
    rows: list[dict] = []
    for (preset, optimizer, hkey), group in runs.groupby(
        ["preset", "optimizer", "hparams_key"], sort=False
    ):
        done = group[group["status"] == "completed"]
        row: dict = {
            "preset": preset,
            "optimizer": optimizer,
            "hparams_key": hkey,
            "n_runs": len(group),
            "n_seeds": len(done),
            "seeds": ",".join(str(s) for s in done["seed"]),
        }
        for metric in WER_STATS:
            for name, value in _stats(done[metric], n_boot, seed).items():
                row[f"{metric}_{name}"] = value
        target = _group_target(group, target_wer)
        times = [
            _run_time_to_target(r, by_run.get(r["run_id"]), target) for _, r in done.iterrows()
        ]
        reached = [t for t in times if math.isfinite(t)]
        row["target_wer"] = target
        row["reached"] = len(reached)
        row["time_to_target_s"] = float(np.mean(reached)) if reached else math.nan
        row["time_to_target_std_s"] = (
            float(np.std(reached, ddof=1)) if len(reached) > 1 else math.nan
        )
        for column in ("train_s", "steps", "steps_per_s", "audio_s_per_s"):
            row[column] = _mean(done[column])
        peak = pd.to_numeric(done["peak_memory_mb"], errors="coerce").dropna()
        row["peak_memory_mb"] = float(peak.max()) if len(peak) else math.nan
        for status in STATUSES:
            row[f"n_{status}"] = int((group["status"] == status).sum())
        row["n_other"] = int((~group["status"].isin(STATUSES)).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _group_target(group: pd.DataFrame, target_wer: float | None) -> float:
    if target_wer is not None:
        return float(target_wer)
    own = pd.to_numeric(group["target_wer"], errors="coerce").dropna()
    return float(own.iloc[0]) if len(own) else math.nan


def _run_time_to_target(run: pd.Series, metrics: pd.DataFrame | None, target: float) -> float:
    if not math.isfinite(target):
        return math.nan
    if metrics is not None and metrics["dev_wer"].notna().any():
        return time_to_target(metrics, target)
    # No metric rows: the summary's own time is valid only for the target it was computed for.
    if run["target_wer"] == target:
        return float(run["time_to_target_s"])
    return math.nan


def pairwise(
    runs: pd.DataFrame,
    *,
    reference: str,
    metrics: Sequence[str] = ("final_dev_wer",),
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> pd.DataFrame:
    """ΔWER = reference − other, for the reference optimizer against every other one per preset.

    Against a baseline this asks "does the reference help?"; against an ablation of the
    reference (``ablation_of`` in its config, e.g. FAM without its frequency signal) it asks
    which part of the reference makes the difference. Completed runs
    only. Paired by seed (bootstrap over per-seed differences) when at least two seeds match,
    otherwise an unpaired bootstrap of the difference of means; ``pairing`` says which. Negative
    deltas favour the reference (lower WER).
    """
    rows: list[dict] = []
    done = runs[runs["status"] == "completed"]
    for preset, in_preset in done.groupby("preset", sort=False):
        groups = list(in_preset.groupby(["optimizer", "hparams_key"], sort=False))
        refs = [(k, g) for k, g in groups if k[0] == reference]
        others = [(k, g) for k, g in groups if k[0] != reference]
        for (_, ref_key), ref in refs:
            for (other_name, other_key), other in others:
                for metric in metrics:
                    row = _compare(ref, other, metric, n_boot, seed)
                    if row is None:
                        continue
                    ablates = set(other["ablation_of"]) == {reference}
                    kind = "ablation" if ablates else "baseline"
                    rows.append(
                        {
                            "preset": preset,
                            "reference": reference,
                            "reference_hparams": ref_key,
                            "other": other_name,
                            "other_hparams": other_key,
                            "kind": kind,
                            "metric": metric,
                            **row,
                        }
                    )
    columns = [
        "preset", "reference", "reference_hparams", "other", "other_hparams", "kind", "metric",
        "n_reference", "n_other", "n_pairs", "pairing", "delta", "ci_low", "ci_high", "verdict",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _per_seed(group: pd.DataFrame, metric: str) -> pd.Series:
    values = pd.to_numeric(group[metric], errors="coerce")
    frame = pd.DataFrame({"seed": group["seed"].astype(str), "v": values}).dropna()
    return frame.groupby("seed")["v"].mean()


def _compare(ref: pd.DataFrame, other: pd.DataFrame, metric: str, n_boot: int, seed: int):
    a, b = _per_seed(ref, metric), _per_seed(other, metric)
    if a.empty or b.empty:
        return None
    common = a.index.intersection(b.index)
    if len(common) >= 2 or (len(common) == 1 and len(a) == len(b) == 1):
        diffs = (a[common] - b[common]).to_numpy()
        delta = float(diffs.mean())
        low, high = bootstrap_ci(diffs, n_boot=n_boot, seed=seed)
        pairing, n_pairs = "paired", len(common)
    else:
        delta = float(a.mean() - b.mean())
        low, high = bootstrap_diff_ci(a.to_numpy(), b.to_numpy(), n_boot=n_boot, seed=seed)
        pairing, n_pairs = "unpaired", 0
    return {
        "n_reference": len(a),
        "n_other": len(b),
        "n_pairs": n_pairs,
        "pairing": pairing,
        "delta": delta,
        "ci_low": low,
        "ci_high": high,
        "verdict": _verdict(low, high),
    }


def _verdict(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "too few seeds"
    if high < 0:
        return "reference lower"
    if low > 0:
        return "reference higher"
    return "no clear difference"


# --------------------------------------------------------------------------- presentation


def fmt_num(value: object, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or "—" when missing."""
    x = _float(value)
    return f"{x:.{digits}f}" if math.isfinite(x) else _MISSING


def _fmt_ci(low: float, high: float, digits: int = 3) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return _MISSING
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _fmt_mean_std(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return _MISSING
    return f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f}"


def _fmt_seconds(value: float) -> str:
    return f"{value:.0f}" if math.isfinite(value) and value >= 100 else fmt_num(value, 1)


def status_text(row: pd.Series | dict) -> str:
    """``"3 completed · 1 diverged"`` from the ``n_<status>`` counts of an aggregate row."""
    parts = [f"{int(row[f'n_{s}'])} {s}" for s in STATUSES if int(row[f"n_{s}"])]
    if int(row.get("n_other", 0)):
        parts.append(f"{int(row['n_other'])} other")
    return " · ".join(parts) or "none"


def comparison_display(agg: pd.DataFrame) -> pd.DataFrame:
    """The aggregate table as human-readable strings (what the table/markdown formats show)."""
    targets = {float(t) for t in agg["target_wer"] if math.isfinite(t)}
    ttt_column = f"time to WER {next(iter(targets)):.2f}" if len(targets) == 1 else "time to target"
    rows = []
    for _, r in agg.iterrows():
        ttt = _MISSING
        if math.isfinite(r["target_wer"]):
            if r["reached"]:
                ttt = f"{_fmt_seconds(r['time_to_target_s'])} s"
            ttt += f" ({int(r['reached'])}/{int(r['n_seeds'])})"
            if len(targets) > 1:
                ttt += f" @ {r['target_wer']:.2f}"
        rows.append(
            {
                "preset": r["preset"],
                "optimizer": r["optimizer"],
                "hparams": r["hparams_key"],
                "seeds": str(int(r["n_seeds"])),
                "final dev WER": _fmt_mean_std(r["final_dev_wer_mean"], r["final_dev_wer_std"]),
                "95% CI": _fmt_ci(r["final_dev_wer_ci_low"], r["final_dev_wer_ci_high"]),
                "best dev WER": _fmt_mean_std(r["best_dev_wer_mean"], r["best_dev_wer_std"]),
                "best 95% CI": _fmt_ci(r["best_dev_wer_ci_low"], r["best_dev_wer_ci_high"]),
                "test WER": _fmt_mean_std(r["test_wer_mean"], r["test_wer_std"]),
                ttt_column: ttt,
                "train s": _fmt_seconds(r["train_s"]),
                "steps/s": fmt_num(r["steps_per_s"], 2),
                "peak MB": fmt_num(r["peak_memory_mb"], 0),
                "runs": status_text(r),
            }
        )
    frame = pd.DataFrame(rows)
    if frame["preset"].nunique() == 1:
        frame = frame.drop(columns=["preset"])
    return frame


def pairwise_display(pw: pd.DataFrame) -> pd.DataFrame:
    """The pairwise table as human-readable strings."""
    rows = []
    for _, r in pw.iterrows():
        pairing = (
            f"paired ({r['n_pairs']} seed{'' if r['n_pairs'] == 1 else 's'})"
            if r["pairing"] == "paired"
            else (f"unpaired ({r['n_reference']} vs {r['n_other']} seeds)")
        )
        verdict = str(r["verdict"]).replace("reference", str(r["reference"]))
        rows.append(
            {
                "preset": r["preset"],
                "comparison": f"{r['reference']} − {r['other']}",
                "against": r["kind"],
                "metric": _METRIC_LABELS.get(str(r["metric"]), str(r["metric"])),
                "ΔWER": f"{r['delta']:+.3f}" if math.isfinite(r["delta"]) else _MISSING,
                "95% CI": _fmt_ci(r["ci_low"], r["ci_high"]),
                "pairing": pairing,
                "verdict": verdict,
            }
        )
    columns = ["preset", "comparison", "against", "metric", "ΔWER", "95% CI", "pairing", "verdict"]
    frame = pd.DataFrame(rows, columns=columns)
    if frame["preset"].nunique() <= 1:
        frame = frame.drop(columns=["preset"])
    return frame


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped)."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([header, rule, *body]) + "\n"


def check_format(fmt: str) -> str:
    """The table format, lower-cased; ConfigError listing the valid ones otherwise."""
    name = fmt.strip().lower()
    if name not in TABLE_FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(TABLE_FORMATS)}")
    return name


def format_from_suffix(path: Path) -> str:
    """The table format a file name asks for (``.csv``, ``.parquet``, ``.md``; else table)."""
    return {".csv": "csv", ".parquet": "parquet", ".md": "markdown"}.get(
        path.suffix.lower(), "table"
    )


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str], fmt: str) -> Path:
    """Write ``frame`` as csv, parquet, markdown or plain text, atomically (temp, then rename).

    ``frame`` is the raw numeric table for csv/parquet and the display table otherwise.
    """
    path = Path(path)
    fmt = check_format(fmt)
    if fmt == "parquet":
        return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    if fmt == "csv":
        return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    text = to_markdown(frame) if fmt == "markdown" else frame.to_string(index=False) + "\n"
    return write_text(path, text)
