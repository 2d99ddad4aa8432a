"""Statistics of configurations: aggregate over seeds, pairwise differences and verdicts.

Completed runs only enter a statistic; the others are counted per status. Pairwise
differences name no optimizer: the reference is a parameter, and an optimizer that is an
ablation of the reference says so in its config (``ablation_of``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fambench.analysis.labels import BUDGET_KEYS, as_float, budget_labels
from fambench.analysis.load import COMPARE_STATUSES, GROUP_KEYS, preference
from fambench.analysis.stats import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_CI_METHOD,
    bootstrap_ci,
    bootstrap_diff_ci,
    check_ci_method,
    describe,
    paired_t_interval,
    seeds_needed_paired,
    seeds_needed_unpaired,
    welch_interval,
)
from fambench.errors import ResultsError
from fambench.rundir import steps_to_target, time_to_target

WER_STATS = ("final_dev_wer", "best_dev_wer", "test_wer")
#: The statistics read off wall-clock time: left out for runs that were contended.
TIME_STATS = ("train_s", "steps_per_s", "audio_s_per_s")
#: A comparison gets a verdict only from this many seeds up (pairs; else the smaller group).
MIN_VERDICT_N = 5


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
    with a value) and ``<m>_ci_method``; ``target_wer`` (``target_wer`` argument, else the
    runs' own), ``reached`` (completed seeds that reached it), ``time_to_target_s`` (mean over
    those that did, interpolated between bracketing evaluations); ``time_to_target_median_s``
    (median over the timed seeds, a seed that missed the target counting as infinitely slow:
    AlgoPerf's per-workload time); ``train_s``, ``steps``, ``steps_per_s``, ``audio_s_per_s`` means and
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
    emulated = bf16_emulated(done)
    timed = done[~emulated] if include_contended else done[~(contended | emulated)]
    row: dict = {
        "n_runs": len(group),
        "n_seeds": len(done),
        "seeds": ",".join(str(s) for s in done["seed"]),
    }
    for metric in WER_STATS:
        for name, value in describe(done[metric], *interval).items():
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
    row["n_bf16_emulated"] = int(emulated.sum())
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
    """One run per seed (see load.preference), in the given order; seedless runs all stay."""
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
    """The target WER times are read against: ``target_wer``, else the preset's recorded
    workload target (``workload_target_wer``, see load_results), else the runs' own; NaN
    without any."""
    if target_wer is not None:
        return float(target_wer)
    if "workload_target_wer" in group:
        recorded = pd.to_numeric(group["workload_target_wer"], errors="coerce").dropna()
        if len(recorded):
            return float(recorded.iloc[0])
    own = pd.to_numeric(group["target_wer"], errors="coerce").dropna()
    return float(own.iloc[0]) if len(own) else math.nan


def run_time_to_target(run: pd.Series, metrics: pd.DataFrame | None, target: float) -> float:
    """A run's training seconds to ``target`` (NaN when not reached or not known)."""
    if not math.isfinite(target):
        return math.nan
    if metrics is not None and metrics["dev_wer"].notna().any():
        return time_to_target(metrics, target)
    # No metric rows: the summary's own time is valid only for the target it was computed for.
    if run["target_wer"] == target:
        return float(run["time_to_target_s"])
    return math.nan


def run_steps_to_target(metrics: pd.DataFrame | None, target: float) -> float:
    """A run's optimizer steps to ``target`` (NaN when not reached, or without metric rows)."""
    if metrics is None or not metrics["dev_wer"].notna().any():
        return math.nan
    return steps_to_target(metrics, target)


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
    frame.attrs["several_budgets"] = several_budgets(runs)  # for pairwise_display
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


def several_budgets(frame: pd.DataFrame) -> bool:
    """Whether a preset of ``frame`` (runs, aggregate or pairwise rows) has several budgets."""
    if frame.empty or not {"preset", *BUDGET_KEYS} <= set(frame.columns):
        return False
    labels = pd.Series(budget_labels(frame), index=frame.index)
    return bool(labels.groupby(frame["preset"]).nunique().max() > 1)


def _preference(run: pd.Series) -> tuple[int, float]:
    return preference(str(run["status"]), as_float(run.get("summary_mtime")))


def bf16_emulated(runs: pd.DataFrame) -> np.ndarray:
    """Which runs computed bf16 without native bf16 (their times are left out: they are not
    what bf16 hardware takes); a runs table without the column has none."""
    if "bf16_emulated" not in runs:
        return np.zeros(len(runs), dtype=bool)
    return runs["bf16_emulated"].map(lambda v: v is True).to_numpy(dtype=bool)
