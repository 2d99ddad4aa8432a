"""The field's baselines through every command the built-ins go through: a tuning study, a
grid with its comparison, and the report with each run's optimizer code and version."""

from __future__ import annotations

import json
from importlib import metadata

import pandas as pd
import pytest
from typer.testing import CliRunner

import fambench.cli as cli
from fambench.rundir import find_run_dirs, load_run

BASELINES = ("nadamw", "sfadamw", "soap", "muon", "lion")


def invoke(*args) -> tuple[int, str]:
    cli._register_commands()
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    return result.exit_code, result.output


def test_schedule_free_is_tuned_like_any_optimizer(
    synth_corpus, smoke_cache, tmp_path, hparams_dir
):
    out = tmp_path / "tune"
    code, output = invoke(
        "tune", "--preset", "smoke", "--optimizer", "sfadamw", "--trials", "2",
        "--data", synth_corpus, "--cache-dir", smoke_cache, "--out", out, "--threads", "1",
        "--hparams-dir", hparams_dir,
    )  # fmt: skip
    assert code == 0, output
    trials = pd.read_csv(out / "smoke-sfadamw-trials.csv")
    assert list(trials["status"]) == ["completed", "completed"]
    assert len(set(trials["lr"])) == 2 and trials["final_dev_wer"].notna().all()
    for run_dir in find_run_dirs([out / "trials"]):
        config = load_run(run_dir).config
        assert config.schedule["shape"] == "warmup-only"
        assert config.optimizer_capabilities["norm_batches"] == 50
    best = trials.loc[trials["final_dev_wer"].idxmin()]
    recorded = json.loads((hparams_dir / "tuned" / "smoke.json").read_text())
    recorded = recorded["optimizers"]["sfadamw"]
    assert recorded["lr"] == pytest.approx(best["lr"])
    assert recorded["betas"][1] == pytest.approx(best["betas.1"])


def test_a_grid_of_the_baselines_compares_and_reports(synth_corpus, smoke_cache, tmp_path):
    out = tmp_path / "grid"
    code, output = invoke(
        "bench", "--preset", "smoke", "--optimizers", ",".join(BASELINES), "--seeds", "1",
        "--data", synth_corpus, "--cache-dir", smoke_cache, "--out", out, "--threads", "1",
    )  # fmt: skip
    assert code == 0, output
    runs = {load_run(r).config.optimizer: load_run(r) for r in find_run_dirs([out])}
    assert set(runs) == set(BASELINES)
    assert {r.status for r in runs.values()} == {"completed"}
    code, output = invoke("report", out)
    assert code == 0, output
    report = (out / "report.md").read_text()
    for name in BASELINES:
        assert f"| {name} " in report or f"| {name}|" in report, name
    for distribution in ("schedulefree", "pytorch-optimizer", "torch"):
        assert f"{distribution} {metadata.version(distribution)}" in report, distribution
    comparison = pd.read_csv(out / "comparison.csv")
    assert set(comparison["optimizer"]) == set(BASELINES)
