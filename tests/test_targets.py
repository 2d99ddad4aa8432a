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


def test_record_and_load_round_trip(tmp_path):
    target = median_target("w", {"adamw": ADAMW}, "src")
    path = record_target(target, tmp_path / "w.json")
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


def test_the_target_is_not_part_of_the_run_identity(smoke, tmp_path, monkeypatch):
    before = plan_run(smoke("sgd"))
    assert "target_wer" not in get_preset("smoke").identity()
    monkeypatch.setattr(fambench.targets, "TARGETS_DIR", tmp_path)
    record_target(dataclasses.replace(WorkloadTarget("smoke", 0.7, "m"), values=(0.7,)))
    after = plan_run(smoke("sgd"))
    assert after.run_id == before.run_id
    assert (before.target_wer, after.target_wer) == (1.0, 0.7)
