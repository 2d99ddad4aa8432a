"""Compare runs: load run directories, aggregate over seeds, t intervals, pairwise deltas.

Reads run directories through `fambench.rundir` (see results/README.md); names no optimizer:
the reference of the pairwise table is a parameter, and an optimizer that is an ablation of the
reference says so in its config (``ablation_of``). Every statistic over seeds is computed from *completed* runs;
diverged, interrupted, running and stale runs are counted, never averaged, and never crash anything.

Runs are comparable, and pooled as seeds of one configuration, when they share GROUP_KEYS:
preset, optimizer, hyperparameters and budget (steps and training seconds). A run directory
that cannot be read is skipped with a warning (ResultSet.skipped); one run id found twice, or
one seed found twice in a configuration, keeps the most finished copy, then the newest.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from fambench.errors import ConfigError, ResultsError
from fambench.fileio import atomic_write, write_text
from fambench.rundir import (
    METRIC_COLUMNS,
    PROVENANCE_KEYS,
    STATUSES,
    SUMMARY_FIELDS,
    RunFiles,
    find_run_dirs,
    hparams_key,
    load_run,
    lock_is_held,
    time_to_target,
)
from fambench.targets import load_target

log = logging.getLogger(__name__)

WER_STATS = ("final_dev_wer", "best_dev_wer", "test_wer")
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
#: The statistics read off wall-clock time: left out for runs that were contended.
TIME_STATS = ("train_s", "steps_per_s", "audio_s_per_s")
#: The statuses compare counts (``n_<status>``): the run directory's own, and ``stale`` for a
#: run that says it is running while no live process holds its lock (its owner is gone).
COMPARE_STATUSES = (*STATUSES, "stale")
STALE_MESSAGE = "its process is gone (run lock not held); rerun the same command to resume it"
#: What makes runs comparable: runs equal on all of these are seeds of one configuration.
GROUP_KEYS = ("preset", "optimizer", "hparams_key", "steps_budget", "time_budget_s")
BUDGET_KEYS = ("steps_budget", "time_budget_s")
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

    runs: one row per run (config and summary flattened, plus ``run_dir``, ``trace``, the path
    of the optimizer's trace file or "", and ``summary_mtime``, NaN without summary.json).
    metrics: every metric row of every run, with a ``run_id`` column.
    skipped: the run directories that could not be read, each with the reason.
    """

    runs: pd.DataFrame
    metrics: pd.DataFrame
    skipped: tuple[tuple[Path, str], ...] = ()

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

    A run without summary.json yet is reported as ``running``; a ``running`` run whose lock no
    live process holds as ``stale`` (its owner died: rerunning the same command resumes it).
    Summary values that are missing are filled from the metrics (final and best dev WER).
    ResultsError when the run cannot be read.
    """
    files = RunFiles(Path(run_dir))
    # Looked at before reading: a run that finishes meanwhile is not taken for a stale one.
    held = lock_is_held(files.lock)
    run = load_run(files.root)
    config, metrics = run.config, run.metrics
    summary = run.summary.to_json() if run.summary is not None else {}
    status = "stale" if run.status == "running" and not held else run.status
    message = str(summary.get("message") or ("no summary.json yet" if not summary else ""))
    row: dict = {
        "run_id": run.run_id,
        "preset": str(config.get("preset", "?")),
        "optimizer": str(config.get("optimizer", "?")),
        "ablation_of": config.get("ablation_of") or "",
        "hparams_key": str(
            config.get("hparams_key") or hparams_key(config.get("optimizer_hparams", {}))
        ),
        "seed": config.get("seed"),
        "status": status,
        "steps": _float(summary.get("steps")),
        "steps_budget": _float(config.get("steps")),
        "time_budget_s": _float(config.get("time_budget_s")),
        "message": STALE_MESSAGE if status == "stale" else message,
        "optimizer_hparams": json.dumps(config.get("optimizer_hparams", {}), sort_keys=True),
        "optimizer_overrides": json.dumps(config.get("optimizer_overrides", {}), sort_keys=True),
        "contended": summary.get("contended")
        if isinstance(summary.get("contended"), bool)
        else None,
    }
    row["config"] = config_label(row["optimizer"], config.get("optimizer_overrides"))
    # Runs recorded before precision was a setting trained in fp32.
    row["precision"] = str(summary.get("precision") or "fp32")
    _add_summary_values(row, summary, config, metrics)
    provenance = config.get("provenance")
    provenance = provenance if isinstance(provenance, dict) else {}
    for key in PROVENANCE_KEYS:
        value = provenance.get(key)
        row[key] = "" if value is None else str(value)
    row["run_dir"] = str(run.path)
    trace = config.get("trace")
    row["trace"] = str(run.path / trace) if trace and (run.path / trace).is_file() else ""
    row["summary_mtime"] = _mtime(files.summary) if run.summary is not None else math.nan
    metrics.insert(0, "run_id", row["run_id"])
    return row, metrics


def _add_summary_values(row: dict, summary: dict, config: dict, metrics: pd.DataFrame) -> None:
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


def config_label(optimizer: str, overrides: object) -> str:
    """An optimizer and the values the user set beyond the tuned ones: ``fam``,
    ``fam[sampling=random]``. One label names one configuration on every workload (the tuned
    values under it differ per workload)."""
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides)
        except ValueError:
            overrides = {}
    if not isinstance(overrides, dict) or not overrides:
        return str(optimizer)
    return f"{optimizer}[{hparams_key(overrides)}]"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return math.nan


Loaded = list[tuple[dict, pd.DataFrame]]


def load_results(paths: Iterable[str | os.PathLike[str]], preset: str | None = None) -> ResultSet:
    """Load every run under ``paths`` (optionally only one preset) into one ResultSet.

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
    loaded = _keep_one(loaded, lambda row: row["run_id"], lambda row: f"run {row['run_id']}")
    loaded = _keep_one(loaded, _seed_key, _seed_label)
    frames = [f for _, f in loaded if len(f)]
    if frames:
        metrics = pd.concat(frames, ignore_index=True)
    else:
        metrics = pd.DataFrame(columns=list(METRIC_COLUMNS), dtype=float)
        metrics.insert(0, "run_id", pd.Series(dtype=str))
    runs = _sort_runs(pd.DataFrame([row for row, _ in loaded]))
    return ResultSet(runs=runs, metrics=metrics, skipped=tuple(skipped))


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
    for preset in dict.fromkeys(row["preset"] for row, _ in loaded):
        counts = Counter(row["precision"] for row, _ in loaded if row["preset"] == preset)
        if len(counts) > 1:
            where = ", ".join(str(p) for p in paths)
            found = " and ".join(f"{p} ({n} runs)" for p, n in sorted(counts.items()))
            raise ResultsError(
                f"{where}: the runs of preset {preset!r} were trained in {found}: compare one "
                "precision at a time (keep them in separate directories, or pass --precision "
                "to every run of a study)"
            )


def _only_preset(loaded: Loaded, preset: str, paths: list) -> Loaded:
    kept = [item for item in loaded if item[0]["preset"] == preset]
    if not kept:
        found = ", ".join(sorted({row["preset"] for row, _ in loaded}))
        where = ", ".join(str(p) for p in paths)
        raise ResultsError(f"{where}: no runs of preset {preset!r} (presets found: {found})")
    return kept


def _preference(row: dict | pd.Series) -> tuple[int, float]:
    """Sort key of copies of one run or seed: the most finished first, then the newest."""
    mtime = _float(row.get("summary_mtime"))
    rank = _KEEP_ORDER.get(str(row["status"]), len(_KEEP_ORDER))
    return (rank, -mtime if math.isfinite(mtime) else math.inf)


def _keep_one(
    loaded: Loaded, key: Callable[[dict], object], label: Callable[[dict], str]
) -> Loaded:
    """One run of those sharing ``key`` (see _preference), with a warning per run dropped."""
    by_key: dict[object, list[int]] = {}
    for i, (row, _) in enumerate(loaded):
        by_key.setdefault(key(row), []).append(i)
    dropped: set[int] = set()
    for indices in by_key.values():
        ranked = sorted(indices, key=lambda i: _preference(loaded[i][0]))  # stable: walk order
        kept = loaded[ranked[0]][0]
        for i in ranked[1:]:
            other = loaded[i][0]
            dropped.add(i)
            log.warning(
                "%s found twice: kept %s (%s), ignored %s (%s); the more finished copy is kept, "
                "then the one with the newer summary.json",
                label(kept), kept["run_dir"], kept["status"], other["run_dir"], other["status"],
            )  # fmt: skip
    return [item for i, item in enumerate(loaded) if i not in dropped]


def _key_part(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


def _seed_key(row: dict) -> object:
    if row["seed"] is None:
        return ("run", row["run_dir"])  # no seed to share
    return (*(_key_part(row[k]) for k in GROUP_KEYS), str(row["seed"]))


def _seed_label(row: dict) -> str:
    budget = budget_label(row["steps_budget"], row["time_budget_s"])
    return (
        f"seed {row['seed']} of {row['preset']} {row['optimizer']} [{row['hparams_key']}] "
        f"at {budget}"
    )


def _number_key(value: object) -> tuple[int, float]:
    x = _float(value)
    return (0, x) if math.isfinite(x) else (1, 0.0)


def _seed_sort_key(value: object) -> tuple[int, float, str]:
    x = _float(value)
    return (0, x, "") if math.isfinite(x) else (1, 0.0, str(value))


def _sort_runs(runs: pd.DataFrame) -> pd.DataFrame:
    # By budget, then by name with an ablation right after the optimizer it ablates.
    key = runs.apply(
        lambda r: (
            r["preset"],
            _number_key(r["steps_budget"]),
            _number_key(r["time_budget_s"]),
            r["ablation_of"] or r["optimizer"],
            bool(r["ablation_of"]),
            r["optimizer"],
            r["hparams_key"],
            _seed_sort_key(r["seed"]),
        ),
        axis=1,
    )
    return runs.iloc[sorted(range(len(runs)), key=lambda i: key.iloc[i])].reset_index(drop=True)


# --------------------------------------------------------------------------- statistics

#: How an interval is computed: ``t`` (the default) is Student's t, a paired t-interval for
#: per-seed differences and Welch's interval for two independent groups; ``bootstrap`` is a
#: percentile bootstrap, sound from about ten seeds up (with three, its interval is about the
#: range of the data and far too narrow).
CI_METHODS = ("t", "bootstrap")
DEFAULT_CI_METHOD = "t"
#: A comparison gets a verdict only from this many seeds up (pairs; else the smaller group).
MIN_VERDICT_N = 5
#: The power calculation behind ``seeds_needed``: a two-sided test at ALPHA with power POWER.
ALPHA = 0.05
POWER = 0.8


def check_ci_method(method: str) -> str:
    """The interval method, lower-cased; ConfigError listing the valid ones otherwise."""
    name = str(method).strip().lower()
    if name not in CI_METHODS:
        raise ConfigError(f"unknown CI method {method!r}; choose one of {', '.join(CI_METHODS)}")
    return name


def _finite(values: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of the finite values: mean ± t_{(1+level)/2, n−1}·sd/√n.

    (nan, nan) with fewer than two finite values; (mean, mean) when they are all equal.
    """
    x = _finite(values)
    if x.size < 2:
        return (math.nan, math.nan)
    mean = float(x.mean())
    half = float(stats.t.ppf((1.0 + level) / 2.0, x.size - 1)) * float(x.std(ddof=1))
    half /= math.sqrt(x.size)
    return (mean - half, mean + half)


def paired_t_interval(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """Paired-t interval of mean(a − b): `t_interval` of the per-pair differences.

    ``a`` and ``b`` are aligned (element i of both comes from seed i); a pair with a missing
    value is left out. ValueError when their lengths differ.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired values need equal lengths, got {x.size} and {y.size}")
    return t_interval(x - y, level)


def welch_interval(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """Welch's interval of mean(a) − mean(b) for independent groups (unequal variances,
    Welch–Satterthwaite degrees of freedom), as scipy's
    ``ttest_ind(a, b, equal_var=False).confidence_interval(level)``.

    (nan, nan) unless both have two finite values; (Δ, Δ) when neither varies.
    """
    x, y = _finite(a), _finite(b)
    if x.size < 2 or y.size < 2:
        return (math.nan, math.nan)
    delta = float(x.mean() - y.mean())
    va, vb = float(x.var(ddof=1)) / x.size, float(y.var(ddof=1)) / y.size
    if va + vb == 0:
        return (delta, delta)
    df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    half = float(stats.t.ppf((1.0 + level) / 2.0, df)) * math.sqrt(va + vb)
    return (delta - half, delta + half)


def seeds_needed_paired(
    differences: Sequence[float] | np.ndarray, *, alpha: float = ALPHA, power: float = POWER
) -> float:
    """About how many pairs (seeds run with both optimizers) resolve a difference this size.

    A standard power calculation taking the observed mean and standard deviation of the
    per-seed differences as the truth: the smallest n ≥ 2 with
    n ≥ ((t_{1−α/2, n−1} + t_{power, n−1}) · sd / |mean|)², i.e. a paired t-test at two-sided
    ``alpha`` would find the difference with probability about ``power``. The search starts at
    the normal approximation ((z_{1−α/2} + z_{power}) · sd / |mean|)², which never exceeds it
    and misses a seed or more at small n. NaN with fewer than two finite values, or when the
    mean or the standard deviation is 0.
    """
    x = _finite(differences)
    if x.size < 2:
        return math.nan
    mean, sd = abs(float(x.mean())), float(x.std(ddof=1))
    if mean == 0 or sd == 0:
        return math.nan
    return _power_n((sd / mean) ** 2, lambda n: n - 1, alpha, power)


def seeds_needed_unpaired(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
) -> float:
    """About how many seeds per optimizer resolve a difference of means this size, for two
    independent groups: the smallest n ≥ 2 with
    n ≥ 2 · ((t_{1−α/2, 2n−2} + t_{power, 2n−2}) · pooled_sd / |Δ|)², starting from the normal
    approximation 2 · ((z_{1−α/2} + z_{power}) · pooled_sd / |Δ|)² (see seeds_needed_paired).
    NaN unless both have two finite values, or when Δ or the pooled sd is 0.
    """
    x, y = _finite(a), _finite(b)
    if x.size < 2 or y.size < 2:
        return math.nan
    delta = abs(float(x.mean() - y.mean()))
    pooled = (x.size - 1) * float(x.var(ddof=1)) + (y.size - 1) * float(y.var(ddof=1))
    pooled = math.sqrt(pooled / (x.size + y.size - 2))
    if delta == 0 or pooled == 0:
        return math.nan
    return _power_n(2.0 * (pooled / delta) ** 2, lambda n: 2 * n - 2, alpha, power)


def _power_n(k: float, df: Callable[[int], int], alpha: float, power: float) -> float:
    """The smallest n ≥ 2 with n ≥ k · (t_{1−α/2, df(n)} + t_{power, df(n)})²."""
    z = float(stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power))
    start = k * z * z
    if not math.isfinite(start):
        return math.inf
    n = max(2, math.ceil(start))  # t quantiles exceed z ones: the answer is never smaller

    def t_sum(n: int) -> float:
        return float(stats.t.ppf(1.0 - alpha / 2.0, df(n)) + stats.t.ppf(power, df(n)))

    while n < k * t_sum(n) ** 2:  # the right side falls as n grows
        n += 1
    return float(n)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; (nan, nan) with fewer than two finite values.

    Only sound from about ten values up: see CI_METHODS.
    """
    x = _finite(values)
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
    x, y = _finite(a), _finite(b)
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


def mean_interval(
    values: Sequence[float] | np.ndarray,
    method: str = DEFAULT_CI_METHOD,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float]:
    """The 95% interval of the mean by ``method`` (CI_METHODS): t_interval or bootstrap_ci."""
    if check_ci_method(method) == "bootstrap":
        return bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return t_interval(values)


def _stats(values: Iterable[float], method: str, n_boot: int, seed: int) -> dict:
    x = _finite(list(values))
    low, high = mean_interval(x, method, n_boot=n_boot, seed=seed)
    return {
        "mean": float(x.mean()) if x.size else math.nan,
        "std": float(x.std(ddof=1)) if x.size >= 2 else math.nan,
        "ci_low": low,
        "ci_high": high,
        "n": int(x.size),
        "ci_method": method,
    }


def _mean(values: pd.Series) -> float:
    x = pd.to_numeric(values, errors="coerce").dropna()
    return float(x.mean()) if len(x) else math.nan


def aggregate(
    runs: pd.DataFrame,
    metrics: pd.DataFrame,
    target_wer: float | None = None,
    *,
    method: str = DEFAULT_CI_METHOD,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    include_contended: bool = False,
) -> pd.DataFrame:
    """One row per configuration (GROUP_KEYS) with statistics over its completed seeds.

    Columns: GROUP_KEYS; counts (``n_runs``, ``n_seeds`` distinct completed seeds, ``seeds``,
    ``n_<status>`` for COMPARE_STATUSES, ``n_other``); for final/best/test WER
    ``<m>_mean``, ``<m>_std``, ``<m>_ci_low``, ``<m>_ci_high`` (95% interval of the mean by
    ``method``: Student t by default, see CI_METHODS; NaN with one seed), ``<m>_n`` (the seeds
    with a value) and ``<m>_ci_method``; ``target_wer`` (``target_wer`` argument, else the runs' own),
    ``reached`` (completed seeds that reached it), ``time_to_target_s`` (mean over those that
    did, interpolated between bracketing evaluations); ``time_to_target_median_s`` (median
    over the timed seeds, a seed that missed the target counting as infinitely slow: AlgoPerf's
    per-workload time); ``train_s``, ``steps``, ``steps_per_s``, ``audio_s_per_s`` means and
    ``peak_memory_mb`` (max); ``config`` (see config_label). The target is ``target_wer``,
    else the preset's recorded target (fambench.targets), else the runs' own.

    Honest wall-clock: a run whose summary says it was contended (other processes took the
    cores it needed, see fambench.machine) is left out of every time statistic unless
    ``include_contended``; ``n_contended`` counts them and ``n_timed`` the seeds the times rest
    on. WER statistics use every completed seed. A seed completed twice in one configuration
    counts once (the copy load_results would keep).
    """
    if runs.empty:
        raise ResultsError("no runs to aggregate")
    method = check_ci_method(method)
    by_run = {rid: frame for rid, frame in metrics.groupby("run_id", sort=False)}
    rows: list[dict] = []
    for keys, group in runs.groupby(list(GROUP_KEYS), sort=False, dropna=False):
        row = dict(zip(GROUP_KEYS, keys, strict=True))
        row["config"] = str(group["config"].iloc[0])
        row.update(
            _group_stats(group, by_run, target_wer, (method, n_boot, seed), include_contended)
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _group_stats(
    group: pd.DataFrame,
    by_run: dict[str, pd.DataFrame],
    target_wer: float | None,
    interval: tuple[str, int, int],
    include_contended: bool = False,
) -> dict:
    done = one_per_seed(group[group["status"] == "completed"])
    contended = done["contended"].map(lambda v: v is True).to_numpy(dtype=bool)
    timed = done if include_contended else done[~contended]
    row: dict = {
        "n_runs": len(group),
        "n_seeds": len(done),
        "seeds": ",".join(str(s) for s in done["seed"]),
    }
    for metric in WER_STATS:
        for name, value in _stats(done[metric], *interval).items():
            row[f"{metric}_{name}"] = value
    target = group_target(group, target_wer)
    reached_by = {
        r["run_id"]: run_time_to_target(r, by_run.get(r["run_id"]), target)
        for _, r in done.iterrows()
    }
    times = [reached_by[r] for r in timed["run_id"]]
    reached = [t for t in times if math.isfinite(t)]
    row["target_wer"] = target
    row["reached"] = sum(math.isfinite(t) for t in reached_by.values())
    row["n_contended"] = int(contended.sum())
    row["n_timed"] = len(timed)
    row["time_to_target_s"] = float(np.mean(reached)) if reached else math.nan
    row["time_to_target_std_s"] = float(np.std(reached, ddof=1)) if len(reached) > 1 else math.nan
    row["time_to_target_median_s"] = (
        float(np.median([t if math.isfinite(t) else math.inf for t in times]))
        if times and math.isfinite(target)
        else math.nan
    )
    row["steps"] = _mean(done["steps"])
    for column in TIME_STATS:
        row[column] = _mean(timed[column])
    peak = pd.to_numeric(done["peak_memory_mb"], errors="coerce").dropna()
    row["peak_memory_mb"] = float(peak.max()) if len(peak) else math.nan
    for status in COMPARE_STATUSES:
        row[f"n_{status}"] = int((group["status"] == status).sum())
    row["n_other"] = int((~group["status"].isin(COMPARE_STATUSES)).sum())
    return row


def one_per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per seed (see _preference), in the given order; runs without a seed all stay."""
    seeds = runs["seed"].astype(str).to_numpy()
    missing = runs["seed"].isna().to_numpy()
    keep = np.zeros(len(runs), dtype=bool)
    seen: set[str] = set()
    for i in sorted(range(len(runs)), key=lambda i: _preference(runs.iloc[i])):
        if missing[i] or seeds[i] not in seen:
            keep[i] = True
            seen.add(seeds[i])
    return runs[keep]


def group_target(group: pd.DataFrame, target_wer: float | None) -> float:
    if target_wer is not None:
        return float(target_wer)
    recorded = load_target(str(group["preset"].iloc[0]), None)
    if recorded.wer is not None:
        return float(recorded.wer)
    own = pd.to_numeric(group["target_wer"], errors="coerce").dropna()
    return float(own.iloc[0]) if len(own) else math.nan


def run_time_to_target(run: pd.Series, metrics: pd.DataFrame | None, target: float) -> float:
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
    method: str = DEFAULT_CI_METHOD,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> pd.DataFrame:
    """ΔWER = reference − other, for the reference optimizer against every other one per preset
    and budget (runs of different budgets are never compared).

    Against a baseline this asks "does the reference help?"; against an ablation of the
    reference (``ablation_of`` in its config, e.g. FAM without its frequency signal) it asks
    which part of the reference makes the difference. Completed runs only. Paired by seed
    when at least two seeds match (a paired t-interval of the per-seed differences), otherwise
    unpaired (Welch's interval of the difference of means); ``pairing`` says which, ``n`` how
    many seeds the interval rests on (pairs; else the smaller group), ``method`` t or
    bootstrap (``method="bootstrap"``: percentile bootstrap of the same). Negative deltas
    favour the reference (lower WER). ``verdict`` names the optimizer with the lower WER only
    when the interval excludes 0 and n ≥ MIN_VERDICT_N; otherwise it says "inconclusive" and,
    from ``seeds_needed`` (a power calculation, see seeds_needed_paired), about how many seeds
    would resolve a difference of the observed size.
    """
    method = check_ci_method(method)
    rows: list[dict] = []
    done = runs[runs["status"] == "completed"]
    where_keys = ["preset", *BUDGET_KEYS]
    for where, comparable in done.groupby(where_keys, sort=False, dropna=False):
        groups = list(comparable.groupby(["optimizer", "hparams_key"], sort=False))
        refs, others = _reference_and_others(groups, reference)
        for (_, ref_key), ref in refs:
            ref_label = str(ref["config"].iloc[0])
            for (other_name, other_key), other in others:
                label = str(other["config"].iloc[0])
                head = {
                    **dict(zip(where_keys, where, strict=True)),
                    "reference": ref_label,
                    "reference_hparams": ref_key,
                    "other": label,
                    "other_hparams": other_key,
                    "kind": _kind(other, str(other_name), reference),
                }
                for metric in metrics:
                    row = _compare(ref, other, metric, (method, n_boot, seed))
                    if row is not None:
                        row["verdict"] = _verdict(row, ref_label, label)
                        rows.append({**head, "metric": metric, **row})
    columns = [
        "preset", "steps_budget", "time_budget_s", "reference", "reference_hparams", "other",
        "other_hparams", "kind", "metric", "n_reference", "n_other", "n_pairs", "pairing", "n",
        "method", "delta", "ci_low", "ci_high", "seeds_needed", "verdict",
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    frame.attrs["several_budgets"] = _several_budgets(runs)  # for pairwise_display
    return frame


Groups = list[tuple[tuple, pd.DataFrame]]


def _reference_and_others(groups: Groups, reference: str) -> tuple[Groups, Groups]:
    """The reference's configurations and those compared with them. When the reference ran
    both as tuned (no overrides) and with overrides (``fam[sampling=random]``), the tuned one
    is the reference and the others are its variants, compared with it like any other."""
    refs = [(k, g) for k, g in groups if k[0] == reference]
    others = [(k, g) for k, g in groups if k[0] != reference]
    plain = [(k, g) for k, g in refs if str(g["config"].iloc[0]) == reference]
    if len(refs) > 1 and len(plain) == 1:
        variants = [(k, g) for k, g in refs if k != plain[0][0]]
        return plain, variants + others
    return refs, others


def _kind(other: pd.DataFrame, name: str, reference: str) -> str:
    if name == reference:
        return "variant"
    return "ablation" if set(other["ablation_of"]) == {reference} else "baseline"


def _per_seed(group: pd.DataFrame, metric: str) -> pd.Series:
    group = one_per_seed(group)
    values = pd.to_numeric(group[metric], errors="coerce")
    frame = pd.DataFrame({"seed": group["seed"].astype(str), "v": values}).dropna()
    return frame.groupby("seed")["v"].mean()


def _compare(
    ref: pd.DataFrame, other: pd.DataFrame, metric: str, interval: tuple[str, int, int]
) -> dict | None:
    method, n_boot, seed = interval
    a, b = _per_seed(ref, metric), _per_seed(other, metric)
    if a.empty or b.empty:
        return None
    common = a.index.intersection(b.index)
    if len(common) >= 2 or (len(common) == 1 and len(a) == len(b) == 1):
        x, y = a[common].to_numpy(), b[common].to_numpy()
        diffs = x - y
        delta = float(diffs.mean())
        if method == "bootstrap":
            low, high = bootstrap_ci(diffs, n_boot=n_boot, seed=seed)
        else:
            low, high = paired_t_interval(x, y)
        pairing, n_pairs, n = "paired", len(common), len(common)
        needed = seeds_needed_paired(diffs)
    else:
        x, y = a.to_numpy(), b.to_numpy()
        delta = float(x.mean() - y.mean())
        if method == "bootstrap":
            low, high = bootstrap_diff_ci(x, y, n_boot=n_boot, seed=seed)
        else:
            low, high = welch_interval(x, y)
        pairing, n_pairs, n = "unpaired", 0, min(len(a), len(b))
        needed = seeds_needed_unpaired(x, y)
    return {
        "n_reference": len(a),
        "n_other": len(b),
        "n_pairs": n_pairs,
        "pairing": pairing,
        "n": n,
        "method": method,
        "delta": delta,
        "ci_low": low,
        "ci_high": high,
        "seeds_needed": needed,
    }


def _verdict(row: dict, reference: str, other: str) -> str:
    """Which optimizer has the lower WER, when the interval excludes 0 and n ≥ MIN_VERDICT_N;
    otherwise "inconclusive (n = …)" with about how many seeds would resolve the difference."""
    low, high, n = row["ci_low"], row["ci_high"], int(row["n"])
    if n >= MIN_VERDICT_N and math.isfinite(low) and math.isfinite(high):
        if high < 0:
            return f"{reference} lower"
        if low > 0:
            return f"{other} lower"
    needed = row["seeds_needed"]
    if not math.isfinite(needed):
        return f"inconclusive (n = {n})"
    # The verdict needs MIN_VERDICT_N seeds, and more than n when n has not resolved it.
    seeds = max(int(needed), MIN_VERDICT_N, n + 1)
    each = " each" if row["pairing"] == "unpaired" else ""
    return f"inconclusive (n = {n}; about {seeds} seeds{each} would resolve a difference this size)"


# --------------------------------------------------------------------------- presentation


def fmt_num(value: object, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or "—" when missing."""
    x = _float(value)
    return f"{x:.{digits}f}" if math.isfinite(x) else _MISSING


def _fmt_ci(low: float, high: float, digits: int = 3) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return _MISSING
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def interval_label(method: object, n: object, pairing: object = None) -> str:
    """``"t, n=3"``, ``"paired t, n=3"``, ``"Welch t, n=2"``, ``"bootstrap, n=12"``: how an
    interval was computed and from how many seeds; "—" without seeds."""
    count = _float(n)
    if not math.isfinite(count) or count < 1:
        return _MISSING
    name = str(method)
    if name == "t" and pairing in ("paired", "unpaired"):
        name = "paired t" if pairing == "paired" else "Welch t"
    return f"{name}, n={count:.0f}"


def _fmt_mean_std(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return _MISSING
    return f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f}"


def _fmt_seconds(value: float) -> str:
    return f"{value:.0f}" if math.isfinite(value) and value >= 100 else fmt_num(value, 1)


def status_text(row: pd.Series | dict) -> str:
    """``"3 completed · 1 diverged"`` from the ``n_<status>`` counts of an aggregate row."""
    parts = [f"{int(row[f'n_{s}'])} {s}" for s in COMPARE_STATUSES if int(row.get(f"n_{s}", 0))]
    if int(row.get("n_other", 0)):
        parts.append(f"{int(row['n_other'])} other")
    return " · ".join(parts) or "none"


def timing_text(row: pd.Series | dict) -> str:
    """What the times of an aggregate row rest on when some seeds were contended: ``"2 of 5
    contended, left out"`` (or ``"included"`` under --include-contended); "" otherwise."""
    contended = int(row.get("n_contended", 0) or 0)
    if not contended:
        return ""
    seeds, timed = int(row.get("n_seeds", 0)), int(row.get("n_timed", 0))
    fate = "included" if timed == seeds else "left out"
    return f"{contended} of {seeds} contended, {fate}"


def budget_label(steps_budget: object, time_budget_s: object) -> str:
    """``"2000 steps"``, ``"600 s"`` or ``"2000 steps, 600 s"``; "—" without either."""
    steps, seconds = _float(steps_budget), _float(time_budget_s)
    parts = [f"{steps:.0f} steps"] if math.isfinite(steps) else []
    if math.isfinite(seconds):
        parts.append(f"{seconds:g} s")
    return ", ".join(parts) or _MISSING


def _budget_labels(frame: pd.DataFrame) -> list[str]:
    return [budget_label(*v) for v in zip(*(frame[k] for k in BUDGET_KEYS), strict=True)]


def _several_budgets(frame: pd.DataFrame) -> bool:
    """Whether a preset of ``frame`` (runs, aggregate or pairwise rows) has several budgets."""
    if frame.empty or not {"preset", *BUDGET_KEYS} <= set(frame.columns):
        return False
    labels = pd.Series(_budget_labels(frame), index=frame.index)
    return bool(labels.groupby(frame["preset"]).nunique().max() > 1)


def comparison_display(agg: pd.DataFrame) -> pd.DataFrame:
    """The aggregate table as human-readable strings (what the table/markdown formats show).

    *interval* says how the 95% CI was computed and from how many seeds ("t, n=3").
    """
    targets = {float(t) for t in agg["target_wer"] if math.isfinite(t)}
    ttt_column = f"time to WER {next(iter(targets)):.2f}" if len(targets) == 1 else "time to target"
    rows = []
    for _, r in agg.iterrows():
        interval = interval_label(r.get("final_dev_wer_ci_method"), r.get("final_dev_wer_n"))
        best_ci = _fmt_ci(r["best_dev_wer_ci_low"], r["best_dev_wer_ci_high"])
        best = interval_label(r.get("best_dev_wer_ci_method"), r.get("best_dev_wer_n"))
        if best != interval and best_ci != _MISSING:
            best_ci += f" ({best})"  # rare: a run with a final but no best WER, or the reverse
        ttt = _MISSING
        if math.isfinite(r["target_wer"]):
            if math.isfinite(r["time_to_target_s"]):
                ttt = f"{_fmt_seconds(r['time_to_target_s'])} s"
            ttt += f" ({int(r['reached'])}/{int(r['n_seeds'])})"
            if len(targets) > 1:
                ttt += f" @ {r['target_wer']:.2f}"
        rows.append(
            {
                "preset": r["preset"],
                "optimizer": r.get("config", r["optimizer"]),
                "hparams": r["hparams_key"],
                "seeds": str(int(r["n_seeds"])),
                "final dev WER": _fmt_mean_std(r["final_dev_wer_mean"], r["final_dev_wer_std"]),
                "95% CI": _fmt_ci(r["final_dev_wer_ci_low"], r["final_dev_wer_ci_high"]),
                "interval": interval,
                "best dev WER": _fmt_mean_std(r["best_dev_wer_mean"], r["best_dev_wer_std"]),
                "best 95% CI": best_ci,
                "test WER": _fmt_mean_std(r["test_wer_mean"], r["test_wer_std"]),
                ttt_column: ttt,
                "train s": _fmt_seconds(r["train_s"]),
                "steps/s": fmt_num(r["steps_per_s"], 2),
                "peak MB": fmt_num(r["peak_memory_mb"], 0),
                "runs": status_text(r),
                "timing": timing_text(r),
            }
        )
    frame = pd.DataFrame(rows)
    if not any(frame["timing"]):
        frame = frame.drop(columns=["timing"])
    if _several_budgets(agg):
        frame.insert(1, "budget", _budget_labels(agg))
    if frame["preset"].nunique() == 1:
        frame = frame.drop(columns=["preset"])
    return frame


def pairwise_display(pw: pd.DataFrame) -> pd.DataFrame:
    """The pairwise table as human-readable strings (with the budget when the runs of a preset
    had several); *interval* says how the 95% CI was computed and from how many seeds."""
    rows = []
    for _, r in pw.iterrows():
        pairing = (
            f"paired ({r['n_pairs']} seed{'' if r['n_pairs'] == 1 else 's'})"
            if r["pairing"] == "paired"
            else (f"unpaired ({r['n_reference']} vs {r['n_other']} seeds)")
        )
        rows.append(
            {
                "preset": r["preset"],
                "comparison": f"{r['reference']} − {r['other']}",
                "against": r["kind"],
                "metric": _METRIC_LABELS.get(str(r["metric"]), str(r["metric"])),
                "ΔWER": f"{r['delta']:+.3f}" if math.isfinite(r["delta"]) else _MISSING,
                "95% CI": _fmt_ci(r["ci_low"], r["ci_high"]),
                "interval": interval_label(r["method"], r["n"], r["pairing"]),
                "pairing": pairing,
                "verdict": str(r["verdict"]),
            }
        )
    columns = [
        "preset", "comparison", "against", "metric", "ΔWER", "95% CI", "interval", "pairing",
        "verdict",
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    # The budget is shown when the runs had several, though pairs may exist at one only.
    if len(pw) and pw.attrs.get("several_budgets", _several_budgets(pw)):
        frame.insert(1, "budget", _budget_labels(pw))
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
