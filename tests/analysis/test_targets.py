"""Workload targets: AlgoPerf's median-of-the-best-baseline rule, the files, run identity."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import fambench.targets
from fambench.errors import ConfigError
from fambench.targets import (
    WorkloadTarget,
    baseline_values,
    load_target,
    median_target,
    record_target,
    with_measurements,
)
from fambench.training import plan_run
from fambench.workloads import get_preset

ADAMW = {0: 0.80, 1: 0.82, 2: 0.78, 3: 0.85, 4: 0.81}  # median 0.81
SGD = {0: 0.83, 1: 0.84, 2: 0.85, 3: 0.86, 4: 0.90}  # median 0.85


def test_target_is_the_median_of_the_best_baseline():
    target = median_target("w", {"sgd": SGD, "adamw": ADAMW}, "results/x")
    assert target.wer == pytest.approx(0.81)
    assert target.baseline == "adamw"
    assert target.seeds == (0, 1, 2, 3, 4)
    assert target.values == (0.80, 0.82, 0.78, 0.85, 0.81)
    assert "adamw 0.8100, sgd 0.8500" in target.method
    assert target.source == "results/x"


def test_a_baseline_short_of_five_seeds_is_not_eligible():
    few = {0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1}  # best, but only four seeds
    assert median_target("w", {"fast": few, "sgd": SGD}, "x").baseline == "sgd"
    with pytest.raises(ConfigError, match=r"needs a baseline with 5 completed seeds.*fast: 4"):
        median_target("w", {"fast": few}, "x")


def test_baseline_values_keep_completed_runs():
    rows = [
        {"optimizer": "adamw", "seed": 0, "status": "completed", "final_dev_wer": 0.8},
        {"optimizer": "adamw", "seed": 1, "status": "diverged", "final_dev_wer": 1.0},
        {"optimizer": "sgd", "seed": 0, "status": "completed", "final_dev_wer": 0.9},
    ]
    assert baseline_values(rows) == {"adamw": {0: 0.8}, "sgd": {0: 0.9}}


def _row(seed, threads, wer, cer, seconds, **more):
    return {
        "optimizer": "adamw", "seed": seed, "status": "completed", "threads": threads,
        "final_dev_wer": wer, "final_dev_cer": cer, "train_s": seconds - 10, "eval_s": 10.0,
        "contended": False, **more,
    }  # fmt: skip


def test_a_seed_at_fewer_threads_sets_the_target_and_timings_come_per_thread_count(tmp_path):
    rows = [_row(s, 1, 0.2 + s / 100, 0.06 + s / 100, 600 + 10 * s) for s in range(5)]
    rows += [
        _row(0, 2, 0.5, 0.5, 400),  # the same seed at 2 threads: timed, not a value
        _row(1, 2, 0.5, 0.5, 100, contended=True),  # contended: no timing
        _row(2, 1, 0.9, 0.9, 9999, status="diverged"),
    ]
    values = baseline_values(rows)
    assert values == {"adamw": {s: 0.2 + s / 100 for s in range(5)}}
    target = with_measurements(median_target("w", values, "src"), rows)
    assert target.wer == pytest.approx(0.22) and target.seeds == (0, 1, 2, 3, 4)
    assert target.cer_values == pytest.approx([0.06, 0.07, 0.08, 0.09, 0.10])
    assert target.run_seconds == ((1, 620.0, 5), (2, 400.0, 1))
    path = record_target(target, tmp_path)
    assert path == tmp_path / "targets" / "w.json" and load_target("w", None, path) == target


def test_record_and_load_round_trip(tmp_path):
    target = median_target("w", {"adamw": ADAMW}, "src")
    path = record_target(target, tmp_path)
    assert load_target("w", 0.5, path) == target
    assert load_target("w", 0.5, tmp_path / "none.json") == WorkloadTarget(
        "w", 0.5, "set by hand in the preset"
    )
    path.write_text(json.dumps({"preset": "other", "target_wer": 0.5}))
    with pytest.raises(ConfigError, match="not a target for preset 'w'"):
        load_target("w", 0.5, path)
    path.write_text("{")
    with pytest.raises(ConfigError, match="cannot read the workload target"):
        load_target("w", 0.5, path)


def test_committed_targets_follow_the_rule():
    committed = Path(fambench.targets.__file__).parent / "workloads" / "targets"
    for path in sorted(committed.glob("*.json")):
        target = load_target(path.stem, None, path)
        assert len(target.values) >= 5 and target.baseline
        assert target.wer == pytest.approx(sorted(target.values)[len(target.values) // 2])


def test_the_target_is_not_part_of_the_run_identity(smoke, tmp_path):
    before = plan_run(smoke("sgd"))
    assert "target_wer" not in get_preset("smoke").identity()
    record_target(dataclasses.replace(WorkloadTarget("smoke", 0.7, "m"), values=(0.7,)), tmp_path)
    after = plan_run(dataclasses.replace(smoke("sgd"), hparams_dir=tmp_path))
    assert after.run_id == before.run_id
    assert (before.target_wer, after.target_wer) == (1.0, 0.7)


def test_a_target_needs_one_setting_per_baseline(tmp_path):
    from rundirs import write_run

    from fambench.analysis import load_results
    from fambench.targets import target_from_runs

    for seed in range(5):
        evals = ((50, 10.0, 0.7), (100, 20.0, 0.4 + seed / 100))
        write_run(tmp_path, preset="w", optimizer="adamw", seed=seed, evals=evals)
        write_run(tmp_path, preset="w", optimizer="fam", seed=seed, evals=evals)  # the reference
    runs = load_results([tmp_path]).runs
    target = target_from_runs(runs, "w", "fam", "here")
    assert (target.baseline, target.seeds) == ("adamw", (0, 1, 2, 3, 4))
    assert target.wer == pytest.approx(0.42)
    write_run(tmp_path, preset="w", optimizer="adamw", seed=5, hparams_key="lr=0.1")
    with pytest.raises(
        ConfigError, match="a baseline ran w with several hyperparameter settings under here"
    ):
        target_from_runs(load_results([tmp_path]).runs, "w", "fam", "here")
