"""Run identity and time to target, end to end: train smoke runs, then compare them."""

from __future__ import annotations

import dataclasses
import io

import pandas as pd
import pytest
from typer.testing import CliRunner

import fambench.cli as cli
import fambench.training.plan as plan_module
from fambench.analysis import load_results
from fambench.analysis.aggregate import aggregate
from fambench.optim import get_optimizer_spec
from fambench.rundir import eval_row, load_run, train_row
from fambench.training import plan_run, run_training
from fambench.training.record import run_summary
from fambench.training.state import TrainState
from fambench.workloads import get_preset


def _with_preset(monkeypatch, **changes):
    preset = dataclasses.replace(get_preset("smoke"), **changes)
    monkeypatch.setattr(plan_module, "get_preset", lambda name: preset)


def test_a_description_edit_keeps_the_run_id(smoke, monkeypatch):
    before = plan_run(smoke("adamw")).run_id
    _with_preset(monkeypatch, description="reworded: a tiny corpus and model, for the tests")
    assert plan_run(smoke("adamw")).run_id == before
    _with_preset(monkeypatch, batch_frames=2999)  # a setting that changes the result
    assert plan_run(smoke("adamw")).run_id != before


def test_a_changed_registry_default_changes_the_run_id(smoke, monkeypatch):
    before = plan_run(smoke("adamw"))
    assert "eps" not in before.explicit_hparams  # not tuned, not overridden: a default
    monkeypatch.setitem(get_optimizer_spec("adamw").defaults, "eps", 1e-6)
    after = plan_run(smoke("adamw"))
    assert after.hyperparameters["eps"] == 1e-6
    assert after.run_id != before.run_id


def _invoke(*args) -> str:
    cli._register_commands()
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_summary_interpolates_time_to_target_between_bracketing_evaluations(smoke, monkeypatch):
    _with_preset(monkeypatch, target_wer=0.6)
    plan = plan_run(smoke("sgd"))
    state = TrainState(step=30, train_s=25.0)
    state.rows += [
        train_row(10, 5.0, 3.0, 0.1, 1.0),
        eval_row(15, 10.0, {"wer": 0.9, "cer": 0.5, "loss": 2.0}, 1.0),
        eval_row(30, 20.0, {"wer": 0.5, "cer": 0.3, "loss": 1.0}, 1.0),
    ]
    summary = run_summary(plan, state, "completed", "done")
    assert summary.time_to_target_s == pytest.approx(17.5)  # 10 + (0.9-0.6)/(0.9-0.5) * 10


def test_a_trained_run_compares_with_the_time_to_target_of_its_summary(smoke):
    outcome = run_training(smoke("sgd", steps=30))
    summary = load_run(outcome.run_dir).summary
    assert summary.status == "completed" and summary.time_to_target_s is not None
    results = load_results([outcome.run_dir])
    # Tests share the cores: the run may well be contended, and its time is wanted anyway.
    row = aggregate(results.runs, results.metrics, include_contended=True).iloc[0]
    assert row["time_to_target_s"] == summary.time_to_target_s
    assert row["final_dev_wer_mean"] == summary.final_dev_wer
    table = pd.read_csv(
        io.StringIO(_invoke("compare", outcome.run_dir, "--format", "csv", "--include-contended"))
    )
    assert table.loc[0, "time_to_target_s"] == pytest.approx(summary.time_to_target_s, rel=1e-12)
    assert table.loc[0, "n_completed"] == 1 and table.loc[0, "optimizer"] == "sgd"
    shown = _invoke("compare", outcome.run_dir, "--format", "markdown")
    assert f"{summary.final_dev_wer:.3f}" in shown
