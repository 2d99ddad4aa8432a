"""Honest wall-clock: CPU samples, the contention rule, and what a real run records."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

from fambench.machine import (
    CONTENTION_TOLERANCE_CORES,
    CpuInterval,
    CpuSample,
    is_contended,
    sample_cpu,
    usable_cores,
)
from fambench.training import run_training


def test_interval_splits_busy_time_into_ours_and_others():
    start, end = CpuSample(100.0, 1.0, 50.0), CpuSample(110.0, 11.0, 75.0)
    interval = CpuInterval.between(start, end)
    assert (interval.wall_s, interval.own_cpu_s, interval.others_cpu_s) == (10.0, 10.0, 15.0)
    assert interval.others_cores == pytest.approx(1.5)
    assert math.isnan(CpuInterval.between(start, start).others_cores)


@pytest.mark.parametrize(
    ("others", "threads", "cores", "expected"),
    [
        (1.0, 1, 2, False),  # two 1-thread runs on 2 cores: each leaves the other a core
        (4 / 3, 1, 2, True),  # three 1-thread runs on 2 cores: others get 2/3 core each
        (1.0, 2, 2, True),  # two 2-thread runs on 2 cores
        (0.2, 2, 2, False),  # background noise
        (0.25, 2, 2, False),  # exactly the tolerance
        (0.26, 2, 2, True),
        (3.0, 4, 16, False),
        (math.nan, 1, 2, False),
    ],
)
def test_contention_rule(others, threads, cores, expected):
    assert CONTENTION_TOLERANCE_CORES == 0.25
    assert is_contended(others, threads, cores) is expected


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_own_cpu_time_is_counted_as_ours():
    before = sample_cpu()
    _spin(0.3)
    interval = CpuInterval.between(before, sample_cpu())
    assert interval.own_cpu_s >= 0.28
    assert interval.wall_s >= interval.own_cpu_s * 0.95


@pytest.mark.subprocess
def test_other_processes_are_counted_as_others():
    code = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass\n"
    spinners = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    time.sleep(0.3)  # past their start-up
    before = sample_cpu()
    time.sleep(1.0)
    interval = CpuInterval.between(before, sample_cpu())
    for proc in spinners:
        proc.wait(timeout=30)
    assert interval.own_cpu_s < 0.1
    assert interval.others_cores > 0.5


def test_a_run_records_cpu_time_threads_load_and_contention(smoke):
    outcome = run_training(smoke("adamw"))
    summary = json.loads((outcome.run_dir / "summary.json").read_text())
    assert summary["threads"] == 1
    assert summary["cores"] == usable_cores()
    assert 0 < summary["cpu_s"] <= summary["wall_s"] * (usable_cores() + 0.1)
    assert summary["wall_s"] >= summary["train_s"]
    # Other processes cannot keep more cores busy than the machine has (sampling noise aside).
    for key in ("others_cores", "others_cores_peak"):
        assert 0 <= summary[key] <= usable_cores() + 0.5, (key, summary[key])
    assert isinstance(summary["contended"], bool)
    if hasattr(__import__("os"), "getloadavg"):
        assert summary["load_start"] >= 0 and summary["load_end"] >= 0
