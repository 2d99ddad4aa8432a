"""Across workloads: times to target, performance profiles and speedups (AlgoPerf's scoring).

A configuration's time on a workload is the median over its seeds of the training seconds to
the workload's target dev WER, a seed that never reached it counting as infinitely slow (so
the time is finite when more than half the seeds reached the target). Contended runs are left
out of times unless asked (see fambench.machine). The same is done with optimizer steps to the
target in place of seconds (every completed seed counts: steps do not depend on the machine),
because an optimizer's cost per step differs: a ranking by steps says what its updates buy, a
ranking by time what they cost.

Performance profile: with t[s, w] the time of configuration s on workload w, the ratio
r[s, w] = t[s, w] / min_s' t[s', w] (∞ when s never reached the target); the profile
ρ_s(τ) = (fraction of workloads with r[s, w] ≤ τ), and the score is its normalised integral
over τ ∈ [1, τ_max]: (1 / (τ_max − 1)) ∫ ρ_s(τ) dτ = mean over w of
max(0, τ_max − r[s, w]) / (τ_max − 1), in [0, 1] (1: fastest everywhere). τ_max = 4.

Speedup of s against a reference configuration b on a workload: t[b, w] / t[s, w] (above 1:
s is faster), with a paired Student-t interval of the mean log-time difference over the seeds
where both reached the target, exponentiated (a geometric-mean ratio), and its n.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fambench.analysis.aggregate import (
    group_target,
    one_per_seed,
    run_steps_to_target,
    run_time_to_target,
)
from fambench.analysis.load import GROUP_KEYS, ResultSet
from fambench.analysis.stats import t_interval

log = logging.getLogger(__name__)

TAU_MAX = 4.0
BEST_BASELINE = "best"
#: What a configuration is measured by on a workload: the run_times column, per axis.
AXES = {"time": "time_s", "steps": "steps"}


def run_times(
    runs: pd.DataFrame,
    metrics: pd.DataFrame,
    target_wer: float | None = None,
    *,
    include_contended: bool = False,
) -> pd.DataFrame:
    """One row per completed seed: preset, config, hparams_key, seed, final_dev_wer,
    ``time_s`` (seconds to the target, ∞ when not reached), ``steps`` (optimizer steps to the
    target, ∞ likewise) and ``timed`` (False for a contended run unless ``include_contended``, and for a run
    on emulated bf16)."""
    by_run = {rid: frame for rid, frame in metrics.groupby("run_id", sort=False)}
    rows = []
    for _, group in runs.groupby(list(GROUP_KEYS), sort=False, dropna=False):
        target = group_target(group, target_wer)
        for _, run in one_per_seed(group[group["status"] == "completed"]).iterrows():
            seconds = run_time_to_target(run, by_run.get(run["run_id"]), target)
            steps = run_steps_to_target(by_run.get(run["run_id"]), target)
            rows.append(
                {
                    "preset": run["preset"],
                    "config": run["config"],
                    "optimizer": run["optimizer"],
                    "ablation_of": run["ablation_of"],
                    "hparams_key": run["hparams_key"],
                    "budget": (run["steps_budget"], run["time_budget_s"]),
                    "seed": str(run["seed"]),
                    "final_dev_wer": float(run["final_dev_wer"]),
                    "target_wer": target,
                    "time_s": seconds if math.isfinite(seconds) else math.inf,
                    "steps": steps if math.isfinite(steps) else math.inf,
                    "timed": run.get("bf16_emulated") is not True
                    and (include_contended or run.get("contended") is not True),
                }
            )
    columns = [
        "preset", "config", "optimizer", "ablation_of", "hparams_key", "budget", "seed",
        "final_dev_wer", "target_wer", "time_s", "steps", "timed",
    ]  # fmt: skip
    return _one_setting_per_config(pd.DataFrame(rows, columns=columns))


def _one_setting_per_config(times: pd.DataFrame) -> pd.DataFrame:
    """Per preset and configuration label, the runs of one setting (hyperparameters and
    budget): the one with the most seeds, with a warning naming what was left out."""
    kept = []
    for (preset, config), group in times.groupby(["preset", "config"], sort=False):
        settings = group.groupby(["hparams_key", "budget"], sort=False)
        if settings.ngroups > 1:
            sizes = settings.size().sort_values(ascending=False, kind="stable")
            log.warning(
                "%s on %s ran with %d settings; the one with the most seeds (%s) is used",
                config, preset, settings.ngroups, sizes.index[0][0],
            )  # fmt: skip
            group = settings.get_group(sizes.index[0])
        kept.append(group)
    return pd.concat(kept, ignore_index=True) if kept else times


def axis_runs(times: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The seeds that count on ``axis``: the timed ones for time, every one for steps."""
    return times[times["timed"]] if axis == "time" else times


def workload_times(times: pd.DataFrame, axis: str = "time") -> pd.DataFrame:
    """Configurations × workloads: the median time (or steps, see AXES) to target over the
    seeds that count on the axis (∞ when more than half missed the target, NaN when none
    counts)."""
    counted = axis_runs(times, axis)
    by = counted.groupby(["config", "preset"], sort=False)[AXES[axis]]
    table = by.median().unstack("preset")
    order = list(dict.fromkeys(times["config"]))
    presets = list(dict.fromkeys(times["preset"]))
    return table.reindex(index=order, columns=presets)


def performance_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """r[s, w] = t[s, w] / min_s t[s, w]. A workload where some configuration has no time
    (NaN) is left out, with a warning: a profile compares every configuration on the same
    workloads. On a workload nobody solved, every ratio is ∞."""
    complete = table.columns[table.notna().all(axis=0)]
    for preset in table.columns.difference(complete, sort=False):
        missing = ", ".join(table.index[table[preset].isna()])
        log.warning("workload %s left out of the profile: no time for %s", preset, missing)
    table = table[complete]
    best = table.min(axis=0)
    ratios = table.divide(best.where(np.isfinite(best), np.nan), axis=1)
    return ratios.fillna(math.inf)


def performance_profile(ratios: pd.DataFrame, taus: Sequence[float]) -> pd.DataFrame:
    """ρ_s(τ): per configuration (rows) the fraction of workloads with r ≤ τ, per τ (columns)."""
    if ratios.shape[1] == 0:
        return pd.DataFrame(index=ratios.index, columns=list(taus), dtype=float)
    values = {tau: (ratios <= tau).mean(axis=1) for tau in taus}
    return pd.DataFrame(values, index=ratios.index)


def profile_scores(ratios: pd.DataFrame, tau_max: float = TAU_MAX) -> pd.Series:
    """The integral of ρ_s over [1, tau_max] divided by (tau_max − 1), exactly (ρ is a step
    function): mean over workloads of max(0, tau_max − r) / (tau_max − 1)."""
    if ratios.shape[1] == 0:
        return pd.Series(np.nan, index=ratios.index, name="score")
    clipped = (tau_max - ratios.clip(lower=1.0)).clip(lower=0.0) / (tau_max - 1.0)
    return clipped.mean(axis=1).rename("score")


def best_baseline(times: pd.DataFrame, preset: str, reference: str) -> str | None:
    """The best tuned baseline on ``preset``: of the configurations that are neither
    ``reference`` (nor a variant of it) nor an ablation of it, the lowest median final dev WER."""
    on = times[(times["preset"] == preset) & (times["optimizer"] != reference)]
    on = on[on["ablation_of"] != reference]
    if on.empty:
        return None
    medians = on.groupby("config", sort=False)["final_dev_wer"].median()
    return str(medians.sort_values(kind="stable").index[0])


def speedups(times: pd.DataFrame, *, reference: str, baseline: str = BEST_BASELINE) -> pd.DataFrame:
    """Per workload and configuration: time to target of the baseline over its own
    (``baseline`` names a configuration, or "best": see best_baseline against ``reference``).

    Columns: preset, baseline, config, ``speedup`` (ratio of median times), ``ratio_low``/
    ``ratio_high`` (95% paired t interval of the geometric-mean ratio over the seeds where
    both were timed and reached the target), ``n`` (those seeds).
    """
    rows = []
    for preset in dict.fromkeys(times["preset"]):
        base = best_baseline(times, preset, reference) if baseline == BEST_BASELINE else baseline
        if base is None:
            continue
        on = times[(times["preset"] == preset) & times["timed"]]
        base_runs = on[on["config"] == base].set_index("seed")["time_s"]
        if base_runs.empty:
            continue
        for config in dict.fromkeys(on["config"]):
            if config == base:
                continue
            own = on[on["config"] == config].set_index("seed")["time_s"]
            rows.append({"preset": preset, "baseline": base, "config": config,
                         **_speedup(base_runs, own)})  # fmt: skip
    columns = ["preset", "baseline", "config", "speedup", "ratio_low", "ratio_high", "n"]
    return pd.DataFrame(rows, columns=columns)


def _speedup(base: pd.Series, own: pd.Series) -> dict:
    ratio = float(np.median(base)) / float(np.median(own))  # ∞/∞: neither reached, NaN
    common = base.index.intersection(own.index)
    both = [(base[s], own[s]) for s in common if math.isfinite(base[s]) and math.isfinite(own[s])]
    logs = [math.log(b) - math.log(o) for b, o in both if b > 0 and o > 0]
    low, high = t_interval(logs)
    return {
        "speedup": ratio,
        "ratio_low": math.exp(low) if math.isfinite(low) else math.nan,
        "ratio_high": math.exp(high) if math.isfinite(high) else math.nan,
        "n": len(logs),
    }


@dataclass(frozen=True)
class Profile:
    """One axis across workloads: its configurations × workloads table (workload_times) and
    the performance ratios (None below two workloads)."""

    axis: str  # a key of AXES
    table: pd.DataFrame
    ratios: pd.DataFrame | None

    @classmethod
    def of(cls, times: pd.DataFrame, axis: str) -> Profile:
        table = workload_times(times, axis)
        return cls(axis, table, performance_ratios(table) if table.shape[1] >= 2 else None)

    @property
    def n_profiled(self) -> int:
        """The workloads the profile covers (those with a value for every configuration)."""
        return 0 if self.ratios is None else int(self.ratios.shape[1])

    def profiled_names(self) -> str:
        """The profiled workloads, comma-separated ("none" without any)."""
        names = [] if self.ratios is None else list(self.ratios.columns)
        return ", ".join(names) or "none"


@dataclass(frozen=True)
class Workloads:
    """Everything compare shows across workloads, computed once from a ResultSet."""

    times: pd.DataFrame  # run_times
    by_time: Profile
    by_steps: Profile
    speedups: pd.DataFrame

    @classmethod
    def of(
        cls,
        results: ResultSet,
        *,
        reference: str,
        baseline: str = BEST_BASELINE,
        target_wer: float | None = None,
        include_contended: bool = False,
    ) -> Workloads | None:
        """None when no run completed."""
        times = run_times(
            results.runs, results.metrics, target_wer, include_contended=include_contended
        )
        if times.empty:
            return None
        return cls(
            times,
            Profile.of(times, "time"),
            Profile.of(times, "steps"),
            speedups(times, reference=reference, baseline=baseline),
        )

    def profiles(self) -> tuple[Profile, Profile]:
        """(by time, by steps)."""
        return self.by_time, self.by_steps
