"""Performance profiles and speedups against hand calculations over two toy workloads."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from rundirs import write_run
from scipy import stats
from typer.testing import CliRunner

import fambench.cli as cli
from fambench.analysis import load_results
from fambench.analysis.aggregate import aggregate
from fambench.analysis.profiles import (
    Workloads,
    axis_runs,
    performance_profile,
    performance_ratios,
    profile_scores,
    run_times,
    speedups,
    workload_times,
)
from fambench.analysis.tables import timing_text
from fambench.errors import ConfigError
from fambench.plots import plot_profile

cli._register_commands()

NEVER = None  # a seed that never reaches the target (0.6 in write_run)


def _run(root, preset, optimizer, seed, seconds, final=0.4, **kw):
    """A run whose first evaluation (step 50) is at ``seconds``: its time to target 0.6 is
    ``seconds``, or it never reaches the target (``seconds`` NEVER)."""
    if seconds is NEVER:
        evals = ((50, 10.0, 0.9), (100, 20.0, 0.8))
    else:
        evals = ((50, float(seconds), 0.5), (100, 2.0 * seconds, final))
    return write_run(root, preset=preset, optimizer=optimizer, seed=seed, evals=evals, **kw)


@pytest.fixture
def toy(tmp_path):
    """w1: fam 8/10/30 s (median 10), adamw 20/18/never (20), sgd worse WER; w2: fam
    30 s, adamw never. A contended fam seed (1 s) on w1 must not count."""
    for seed, t in enumerate((8, 10, 30)):
        _run(tmp_path, "w1", "fam", seed, t)
    _run(tmp_path, "w1", "fam", 3, 1, contended=True)
    for seed, t in enumerate((20, 18, NEVER)):
        _run(tmp_path, "w1", "adamw", seed, t, final=0.45)
    for seed in range(3):
        _run(tmp_path, "w1", "sgd", seed, 12, final=0.55)
    for seed in range(3):
        _run(tmp_path, "w2", "fam", seed, 30)
        _run(tmp_path, "w2", "adamw", seed, NEVER)
        _run(tmp_path, "w2", "sgd", seed, 60)
    return load_results([tmp_path])


@pytest.fixture
def toy_dir(toy, tmp_path):
    return tmp_path


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def test_times_are_medians_with_misses_infinite_and_contended_left_out(toy):
    times = run_times(toy.runs, toy.metrics)
    table = workload_times(times)
    assert table.loc["fam", "w1"] == 10.0  # the contended 1 s seed is left out
    assert table.loc["adamw", "w1"] == 20.0  # median of 18, 20, ∞
    assert table.loc["sgd", "w1"] == 12.0
    assert math.isinf(table.loc["adamw", "w2"])
    with_contended = workload_times(run_times(toy.runs, toy.metrics, include_contended=True))
    assert with_contended.loc["fam", "w1"] == 9.0  # median of 1, 8, 10, 30


def test_the_times_of_runs_on_emulated_bf16_are_left_out_and_their_wer_kept(tmp_path):
    for seed, t in enumerate((8, 10, 30)):
        _run(tmp_path, "w3", "fam", seed, t, precision="bf16", final=0.3)
    _run(tmp_path, "w3", "fam", 3, 1, precision="bf16", bf16_native=False, final=0.1)
    results = load_results([tmp_path])
    assert results.runs["bf16_emulated"].tolist().count(True) == 1
    for include_contended in (False, True):
        times = run_times(results.runs, results.metrics, include_contended=include_contended)
        assert workload_times(times).loc["fam", "w3"] == 10.0  # not 9: the 1 s seed is out
    (row,) = aggregate(results.runs, results.metrics, target_wer=0.6).to_dict("records")
    assert (row["n_seeds"], row["n_timed"], row["n_bf16_emulated"]) == (4, 3, 1)
    assert row["final_dev_wer_mean"] == pytest.approx((0.3 * 3 + 0.1) / 4)
    assert timing_text(row) == "1 of 4 on emulated bf16, left out"


def test_profile_and_score_match_a_hand_calculation(toy):
    ratios = performance_ratios(workload_times(run_times(toy.runs, toy.metrics)))
    # w1: best 10 (fam): fam 1, adamw 2, sgd 1.2; w2: best 30: fam 1, adamw ∞, sgd 2.
    assert ratios.loc["fam"].tolist() == [1.0, 1.0]
    assert ratios.loc["adamw", "w1"] == 2.0 and math.isinf(ratios.loc["adamw", "w2"])
    assert ratios.loc["sgd"].tolist() == pytest.approx([1.2, 2.0])
    profile = performance_profile(ratios, [1.0, 1.5, 2.0, 4.0])
    assert profile.loc["sgd"].tolist() == [0.0, 0.5, 1.0, 1.0]
    assert profile.loc["adamw"].tolist() == [0.0, 0.0, 0.5, 0.5]
    scores = profile_scores(ratios)
    assert scores["fam"] == pytest.approx(1.0)
    assert scores["adamw"] == pytest.approx(((4 - 2) / 3 + 0) / 2)
    assert scores["sgd"] == pytest.approx(((4 - 1.2) / 3 + (4 - 2) / 3) / 2)
    # The integral, numerically: the mean of ρ over a fine τ grid on [1, 4].
    taus = np.linspace(1, 4, 30001)
    numeric = performance_profile(ratios, taus).mean(axis=1)
    assert numeric["sgd"] == pytest.approx(scores["sgd"], abs=1e-3)


def test_a_workload_without_a_time_for_someone_is_left_out(toy, caplog):
    table = workload_times(run_times(toy.runs, toy.metrics))
    table.loc["sgd", "w2"] = math.nan
    ratios = performance_ratios(table)
    assert list(ratios.columns) == ["w1"]
    assert "workload w2 left out of the profile: no time for sgd" in caplog.text


def test_steps_count_every_seed_contended_or_not(toy):
    times = run_times(toy.runs, toy.metrics)
    steps = workload_times(times, "steps")
    # Every run first reaches the target at its first evaluation, step 50; adamw's w1 seeds
    # are 50, 50, ∞ and the contended fam seed counts too.
    assert steps.loc["fam", "w1"] == 50.0 and steps.loc["adamw", "w1"] == 50.0
    assert math.isinf(steps.loc["adamw", "w2"])
    fam_w1 = times[(times["config"] == "fam") & (times["preset"] == "w1")]
    assert len(fam_w1) == 4 and len(axis_runs(fam_w1, "steps")) == 4
    assert len(axis_runs(fam_w1, "time")) == 3


def test_by_steps_and_by_time_rank_differently(tmp_path):
    """cheap: reaches the target late (step 87.5 of 100) with cheap steps (17.5 s); costly:
    early (step 50) with costly ones (30 s). Time ranks cheap first, steps costly."""
    for preset in ("w1", "w2"):
        for seed in range(3):
            cheap = ((50, 10.0, 0.9), (100, 20.0, 0.5))  # 0.6 at 3/4 of the way: 87.5, 17.5 s
            write_run(tmp_path, preset=preset, optimizer="cheap", seed=seed, evals=cheap)
            costly = ((50, 30.0, 0.5), (100, 60.0, 0.4))
            write_run(tmp_path, preset=preset, optimizer="costly", seed=seed, evals=costly)
    workloads = Workloads.of(load_results([tmp_path]), reference="cheap")
    assert workloads.by_time.table.loc["cheap"].tolist() == [17.5, 17.5]
    assert workloads.by_steps.table.loc["cheap"].tolist() == [87.5, 87.5]
    by_time = profile_scores(workloads.by_time.ratios)
    by_steps = profile_scores(workloads.by_steps.ratios)
    assert by_time["cheap"] == 1.0 and by_time["costly"] == pytest.approx((4 - 30 / 17.5) / 3)
    assert by_steps["costly"] == 1.0 and by_steps["cheap"] == pytest.approx((4 - 1.75) / 3)


def test_speedup_against_the_best_baseline(toy):
    table = speedups(run_times(toy.runs, toy.metrics), reference="fam")
    w1 = table[table["preset"] == "w1"].set_index("config")
    # adamw's median final WER (0.45) beats sgd's (0.55): adamw is the best baseline.
    assert set(w1["baseline"]) == {"adamw"}
    assert w1.loc["fam", "speedup"] == pytest.approx(20 / 10)
    logs = [math.log(20 / 8), math.log(18 / 10)]  # seeds where both reached; seed 2 missed
    half = stats.t.ppf(0.975, 1) * np.std(logs, ddof=1) / math.sqrt(2)
    assert w1.loc["fam", "n"] == 2
    assert w1.loc["fam", "ratio_low"] == pytest.approx(math.exp(np.mean(logs) - half))
    assert w1.loc["fam", "ratio_high"] == pytest.approx(math.exp(np.mean(logs) + half))
    w2 = table[table["preset"] == "w2"].set_index("config")
    assert set(w2["baseline"]) == {"sgd"}  # adamw never reached, its final WER is worse
    assert w2.loc["fam", "speedup"] == pytest.approx(2.0)
    named = speedups(run_times(toy.runs, toy.metrics), reference="fam", baseline="sgd")
    assert named.set_index(["preset", "config"]).loc[("w1", "fam"), "speedup"] == 1.2


def test_aggregate_leaves_contended_runs_out_of_time_statistics(toy):
    agg = aggregate(toy.runs, toy.metrics)
    fam = agg[(agg["preset"] == "w1") & (agg["optimizer"] == "fam")].iloc[0]
    assert (fam["n_seeds"], fam["n_contended"], fam["n_timed"]) == (4, 1, 3)
    assert fam["time_to_target_s"] == pytest.approx(np.mean([8, 10, 30]))
    assert fam["time_to_target_median_s"] == 10.0
    assert fam["reached"] == 4
    assert fam["final_dev_wer_n"] == 4  # WER statistics keep every completed seed
    every = aggregate(toy.runs, toy.metrics, include_contended=True)
    fam = every[(every["preset"] == "w1") & (every["optimizer"] == "fam")].iloc[0]
    assert fam["time_to_target_s"] == pytest.approx(np.mean([1, 8, 10, 30]))
    assert isinstance(agg, pd.DataFrame)


def test_compare_prints_times_profile_scores_and_speedups(toy_dir, monkeypatch):
    monkeypatch.setattr(cli.console, "width", 220)
    plot = toy_dir / "profile.png"
    result = invoke("compare", toy_dir, "--profile-plot", plot)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Time to target per workload" in out and "not reached (0/3)" in out
    assert "Performance profile by time over 2 workloads" in out
    assert "Steps to target per workload" in out
    by_time, by_steps = out.split("Performance profile by ")[1:3]
    by_time = by_time.split("Steps to target")[0]
    assert by_steps.startswith("steps over 2 workloads")
    lines = {line.split()[0]: line.split() for line in by_time.splitlines() if line.strip()}
    assert lines["adamw"][-1] == "0.333" and lines["fam"][-1] == "1.000"
    # By steps everyone reaches the target at its first evaluation (step 50), so only adamw's
    # miss on w2 counts against it.
    lines = {line.split()[0]: line.split() for line in by_steps.splitlines() if line.strip()}
    assert lines["adamw"][-1] == "0.500" and lines["sgd"][-1] == "1.000"
    assert "×2.00" in out and "paired t on log time, n=2" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (toy_dir / "profile_steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = invoke("compare", toy_dir, "--format", "markdown")
    assert "| optimizer | ρ(1) | ρ(1.5) | ρ(2) | ρ(3) | ρ(4) | score [1, 4] |" in markdown.output
    assert "| sgd | 0.00 | 0.50 | 1.00 | 1.00 | 1.00 | 0.800 |" in markdown.output


def test_profile_plot_needs_two_workloads(toy_dir):
    result = invoke("compare", toy_dir, "--preset", "w1", "--profile-plot", toy_dir / "p.png")
    assert result.exit_code == 0  # the comparison itself is fine: a warning, no plot
    assert "needs every configuration's time on at least two workloads" in result.output
    assert not (toy_dir / "p.png").exists()
    workloads = Workloads.of(load_results([toy_dir], preset="w1"), reference="fam")
    with pytest.raises(ConfigError, match="by steps needs .* complete: none of w1"):
        plot_profile(workloads.by_steps, toy_dir / "p.png")


def test_report_has_the_workloads_section_and_plot(toy_dir):
    result = invoke("report", toy_dir)
    assert result.exit_code == 0, result.output
    text = (toy_dir / "report.md").read_text()
    assert (
        "## Across workloads" in text
        and "![Performance profile by time](performance_profile.png)" in text
    )
    assert (toy_dir / "performance_profile.png").is_file()
    assert (
        "| w1 | fam − adamw (best tuned baseline) | -0.167 [-0.669, +0.335] | paired t, n=3 |"
        in (text)
    )
    assert "| w2 | fam − sgd (best tuned baseline) |" in text
    # fam has a fourth seed on w1: the seeds differ, and the design says so.
    assert "| optimizer | w1 | w2 |" in text and "| fam | 4 | 3 |" in text
    assert "They differ: a *screening design*" in text
    # The headline in one table: a row per workload, the best baseline named in its cell.
    assert "| workload | fam − best tuned baseline |" in text
    assert "| w1 | -0.167 [-0.669, +0.335] (adamw; paired t, n=3): inconclusive |" in text
    assert "| optimizer | score by time (2 workloads) | score by steps (2 workloads) |" in text
    assert "| adamw | 0.333 | 0.500 |" in text and "| sgd | 0.800 | 1.000 |" in text
    assert "![Performance profile by steps](performance_profile_steps.png)" in text
    assert (toy_dir / "performance_profile_steps.png").is_file()
    steps = pd.read_csv(toy_dir / "workload_steps.csv").set_index("config")
    assert steps.loc["fam", "w1"] == 50.0 and math.isinf(steps.loc["adamw", "w2"])
    assert "| contended |" in text.replace("contended |", "contended |")
    speed = pd.read_csv(toy_dir / "speedups.csv")
    assert speed.set_index(["preset", "config"]).loc[("w1", "fam"), "speedup"] == 2.0


def test_report_ledger_counts_the_tuning_runs_given(toy_dir, tmp_path_factory):
    tuning = tmp_path_factory.mktemp("tuning")
    _run(tuning, "w1", "adamw", 0, 40)
    result = invoke("report", toy_dir, "--tuning-runs", tuning)
    assert result.exit_code == 0, result.output
    assert "## Compute ledger" in (toy_dir / "report.md").read_text()
    ledger = pd.read_csv(toy_dir / "ledger.csv").set_index(["phase", "optimizer"])
    assert ledger.loc[("tuning", "adamw"), "runs"] == 1
    assert ledger.loc[("study", "(all)"), "runs"] == 19
    (toy_dir / "report.json").write_text(json.dumps({"tuning_runs": [str(tuning)]}))
    assert invoke("report", toy_dir).exit_code == 0  # the file names the same trials
    ledger = pd.read_csv(toy_dir / "ledger.csv").set_index(["phase", "optimizer"])
    assert ledger.loc[("tuning", "adamw"), "runs"] == 1
    (toy_dir / "report.json").write_text('{"tuning": 1}')
    bad = invoke("report", toy_dir)
    assert bad.exit_code != 0 and "report.json: unknown key 'tuning'" in bad.output
    (toy_dir / "report.json").unlink()
    fresh = tmp_path_factory.mktemp("fresh")
    missing = invoke("report", toy_dir, "--out", fresh, "--tuning-runs", tuning / "nowhere")
    assert missing.exit_code != 0 and "nowhere: no such directory" in missing.output
    assert list(fresh.iterdir()) == []  # nothing half-written


def test_target_command_sets_the_median_of_the_best_baseline(tmp_path):
    runs = tmp_path / "runs"
    for seed, (adamw, sgd) in enumerate([(0.5, 0.4), (0.45, 0.42), (0.52, 0.41), (0.48, 0.6),
                                         (0.47, 0.43)]):  # fmt: skip
        _run(runs, "w", "adamw", seed, 5, final=adamw)
        _run(runs, "w", "sgd", seed, 5, final=sgd)
        _run(runs, "w", "fam", seed, 5, final=0.1)  # the reference is no baseline
    few = invoke("target", runs, "--preset", "w", "--no-write", "--hparams-dir", tmp_path)
    assert few.exit_code == 0, few.output
    assert "target dev WER 0.4200" in few.output and "(sgd)" in few.output
    assert not (tmp_path / "targets").exists()
    result = invoke("target", runs, "--preset", "w", "--hparams-dir", tmp_path)
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "targets" / "w.json").read_text())
    assert recorded["target_wer"] == 0.42 and recorded["baseline"] == "sgd"
    assert recorded["seeds"] == [0, 1, 2, 3, 4]
    # compare reads time to the recorded target, given the same directory
    agg = aggregate(*(lambda r: (r.runs, r.metrics))(load_results([runs], hparams_dir=tmp_path)))
    assert set(agg["target_wer"]) == {0.42}
    agg = aggregate(*(lambda r: (r.runs, r.metrics))(load_results([runs])))
    assert set(agg["target_wer"]) == {0.6}  # the runs' own: no target recorded elsewhere
    compared = invoke("compare", runs, "--format", "csv", "--hparams-dir", tmp_path)
    assert compared.exit_code == 0 and ",0.42," in compared.output


def test_target_command_refuses_too_few_seeds(toy_dir):
    result = invoke("target", toy_dir, "--preset", "w1", "--no-write")
    assert result.exit_code == 2
    assert "needs a baseline with 5 completed seeds" in result.output


def test_speedup_text_says_when_most_seeds_missed_the_target():
    from fambench.analysis.tables import speedup_display

    nan, inf = float("nan"), float("inf")
    table = pd.DataFrame(
        [
            # own median ∞ (3 of 5 missed); the 2 seeds both reached give an interval
            {"preset": "w", "baseline": "sgd", "config": "adamw", "speedup": 0.0,
             "ratio_low": 0.68, "ratio_high": 1.64, "n": 2},
            {"preset": "w", "baseline": "sgd", "config": "fam", "speedup": inf,
             "ratio_low": nan, "ratio_high": nan, "n": 0},
            {"preset": "w", "baseline": "sgd", "config": "x", "speedup": 1.25,
             "ratio_low": 1.05, "ratio_high": 1.49, "n": 5},
        ]
    )  # fmt: skip
    rows = speedup_display(table).to_dict("records")
    assert rows[0]["speedup"] == "— (missed the target on most seeds) [0.68, 1.64]"
    assert rows[0]["interval"] == "paired t on log time, n=2 (seeds both reached it)"
    assert rows[1]["speedup"] == "∞ (the baseline missed the target on most seeds)"
    assert rows[1]["interval"] == "—"
    assert rows[2]["speedup"] == "×1.25 [1.05, 1.49]"
    assert rows[2]["interval"] == "paired t on log time, n=5"
