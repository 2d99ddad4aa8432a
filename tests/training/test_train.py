"""End-to-end training on the smoke preset: files, columns, falling loss, divergence, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from runs import comparable, interrupt_at

from fambench.errors import ConfigError, DataError, ResultsError
from fambench.rundir import METRIC_COLUMNS, SUMMARY_FIELDS, RunFiles, RunLock, hparams_key, load_run
from fambench.training import plan_run, run_training
from fambench.workloads import load_tuned


@pytest.mark.parametrize(
    "optimizer,overrides",
    [("fam", {}), ("adamw", {}), ("sgd", {}), ("torch.optim:RAdam", {"lr": 3e-3})],
)
def test_smoke_run_end_to_end(smoke, optimizer, overrides):
    events = []
    outcome = run_training(smoke(optimizer, overrides=overrides), progress=events.append)
    assert outcome.status == "completed" and not outcome.skipped and not outcome.resumed
    files = RunFiles(outcome.run_dir)
    assert outcome.run_dir.name.startswith(
        f"smoke-{optimizer.replace(':', '_').replace('.', '_')}-s0-"
    )
    for path in (
        files.config,
        files.summary,
        files.metrics_parquet,
        files.metrics_csv,
        files.checkpoint,
        files.tokenizer,
    ):
        assert path.is_file(), path
    assert not files.lock.exists()
    assert (files.root / "fam_trace.jsonl").is_file() == (optimizer == "fam")
    assert not list(files.root.glob(".*.tmp"))

    run = load_run(files.root)
    config, summary, metrics = run.config, run.summary.to_json(), run.metrics
    assert config.trace == ("fam_trace.jsonl" if optimizer == "fam" else None)
    assert config.optimizer == optimizer and config.preset == "smoke"
    assert config.steps == 30 and config.seed == 0
    assert config.provenance["threads"] == 1 and config.provenance["torch"] == torch.__version__
    assert config.model["vocab_size"] == 29
    assert set(summary) == set(SUMMARY_FIELDS)
    assert summary["steps"] == 30 and summary["train_s"] > 0 and summary["peak_memory_mb"] > 0
    assert summary["audio_s_per_s"] > 0 and summary["steps_per_s"] > 0
    assert 0 <= summary["final_dev_wer"] and summary["test_wer"] is not None
    assert summary["best_dev_wer"] <= summary["final_dev_wer"]

    assert list(metrics.columns) == list(METRIC_COLUMNS)
    csv = pd.read_csv(files.metrics_csv)
    pd.testing.assert_frame_equal(csv, metrics, check_dtype=False)
    train = metrics[metrics["train_loss"].notna()]
    evals = metrics[metrics["dev_wer"].notna()]
    assert train["step"].tolist() == list(range(1, 31))  # log_every = 1 in smoke
    assert evals["step"].tolist() == [15, 30]
    assert train[["dev_wer", "dev_cer", "dev_loss", "eval_s"]].isna().all().all()
    assert evals[["train_loss", "lr", "grad_norm"]].isna().all().all()
    assert train["train_s"].is_monotonic_increasing
    assert evals["dev_wer"].iloc[-1] == summary["final_dev_wer"]
    losses = train["train_loss"].to_numpy()
    assert losses[-5:].mean() < losses[:5].mean() - 0.3, losses  # the loss falls
    # warmup -> hold -> cosine: lr rises, then ends far below its peak
    lrs = train["lr"].to_numpy()
    assert lrs[0] < lrs.max() and lrs[-1] < 0.1 * lrs.max()
    assert [e.step for e in events if e.phase == "eval"] == [15, 30]
    assert events[-1].phase == "done"


def test_fam_trace_has_records_of_the_run(smoke):
    outcome = run_training(smoke("fam", steps=20))
    lines = (outcome.run_dir / "fam_trace.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records and {r["step"] for r in records} == {10, 20}
    assert {"step", "param", "group", "handler", "band_ema", "momentum"} <= set(records[0])


def test_divergence_stops_with_status_diverged(smoke):
    outcome = run_training(smoke("adamw", overrides={"lr": 1e6}))
    assert outcome.status == "diverged"
    summary = json.loads(RunFiles(outcome.run_dir).summary.read_text())
    assert summary["status"] == "diverged" and "diverged at step" in summary["message"]
    assert summary["steps"] < 30
    metrics = load_run(outcome.run_dir).metrics
    last = metrics.iloc[-1]
    # Found when the log interval's values come back (smoke logs every step): at the last
    # step taken, whose update was applied.
    assert last["step"] == summary["steps"]
    assert (
        not math.isfinite(last["train_loss"])
        or last["train_loss"] > 1000
        or not (math.isfinite(last["grad_norm"]))
    )
    # A diverged run is finished: the same request reports it without training again.
    again = run_training(smoke("adamw", overrides={"lr": 1e6}))
    assert again.skipped and again.status == "diverged"


@pytest.mark.parametrize(
    "optimizer,overrides,stop",
    [
        ("fam", {}, 22),  # after the step-15 checkpoint, FAM analysis active
        ("adamw", {}, 7),  # before any checkpoint
    ],
)
def test_resume_equals_an_uninterrupted_run(smoke, tmp_path, optimizer, overrides, stop):
    steps = 40 if optimizer == "fam" else 30
    whole = run_training(
        smoke(optimizer, steps=steps, overrides=overrides, out_dir=tmp_path / "whole")
    )
    request = smoke(optimizer, steps=steps, overrides=overrides, out_dir=tmp_path / "split")
    first = run_training(request, progress=interrupt_at(stop))
    assert first.status == "interrupted" and f"step {stop}" in first.summary["message"]
    files = RunFiles(first.run_dir)
    assert files.checkpoint.is_file() and not files.lock.exists()
    assert load_run(files.root).status == "interrupted"
    assert load_run(files.root).metrics["step"].max() == stop

    second = run_training(request)
    assert second.status == "completed" and second.resumed
    assert second.run_id == whole.run_id

    a, b = load_run(whole.run_dir), load_run(second.run_dir)
    pd.testing.assert_frame_equal(comparable(a.metrics), comparable(b.metrics))
    for key in ("final_dev_wer", "final_dev_cer", "best_dev_wer", "test_wer", "steps"):
        assert getattr(a.summary, key) == getattr(b.summary, key)
    state_a = torch.load(RunFiles(whole.run_dir).checkpoint, weights_only=False)
    state_b = torch.load(files.checkpoint, weights_only=False)
    for name, tensor in state_a["model"].items():
        assert torch.equal(tensor, state_b["model"][name]), name
    if optimizer == "fam":
        trace = "fam_trace.jsonl"
        assert (whole.run_dir / trace).read_text() == (files.root / trace).read_text()


def test_finished_run_is_reported_and_force_reruns_it(smoke):
    first = run_training(smoke("sgd", steps=5))
    files = RunFiles(first.run_dir)
    stamp = files.metrics_parquet.stat().st_mtime_ns
    again = run_training(smoke("sgd", steps=5))
    assert again.skipped and again.summary["final_dev_wer"] == first.summary["final_dev_wer"]
    assert files.metrics_parquet.stat().st_mtime_ns == stamp
    forced = run_training(smoke("sgd", steps=5, force=True))
    assert not forced.skipped and forced.status == "completed"
    assert files.metrics_parquet.stat().st_mtime_ns != stamp


def test_a_run_directory_in_use_is_refused(smoke):
    request = smoke("sgd", steps=5)
    run_dir = plan_run(request).run_dir
    run_dir.mkdir(parents=True)
    with RunLock(RunFiles(run_dir).lock), pytest.raises(ResultsError, match="in use"):
        run_training(request)
    assert sorted(p.name for p in run_dir.iterdir()) == []


def test_time_budget_stops_early_and_says_so(smoke):
    outcome = run_training(smoke("sgd", steps=10_000, time_budget_s=0.5))
    assert outcome.status == "completed" and outcome.summary["steps"] < 10_000
    assert "time budget" in outcome.summary["message"]
    assert outcome.summary["final_dev_wer"] is not None  # evaluated at the stop


def test_run_id_depends_on_settings_not_on_where_results_go(smoke, tmp_path):
    base = plan_run(smoke("adamw"))
    assert base.run_id == plan_run(smoke("adamw", out_dir=tmp_path / "elsewhere")).run_id
    assert base.run_id != plan_run(smoke("adamw", seed=1)).run_id
    assert base.run_id != plan_run(smoke("adamw", overrides={"lr": 1e-3})).run_id
    assert base.run_id != plan_run(smoke("adamw", steps=31)).run_id
    defaults = load_tuned("smoke").for_optimizer("adamw")
    assert base.hparams_key == hparams_key(defaults)
    assert base.hyperparameters["betas"] == (0.9, 0.999)  # the optimizer's own default
    tuned = plan_run(smoke("adamw", overrides={"lr": 1e-3}))
    assert tuned.hparams_key == hparams_key({**defaults, "lr": 1e-3})
    assert "lr=0.001" in tuned.hparams_key


@pytest.mark.parametrize(
    "changes,error,match",
    [
        ({"preset": "nope"}, ConfigError, "unknown preset 'nope'; choose one of: synth"),
        ({"optimizer": "nope"}, ConfigError, "unknown optimizer 'nope'"),
        ({"optimizer": "torch.optim:Nope"}, ConfigError, "has no attribute"),
        ({"overrides": {"lrr": 0.1}}, ConfigError, "unknown hyperparameter 'lrr'"),
        ({"overrides": {"lr": -1}}, ConfigError, "Invalid learning rate"),
        ({"overrides": {"lr": "fast"}}, ConfigError, "lr must be a number"),
        ({"overrides": {"debug_dir": "x"}}, ConfigError, "unknown hyperparameter 'debug_dir'"),
        ({"preset": "mini-librispeech", "data_root": None}, ConfigError, "--data ROOT"),
        ({"data_root": Path("/nonexistent/LibriSpeech")}, DataError, "no such directory"),
        ({"steps": 0}, ConfigError, "--steps must be at least 1"),
        ({"time_budget_s": -5.0}, ConfigError, "--time-budget must be positive"),
    ],
)
def test_bad_requests_fail_before_writing_anything(smoke, tmp_path, changes, error, match):
    request = smoke(changes.pop("optimizer", "adamw"), **changes)
    with pytest.raises(error, match=match):
        run_training(request)
    assert not (tmp_path / "results").exists()


def test_missing_subset_and_unwritable_out_are_refused(smoke, tmp_path):
    empty = tmp_path / "corpus" / "LibriSpeech"
    (empty / "train-clean-5").mkdir(parents=True)
    with pytest.raises(DataError, match="subset dev-clean-2 not found"):
        run_training(smoke("adamw", preset="mini-librispeech", data_root=empty.parent))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ResultsError, match="is not a directory"):
        run_training(smoke("adamw", out_dir=blocker / "results"))
    assert blocker.read_text() == "not a directory"
    assert not (tmp_path / "results").exists()


def test_tensorboard_without_the_package_is_a_clear_error(smoke, tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'fambench\[tensorboard\]'"):
            run_training(smoke("adamw", tensorboard=True))
        assert not (tmp_path / "results").exists()
    else:
        outcome = run_training(smoke("adamw", steps=3, tensorboard=True))
        assert list(RunFiles(outcome.run_dir).tensorboard.glob("events.out.tfevents.*"))
