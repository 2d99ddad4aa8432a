"""Aggregation, t intervals and bootstrap CIs, power estimates, time-to-target and pairwise
deltas with their verdicts, on hand-built runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from rundirs import write_run
from scipy import stats

from fambench.analysis import load_results
from fambench.analysis.aggregate import aggregate, pairwise
from fambench.analysis.stats import (
    bootstrap_ci,
    bootstrap_diff_ci,
    check_ci_method,
    mean_interval,
    paired_t_interval,
    seeds_needed_paired,
    seeds_needed_unpaired,
    t_interval,
    welch_interval,
)
from fambench.analysis.tables import (
    check_format,
    comparison_display,
    pairwise_display,
    to_markdown,
    write_table,
)
from fambench.errors import ConfigError
from fambench.rundir import RunFiles, RunLock, time_to_target

N_BOOT = 2_000  # plenty for these checks, and fast
# Student t quantiles t_{q, df}, as printed in tables (scipy.stats.t.ppf(q, df)).
T975_1 = 12.706204736174707
T975_2 = 4.302652729749464


def _final(wer: float, wall: float = 20.0) -> list[tuple[int, float, float]]:
    """Two evaluations ending at ``wer``."""
    return [(50, wall / 2, 0.95), (100, wall, wer)]


def _row(agg: pd.DataFrame, optimizer: str) -> pd.Series:
    rows = agg[agg["optimizer"] == optimizer]
    assert len(rows) == 1
    return rows.iloc[0]


# --------------------------------------------------------------------------- t intervals


def test_t_interval_by_hand():
    # mean 0.03, sd 0.01, n = 3: half-width t_{0.975,2} · 0.01 / √3 = 0.0248413771...
    low, high = t_interval([0.03, 0.04, 0.02])
    half = T975_2 * 0.01 / math.sqrt(3)
    assert half == pytest.approx(0.024841377117503)
    assert (low, high) == pytest.approx((0.03 - half, 0.03 + half), rel=1e-12)
    # level 0.90: t_{0.95,2} = 2.919985580355516
    assert t_interval([0.03, 0.04, 0.02], level=0.90) == pytest.approx(
        (0.03 - 2.919985580355516 * 0.01 / math.sqrt(3), 0.03 + 2.919985580355516 * 0.01 / 3**0.5)
    )
    # two values: t_{0.975,1} · sd / √2 with sd = 0.1·√2, so the half-width is 0.1 · t
    assert t_interval([0.2, 0.4]) == pytest.approx((0.3 - 0.1 * T975_1, 0.3 + 0.1 * T975_1))


def test_t_interval_degenerate_cases():
    assert all(math.isnan(v) for v in t_interval([0.3]))
    assert all(math.isnan(v) for v in t_interval([]))
    assert all(math.isnan(v) for v in t_interval([0.3, float("nan")]))  # one finite value
    assert t_interval([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3))  # no spread


def test_paired_t_interval_is_the_t_interval_of_the_differences():
    a, b = [0.33, 0.44, 0.52], [0.30, 0.40, 0.50]  # differences 0.03, 0.04, 0.02
    half = T975_2 * 0.01 / math.sqrt(3)
    assert paired_t_interval(a, b) == pytest.approx((0.03 - half, 0.03 + half))
    # A pair with a missing value is left out, not the value alone.
    assert paired_t_interval([*a, math.nan], [*b, 0.1]) == pytest.approx(paired_t_interval(a, b))
    with pytest.raises(ValueError, match="equal lengths"):
        paired_t_interval([0.1, 0.2], [0.1])


def test_welch_interval_matches_scipy():
    a, b = [0.30, 0.32, 0.34, 0.31], [0.40, 0.41, 0.45]
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval()
    assert welch_interval(a, b) == pytest.approx((expected.low, expected.high), rel=1e-12)
    a, b = [0.30, 0.32, 0.34], [0.50, 0.60]  # unequal spreads and sizes
    expected = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.9)
    assert welch_interval(a, b, level=0.9) == pytest.approx((expected.low, expected.high))
    assert all(math.isnan(v) for v in welch_interval([0.3], [0.4, 0.5]))
    assert welch_interval([0.3, 0.3], [0.5, 0.5]) == pytest.approx((-0.2, -0.2))


def test_seeds_needed_paired_by_hand():
    # mean 0.01, sd 0.01 (d/sd = 1). Normal approximation: (1.959964 + 0.841621)² = 7.849 → 8.
    # With t quantiles, the smallest n with n ≥ (t_{0.975,n−1} + t_{0.8,n−1})²:
    #   n = 9:  (2.306004 + 0.888890)² = 10.207 > 9
    #   n = 10: (2.262157 + 0.883404)² =  9.895 ≤ 10
    assert (2.306004135204166 + 0.8888895177670202) ** 2 > 9
    assert (2.262157162798205 + 0.8834038596855346) ** 2 <= 10
    assert seeds_needed_paired([0.0, 0.02, 0.01]) == 10
    assert seeds_needed_paired([0.0, -0.02, -0.01]) == 10  # the sign does not matter
    # mean 0.03, sd 0.01 (d/sd = 3): (0.3333·(t + t))² at n = 3: (4.302653 + 1.060660)²/9 =
    # 3.197 > 3; at n = 4: (3.182446 + 0.978472)²/9 = 1.924 ≤ 4 → 4 (the normal formula says 1).
    assert (4.302652729749462 + 1.0606601717798214) ** 2 / 9 > 3
    assert (3.1824463052837078 + 0.9784723123633042) ** 2 / 9 <= 4
    assert seeds_needed_paired([0.03, 0.04, 0.02]) == 4
    assert math.isnan(seeds_needed_paired([0.01, -0.01]))  # mean 0
    assert math.isnan(seeds_needed_paired([0.02, 0.02]))  # sd 0
    assert math.isnan(seeds_needed_paired([0.02]))  # n < 2


def test_seeds_needed_unpaired_by_hand():
    # pooled sd 0.02, Δ 0.03: per-group n ≥ 2 · (0.02/0.03)² · (t_{0.975,2n−2} + t_{0.8,2n−2})²
    # (normal approximation: 2 · 0.4444 · 7.849 = 6.98 → 7).
    k = 2 * (0.02 / 0.03) ** 2
    assert k * (2.144786687917804 + 0.8680547815574207) ** 2 > 8  # n = 8, df = 14
    assert k * (2.1199052992212546 + 0.8646670017982918) ** 2 <= 9  # n = 9, df = 16
    assert seeds_needed_unpaired([0.30, 0.32, 0.34], [0.33, 0.35, 0.37]) == 9
    assert math.isnan(seeds_needed_unpaired([0.3, 0.4], [0.3, 0.4]))  # Δ 0
    assert math.isnan(seeds_needed_unpaired([0.3, 0.3], [0.4, 0.4]))  # sd 0
    assert math.isnan(seeds_needed_unpaired([0.3], [0.4, 0.5]))  # n < 2


def test_ci_methods():
    assert mean_interval([0.03, 0.04, 0.02]) == t_interval([0.03, 0.04, 0.02])
    assert mean_interval([0.2, 0.4], "bootstrap") == (0.2, 0.4)
    assert check_ci_method(" T ") == "t"
    with pytest.raises(ConfigError, match="unknown CI method 'z'; choose one of t, bootstrap"):
        check_ci_method("z")


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_exact_bounds_for_two_values():
    # Means of resamples of {0.2, 0.4} are 0.2, 0.3 or 0.4, each end with probability 1/4:
    # the 2.5% and 97.5% quantiles are exactly the two values.
    assert bootstrap_ci([0.2, 0.4], seed=0) == (0.2, 0.4)
    assert bootstrap_ci([0.2, 0.4], seed=123) == (0.2, 0.4)


def test_bootstrap_degenerate_cases():
    assert all(math.isnan(v) for v in bootstrap_ci([0.3]))
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert all(math.isnan(v) for v in bootstrap_ci([0.3, float("nan")]))  # one finite value
    low, high = bootstrap_ci([0.3, 0.3, 0.3])
    assert low == pytest.approx(0.3) and high == pytest.approx(0.3)


def test_bootstrap_is_seeded_and_contains_the_mean():
    values = [0.31, 0.35, 0.29, 0.40, 0.33]
    first = bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) == first
    # the resampled means take few distinct values; with few resamples the seed shows
    assert bootstrap_ci(values, seed=8, n_boot=50) != bootstrap_ci(values, seed=7, n_boot=50)
    low, high = first
    assert min(values) <= low < np.mean(values) < high <= max(values)


def test_bootstrap_width_orders():
    rng = np.random.default_rng(0)
    narrow = 0.3 + 0.01 * rng.standard_normal(5)
    wide = 0.3 + 0.10 * rng.standard_normal(5)
    w_narrow = np.subtract(*bootstrap_ci(narrow)[::-1])
    w_wide = np.subtract(*bootstrap_ci(wide)[::-1])
    assert 3 * w_narrow < w_wide  # ten times the spread: a much wider interval
    many = 0.3 + 0.10 * rng.standard_normal(200)
    assert np.subtract(*bootstrap_ci(many)[::-1]) < w_wide / 3  # more seeds: narrower


def test_bootstrap_diff_ci():
    low, high = bootstrap_diff_ci([0.30, 0.32, 0.34], [0.40, 0.41, 0.45])
    assert low < 0.32 - 0.42 < high < 0
    assert all(math.isnan(v) for v in bootstrap_diff_ci([0.3], [0.4, 0.5]))


# --------------------------------------------------------------------------- time to target


def test_time_to_target_interpolates_between_bracketing_evaluations():
    evals = pd.DataFrame(
        {"step": [50, 100, 150], "train_s": [10.0, 20.0, 30.0], "dev_wer": [0.9, 0.5, 0.3]}
    )
    # 0.6 lies between 0.9 (10 s) and 0.5 (20 s): 10 + (0.9 - 0.6) / (0.9 - 0.5) * 10 = 17.5
    assert time_to_target(evals, 0.6) == pytest.approx(17.5)
    assert time_to_target(evals, 0.5) == pytest.approx(20.0)  # reached exactly at an evaluation
    assert time_to_target(evals, 0.95) == pytest.approx(10.0)  # already under at the first
    assert math.isnan(time_to_target(evals, 0.2))  # never reached
    assert math.isnan(time_to_target(evals, float("nan")))


def test_time_to_target_uses_the_first_crossing():
    evals = pd.DataFrame(
        {"step": [1, 2, 3, 4], "train_s": [1.0, 2.0, 3.0, 4.0], "dev_wer": [0.8, 0.4, 0.7, 0.2]}
    )
    assert time_to_target(evals, 0.6) == pytest.approx(1.5)


# --------------------------------------------------------------------------- aggregate


@pytest.fixture
def grid(tmp_path):
    """fam, fam-fixed, adamw on seeds 0-2; sgd on seeds 3-4 plus a diverged seed 5."""
    for seed, wer in enumerate([0.30, 0.32, 0.34]):
        write_run(
            tmp_path, optimizer="fam", seed=seed, evals=_final(wer), peak_memory_mb=300 + seed
        )
    for seed, wer in enumerate([0.33, 0.36, 0.36]):
        write_run(tmp_path, optimizer="fam-fixed", ablation_of="fam", seed=seed, evals=_final(wer))
    for seed, wer in enumerate([0.40, 0.41, 0.45]):
        write_run(tmp_path, optimizer="adamw", seed=seed, hparams_key="lr=0.002", evals=_final(wer))
    write_run(tmp_path, optimizer="sgd", seed=3, hparams_key="lr=0.05", evals=_final(0.50))
    write_run(tmp_path, optimizer="sgd", seed=4, hparams_key="lr=0.05", evals=_final(0.60))
    write_run(
        tmp_path, optimizer="sgd", seed=5, hparams_key="lr=0.05", status="diverged",
        evals=[(50, 10.0, 0.99)], test_wer=None, message="loss became nan at step 60",
    )  # fmt: skip
    return load_results([tmp_path])


def test_aggregate_means_stds_and_cis(grid):
    agg = aggregate(grid.runs, grid.metrics, n_boot=N_BOOT)
    # By name, an ablation right after the optimizer it ablates.
    assert list(agg["optimizer"]) == ["adamw", "fam", "fam-fixed", "sgd"]
    fam = _row(agg, "fam")
    assert fam["n_seeds"] == 3 and fam["seeds"] == "0,1,2"
    assert fam["final_dev_wer_mean"] == pytest.approx(0.32)
    assert fam["final_dev_wer_std"] == pytest.approx(0.02)
    half = T975_2 * 0.02 / math.sqrt(3)  # Student t over 3 seeds
    assert (fam["final_dev_wer_ci_low"], fam["final_dev_wer_ci_high"]) == pytest.approx(
        (0.32 - half, 0.32 + half)
    )
    assert fam["final_dev_wer_n"] == 3 and fam["final_dev_wer_ci_method"] == "t"
    assert fam["best_dev_wer_mean"] == pytest.approx(0.32)
    assert fam["test_wer_mean"] == pytest.approx(0.45)
    assert fam["peak_memory_mb"] == 302  # the peak over seeds
    assert fam["steps_per_s"] == pytest.approx(5.0)
    assert fam["n_completed"] == 3 and fam["n_diverged"] == 0


def test_diverged_run_is_counted_not_averaged(grid):
    sgd = _row(aggregate(grid.runs, grid.metrics, n_boot=N_BOOT), "sgd")
    assert sgd["n_runs"] == 3 and sgd["n_seeds"] == 2
    assert sgd["n_completed"] == 2 and sgd["n_diverged"] == 1
    assert sgd["final_dev_wer_mean"] == pytest.approx(0.55)  # 0.99 of the diverged run left out
    # Two values 0.50, 0.60: sd 0.0707, half-width t_{0.975,1} · 0.05 = 0.635
    assert sgd["final_dev_wer_n"] == 2
    assert (sgd["final_dev_wer_ci_low"], sgd["final_dev_wer_ci_high"]) == pytest.approx(
        (0.55 - 0.05 * T975_1, 0.55 + 0.05 * T975_1)
    )
    # The bootstrap, when chosen, is exactly the two values (and far too narrow).
    boot = _row(aggregate(grid.runs, grid.metrics, method="bootstrap", n_boot=N_BOOT), "sgd")
    assert boot["final_dev_wer_ci_method"] == "bootstrap"
    assert (boot["final_dev_wer_ci_low"], boot["final_dev_wer_ci_high"]) == pytest.approx(
        (0.50, 0.60)
    )


def test_time_to_target_counts_seeds_that_reached_it(tmp_path):
    write_run(tmp_path, seed=0, evals=[(50, 10.0, 0.9), (100, 20.0, 0.5)])  # 17.5 s
    write_run(tmp_path, seed=1, evals=[(50, 12.0, 0.8), (100, 24.0, 0.4)])  # 12 + 0.5*12 = 18 s
    write_run(tmp_path, seed=2, evals=[(50, 10.0, 0.9), (100, 20.0, 0.7)])  # never under 0.6
    rs = load_results([tmp_path])
    row = _row(aggregate(rs.runs, rs.metrics, n_boot=N_BOOT), "fam")
    assert row["target_wer"] == 0.6  # the runs' own target
    assert row["reached"] == 2 and row["n_seeds"] == 3
    assert row["time_to_target_s"] == pytest.approx(17.75)
    # A target given on the command line replaces the preset's.
    row = _row(aggregate(rs.runs, rs.metrics, target_wer=0.85, n_boot=N_BOOT), "fam")
    # seed 0: 10 + 0.05/0.4*10 = 11.25; seed 1: 12 (first evaluation); seed 2: 10 + 0.05/0.2*10
    assert row["reached"] == 3
    assert row["time_to_target_s"] == pytest.approx((11.25 + 12.0 + 12.5) / 3)
    row = _row(aggregate(rs.runs, rs.metrics, target_wer=0.1, n_boot=N_BOOT), "fam")
    assert row["reached"] == 0 and math.isnan(row["time_to_target_s"])
    assert (
        "— (0/3)"
        in comparison_display(aggregate(rs.runs, rs.metrics, target_wer=0.1)).iloc[0][
            "time to WER 0.10"
        ]
    )


def test_statuses_never_crash(tmp_path):
    write_run(tmp_path, seed=0, status="interrupted", evals=[(50, 10.0, 0.9)])
    write_run(tmp_path, seed=1, summary=False, evals=[])  # running once, its process gone
    write_run(tmp_path, seed=2, status="diverged", evals=[], test_wer=None)
    write_run(tmp_path, seed=3, status="weird-new-status")
    alive = write_run(tmp_path, seed=4, status="running", evals=[(50, 10.0, 0.9)])
    with RunLock(RunFiles(alive).lock):  # its process is alive
        rs = load_results([tmp_path])
    agg = aggregate(rs.runs, rs.metrics, n_boot=N_BOOT)
    row = _row(agg, "fam")
    counts = ("n_completed", "n_diverged", "n_interrupted", "n_running", "n_stale", "n_other")
    assert [row[c] for c in counts] == [0, 1, 1, 1, 1, 1]
    assert row["n_runs"] == 5
    assert row["n_seeds"] == 0 and math.isnan(row["final_dev_wer_mean"])
    shown = comparison_display(agg).iloc[0]
    assert shown["final dev WER"] == "—" and shown["95% CI"] == "—"
    assert shown["runs"] == "1 diverged · 1 interrupted · 1 running · 1 stale · 1 other"
    assert pairwise(rs.runs, reference="fam").empty


def test_single_seed_ci_shows_a_dash(tmp_path):
    write_run(tmp_path, seed=0, evals=_final(0.3))
    rs = load_results([tmp_path])
    agg = aggregate(rs.runs, rs.metrics, n_boot=N_BOOT)
    assert math.isnan(agg.iloc[0]["final_dev_wer_ci_low"])
    shown = comparison_display(agg).iloc[0]
    assert shown["final dev WER"] == "0.300" and shown["95% CI"] == "—"
    assert shown["interval"] == "t, n=1"


def test_runs_of_different_budgets_are_not_pooled(tmp_path):
    # Seeds 0 and 1 at 100 and at 200 steps, seed 0 under a 60 s time budget: three setups.
    for budget, wers in [(100, (0.30, 0.32)), (200, (0.20, 0.22))]:
        for seed, wer in enumerate(wers):
            write_run(tmp_path, seed=seed, steps_budget=budget, evals=_final(wer))
    write_run(tmp_path, seed=0, time_budget_s=60.0, evals=_final(0.40))
    rs = load_results([tmp_path])
    agg = aggregate(rs.runs, rs.metrics, n_boot=N_BOOT)
    assert agg["steps_budget"].tolist() == [100, 100, 200]
    assert agg["time_budget_s"].tolist()[0] == 60.0 and agg["time_budget_s"][1:].isna().all()
    assert agg["n_seeds"].tolist() == [1, 2, 2] and agg["n_runs"].tolist() == [1, 2, 2]
    assert agg["seeds"].tolist() == ["0", "0,1", "0,1"]
    assert agg["final_dev_wer_mean"].tolist() == pytest.approx([0.40, 0.31, 0.21])
    shown = comparison_display(agg)
    assert list(shown.columns[:3]) == ["budget", "optimizer", "hparams"]
    assert shown["budget"].tolist() == ["100 steps, 60 s", "100 steps", "200 steps"]
    assert shown["seeds"].tolist() == ["1", "2", "2"]


def test_the_budget_is_shown_only_where_a_preset_has_several(tmp_path, grid):
    assert "budget" not in comparison_display(aggregate(grid.runs, grid.metrics, n_boot=N_BOOT))
    more = tmp_path / "more"
    write_run(more, preset="ci", seed=0, steps_budget=100)
    write_run(more, preset="synth", seed=0, steps_budget=100)
    write_run(more, preset="synth", seed=0, steps_budget=300)
    rs = load_results([more])
    shown = comparison_display(aggregate(rs.runs, rs.metrics, n_boot=N_BOOT))
    assert list(shown.columns[:3]) == ["preset", "budget", "optimizer"]
    assert shown[["preset", "budget"]].values.tolist() == [
        ["ci", "100 steps"],
        ["synth", "100 steps"],
        ["synth", "300 steps"],
    ]


def test_n_seeds_counts_distinct_seeds(grid):
    # A second completed copy of fam's seed 0 (a hand-built frame: load_results never gives one)
    # with an older summary: counted once, and the newer copy's numbers are used.
    runs = grid.runs.copy()
    runs["summary_mtime"] = 1000.0
    copy = runs[(runs["optimizer"] == "fam") & (runs["seed"] == 0)].assign(
        run_id="copy", final_dev_wer=0.9, summary_mtime=10.0
    )
    fam = _row(aggregate(pd.concat([copy, runs]), grid.metrics, n_boot=N_BOOT), "fam")
    assert (fam["n_runs"], fam["n_seeds"], fam["seeds"]) == (4, 3, "0,1,2")
    assert fam["final_dev_wer_mean"] == pytest.approx(0.32)


# --------------------------------------------------------------------------- pairwise


def test_pairwise_paired_by_seed(grid):
    pw = pairwise(grid.runs, reference="fam", n_boot=N_BOOT)
    assert list(pw["other"]) == ["adamw", "fam-fixed", "sgd"]
    adamw = pw[pw["other"] == "adamw"].iloc[0]
    assert adamw["pairing"] == "paired" and adamw["n_pairs"] == 3
    assert adamw["kind"] == "baseline"
    # per-seed differences -0.10, -0.09, -0.11: mean -0.10, sd 0.01, paired t over 3 pairs
    assert adamw["delta"] == pytest.approx(-0.10)
    half = T975_2 * 0.01 / math.sqrt(3)
    assert (adamw["ci_low"], adamw["ci_high"]) == pytest.approx((-0.10 - half, -0.10 + half))
    assert (adamw["n"], adamw["method"]) == (3, "t")
    # The interval excludes 0, but 3 seeds are too few for a verdict. d/sd = 10: at n = 2,
    # 0.1² · (t_{0.975,1} + t_{0.8,1})² = 0.01 · (12.706 + 1.376)² = 1.98 ≤ 2.
    assert adamw["seeds_needed"] == 2
    assert adamw["verdict"] == (
        "inconclusive (n = 3; about 5 seeds would resolve a difference this size)"
    )
    fixed = pw[pw["other"] == "fam-fixed"].iloc[0]
    assert fixed["kind"] == "ablation" and fixed["pairing"] == "paired"
    assert fixed["delta"] == pytest.approx(((0.30 - 0.33) + (0.32 - 0.36) + (0.34 - 0.36)) / 3)
    assert fixed["seeds_needed"] == 4  # differences -0.03, -0.04, -0.02: see the test by hand


def test_pairwise_unpaired_when_seeds_differ(grid):
    sgd = pairwise(grid.runs, reference="fam", n_boot=N_BOOT).query("other == 'sgd'").iloc[0]
    assert sgd["pairing"] == "unpaired" and sgd["n_pairs"] == 0
    assert (sgd["n_reference"], sgd["n_other"]) == (3, 2)  # the diverged seed is left out
    assert sgd["delta"] == pytest.approx(0.32 - 0.55)
    # Welch's interval, n = the smaller group
    expected = stats.ttest_ind([0.30, 0.32, 0.34], [0.50, 0.60], equal_var=False)
    ci = expected.confidence_interval()
    assert (sgd["ci_low"], sgd["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert sgd["ci_low"] < sgd["delta"] < 0 < sgd["ci_high"]
    assert (sgd["n"], sgd["method"], sgd["seeds_needed"]) == (2, "t", 3)
    assert sgd["verdict"] == (
        "inconclusive (n = 2; about 5 seeds each would resolve a difference this size)"
    )
    shown = pairwise_display(pairwise(grid.runs, reference="fam", n_boot=N_BOOT))
    assert list(shown["pairing"]) == [
        "paired (3 seeds)",
        "paired (3 seeds)",
        "unpaired (3 vs 2 seeds)",
    ]
    assert list(shown["interval"]) == ["paired t, n=3", "paired t, n=3", "Welch t, n=2"]
    assert shown.iloc[0]["ΔWER"] == "-0.100"  # adamw
    assert shown.iloc[1]["verdict"].startswith("inconclusive (n = 3; about 5 seeds")


def _five_seeds(root, other: str, fams: list[float], wers: list[float]):
    for seed, (fam, wer) in enumerate(zip(fams, wers, strict=True)):
        write_run(root, optimizer="fam", seed=seed, evals=_final(fam))
        write_run(root, optimizer=other, seed=seed, hparams_key="x", evals=_final(wer))
    return load_results([root]).runs


def test_a_verdict_needs_five_seeds_and_an_interval_without_0(tmp_path):
    fam = [0.30, 0.31, 0.32, 0.33, 0.34]
    # differences -0.10, -0.11, -0.09, -0.11, -0.09: far from 0, with five seeds
    runs = _five_seeds(tmp_path / "a", "sgd", fam, [0.40, 0.42, 0.41, 0.44, 0.43])
    row = pairwise(runs, reference="fam").iloc[0]
    assert (row["n"], row["pairing"]) == (5, "paired") and row["ci_high"] < 0
    assert row["verdict"] == "fam lower"
    # The other way round: the other optimizer is named.
    runs = _five_seeds(tmp_path / "b", "sgd", fam, [0.20, 0.22, 0.21, 0.24, 0.23])
    row = pairwise(runs, reference="fam").iloc[0]
    assert row["ci_low"] > 0 and row["verdict"] == "sgd lower"
    # The same five seeds, only three of them: inconclusive, though the interval excludes 0.
    three = runs[runs["seed"].isin([0, 1, 2])]
    row = pairwise(three, reference="fam").iloc[0]
    assert row["n"] == 3 and row["ci_low"] > 0
    assert row["verdict"].startswith("inconclusive (n = 3; about 5 seeds")


def test_five_seeds_and_an_interval_with_0_stay_inconclusive(tmp_path):
    # differences 0.01, -0.01, 0.02, -0.02, 0.005: mean 0.001, sd 0.0159
    fam = [0.31, 0.29, 0.32, 0.28, 0.305]
    runs = _five_seeds(tmp_path, "sgd", fam, [0.30] * 5)
    row = pairwise(runs, reference="fam").iloc[0]
    assert row["ci_low"] < 0 < row["ci_high"]
    diffs = np.array(fam) - 0.30
    assert row["seeds_needed"] == seeds_needed_paired(diffs) > 100
    assert row["verdict"] == (
        f"inconclusive (n = 5; about {int(row['seeds_needed'])} seeds would resolve a "
        "difference this size)"
    )
    # No difference at all: no power estimate either.
    runs = _five_seeds(tmp_path / "same", "sgd", fam, fam)
    row = pairwise(runs, reference="fam").iloc[0]
    assert math.isnan(row["seeds_needed"]) and row["verdict"] == "inconclusive (n = 5)"


def test_pairwise_paired_interval_of_two_seeds(tmp_path):
    # Two matched seeds with differences -0.1 and -0.3: sd 0.1·√2, half-width t_{0.975,1} · 0.1.
    for seed, (a, b) in enumerate([(0.3, 0.4), (0.2, 0.5)]):
        write_run(tmp_path, optimizer="fam", seed=seed, evals=_final(a))
        write_run(tmp_path, optimizer="sgd", seed=seed, hparams_key="x", evals=_final(b))
    runs = load_results([tmp_path]).runs
    row = pairwise(runs, reference="fam").iloc[0]
    assert row["pairing"] == "paired" and row["n"] == 2
    assert row["delta"] == pytest.approx(-0.2)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        (-0.2 - 0.1 * T975_1, -0.2 + 0.1 * T975_1)
    )
    # The bootstrap, when chosen, gives the range of the two differences: exactly [-0.3, -0.1].
    row = pairwise(runs, reference="fam", method="bootstrap", n_boot=N_BOOT).iloc[0]
    assert row["method"] == "bootstrap"
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-0.3, -0.1))
    assert (
        pairwise_display(pairwise(runs, reference="fam", method="bootstrap")).iloc[0]["interval"]
        == "bootstrap, n=2"
    )


def test_pairwise_pairs_seeds_within_one_budget(tmp_path):
    budgets = {100: ((0.30, 0.40), (0.32, 0.44)), 200: ((0.20, 0.25), (0.22, 0.29))}
    for budget, per_seed in budgets.items():
        for seed, (fam, sgd) in enumerate(per_seed):
            write_run(tmp_path, optimizer="fam", seed=seed, steps_budget=budget, evals=_final(fam))
            write_run(tmp_path, optimizer="sgd", seed=seed, hparams_key="x", steps_budget=budget,
                      evals=_final(sgd))  # fmt: skip
    write_run(tmp_path, optimizer="sgd", seed=0, hparams_key="x", steps_budget=300)  # no fam
    runs = load_results([tmp_path]).runs
    pw = pairwise(runs, reference="fam", n_boot=N_BOOT)
    assert pw["steps_budget"].tolist() == [100, 200]
    assert pw["pairing"].tolist() == ["paired", "paired"] and pw["n_pairs"].tolist() == [2, 2]
    assert (pw["n_reference"].tolist(), pw["n_other"].tolist()) == ([2, 2], [2, 2])
    # 100 steps: -0.10 and -0.12; 200 steps: -0.05 and -0.07 (pooled, they would mix).
    # Each pair of differences has sd 0.01·√2: half-width t_{0.975,1} · 0.01.
    assert pw["delta"].tolist() == pytest.approx([-0.11, -0.06])
    assert pw["ci_low"].tolist() == pytest.approx([-0.11 - 0.01 * T975_1, -0.06 - 0.01 * T975_1])
    assert pw["ci_high"].tolist() == pytest.approx([-0.11 + 0.01 * T975_1, -0.06 + 0.01 * T975_1])
    shown = pairwise_display(pw)
    assert list(shown.columns[:2]) == ["budget", "comparison"]
    assert shown["budget"].tolist() == ["100 steps", "200 steps"]
    assert shown["pairing"].tolist() == ["paired (2 seeds)", "paired (2 seeds)"]
    # Pairs at one budget only, of runs at several: the budget still says which.
    only_100 = pairwise(runs[runs["steps_budget"] != 200], reference="fam", n_boot=N_BOOT)
    assert pairwise_display(only_100)["budget"].tolist() == ["100 steps"]
    one_budget = pairwise(runs[runs["steps_budget"] == 100], reference="fam", n_boot=N_BOOT)
    assert "budget" not in pairwise_display(one_budget)


def test_pairwise_on_test_wer_and_no_reference(grid):
    pw = pairwise(grid.runs, reference="fam", metrics=("final_dev_wer", "test_wer"), n_boot=N_BOOT)
    assert set(pw["metric"]) == {"final_dev_wer", "test_wer"}
    assert pw.query("metric == 'test_wer' and other == 'adamw'").iloc[0]["delta"] == pytest.approx(
        0
    )
    no_fam = grid.runs[grid.runs["optimizer"] != "fam"]
    assert pairwise(no_fam, reference="fam").empty


# --------------------------------------------------------------------------- formats


def test_formats(tmp_path, grid):
    agg = aggregate(grid.runs, grid.metrics, n_boot=N_BOOT)
    csv = write_table(agg, tmp_path / "out" / "c.csv", "csv")
    back = pd.read_csv(csv)
    assert back["final_dev_wer_mean"].tolist() == pytest.approx(agg["final_dev_wer_mean"].tolist())
    parquet = write_table(agg, tmp_path / "c.parquet", "parquet")
    assert pd.read_parquet(parquet)["n_diverged"].tolist() == [0, 0, 0, 1]
    assert agg["steps_budget"].tolist() == [100] * 4 and agg["time_budget_s"].isna().all()
    md = to_markdown(comparison_display(agg))
    lines = md.splitlines()
    assert lines[0].startswith("| optimizer | hparams | seeds | final dev WER | 95% CI |")
    assert lines[1].startswith("|---|")
    assert len(lines) == 2 + 4
    assert "0.320 ± 0.020" in lines[3]  # adamw, then fam
    assert not list(tmp_path.glob("**/*.tmp"))
    with pytest.raises(ConfigError, match="unknown format 'xml'; choose one of table, markdown"):
        check_format("xml")


def test_markdown_escapes_pipes():
    md = to_markdown(pd.DataFrame({"a|b": ["x|y"]}))
    assert md.splitlines()[0] == "| a\\|b |" and md.splitlines()[2] == "| x\\|y |"
