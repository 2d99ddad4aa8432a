"""Crash safety, proven by killing runs: SIGKILL, SIGTERM and SIGINT at every interesting point
(tests/faults.py), then the same command again. The resumed run must equal an uninterrupted
one bitwise: metric rows, summary (all but timings), model and optimizer state, FAM trace."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from faults import POINTS, SIGNALS, injected, request

from fambench.rundir import RunFiles, load_run
from fambench.training import run_training

OPTIMIZERS = ("fam", "adamw", "sgd")
# The field's baselines: killed (SIGKILL) or stopped (SIGTERM) after a step, inside an
# evaluation (Schedule-Free evaluates at other weights) and half-way through a checkpoint.
BASELINES = ("nadamw", "sfadamw", "soap", "muon", "lion")
BASELINE_POINTS = ("step", "evaluation", "checkpoint")
FAULTS_SCRIPT = Path(__file__).parents[1] / "faults.py"
_SAME = (
    "status",
    "steps",
    "final_dev_wer",
    "final_dev_cer",
    "best_dev_wer",
    "test_wer",
    "test_cer",
)


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fault-cache")


@pytest.fixture(scope="module")
def references(synth_corpus, warm_cache, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs, one per optimizer (the first one fills the warm cache)."""
    out = tmp_path_factory.mktemp("reference-runs")
    runs = {}
    for optimizer in (*OPTIMIZERS, *BASELINES):
        outcome = run_training(request(optimizer, synth_corpus, warm_cache, out))
        assert outcome.status == "completed"
        runs[optimizer] = outcome.run_dir
    return runs


def assert_same_run(a: Path, b: Path) -> None:
    """Bitwise equal results; only wall-clock columns may differ."""
    ra, rb = load_run(a), load_run(b)
    timing = ["train_s", "eval_s"]
    pd.testing.assert_frame_equal(ra.metrics.drop(columns=timing), rb.metrics.drop(columns=timing))
    for field in _SAME:
        assert getattr(ra.summary, field) == getattr(rb.summary, field), field
    ca = torch.load(RunFiles(a).checkpoint, weights_only=False)
    cb = torch.load(RunFiles(b).checkpoint, weights_only=False)
    for name, tensor in ca["model"].items():
        assert torch.equal(tensor, cb["model"][name]), name
    for index, state in ca["optimizer"]["state"].items():
        for key, value in state.items():
            assert _same(value, cb["optimizer"]["state"][index][key]), key
    # Schedule-Free keeps its averaging weights and mode in the groups.
    assert _same(ca["optimizer"]["param_groups"], cb["optimizer"]["param_groups"])
    trace = ra.config.trace
    assert trace == rb.config.trace
    if trace is not None:
        assert (a / trace).read_bytes() == (b / trace).read_bytes()


def _same(a: object, b: object) -> bool:
    """Bitwise equal, through lists, tuples and dicts of tensors (SOAP keeps lists of them)."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _interrupt(optimizer, point, sig, corpus, cache, out) -> None:
    """Run with the fault armed; SIGKILL in a child process, the others in this one."""
    if sig == "KILL":
        args = [sys.executable, str(FAULTS_SCRIPT), optimizer, point, sig, corpus, cache, out]
        child = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600)
        assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
        return
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        injected(point, SIGNALS[sig], monkeypatch) as progress,
    ):
        try:
            outcome = run_training(request(optimizer, corpus, cache, out), progress)
        except KeyboardInterrupt:
            assert point == "features"  # stopped while preparing data: nothing recorded yet
            assert not out.exists() or not any(out.iterdir())
            return
    assert outcome.status == "interrupted", outcome.summary
    assert load_run(outcome.run_dir).status == "interrupted"
    assert RunFiles(outcome.run_dir).checkpoint.is_file()


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", ["KILL", "TERM", "INT"])
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_killed_then_resumed_equals_an_uninterrupted_run(
    optimizer, point, sig, synth_corpus, warm_cache, references, tmp_path
):
    # Before the feature cache exists: a cold cache of its own (the resumed run fills it).
    cache = tmp_path / "cold-cache" if point == "features" else warm_cache
    out = tmp_path / "runs"
    _interrupt(optimizer, point, sig, synth_corpus, cache, out)
    resumed = run_training(request(optimizer, synth_corpus, cache, out))
    assert resumed.status == "completed" and not resumed.skipped
    assert resumed.run_id == references[optimizer].name
    assert_same_run(references[optimizer], resumed.run_dir)
    assert not list(out.rglob("*.tmp")) and not list(cache.rglob("*.tmp"))
    assert not RunFiles(resumed.run_dir).lock.exists()


def test_a_cold_cache_run_equals_a_warm_cache_run(synth_corpus, references, tmp_path):
    cold = run_training(request("fam", synth_corpus, tmp_path / "cache", tmp_path / "runs"))
    assert list((tmp_path / "cache").rglob("feats-*.f16"))  # it computed the features itself
    assert_same_run(references["fam"], cold.run_dir)


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", ["KILL", "TERM"])
@pytest.mark.parametrize("point", BASELINE_POINTS)
@pytest.mark.parametrize("optimizer", BASELINES)
def test_a_baseline_killed_then_resumed_equals_an_uninterrupted_run(
    optimizer, point, sig, synth_corpus, warm_cache, references, tmp_path
):
    out = tmp_path / "runs"
    _interrupt(optimizer, point, sig, synth_corpus, warm_cache, out)
    resumed = run_training(request(optimizer, synth_corpus, warm_cache, out))
    assert resumed.status == "completed" and not resumed.skipped
    assert resumed.run_id == references[optimizer].name
    assert_same_run(references[optimizer], resumed.run_dir)
    ca = torch.load(RunFiles(references[optimizer]).checkpoint, weights_only=False)
    cb = torch.load(RunFiles(resumed.run_dir).checkpoint, weights_only=False)
    assert ("evaluation_model" in ca) == (optimizer == "sfadamw")
    for name, tensor in ca.get("evaluation_model", {}).items():
        assert torch.equal(tensor, cb["evaluation_model"][name]), name
