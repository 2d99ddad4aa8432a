"""The compute ledger against hand sums over a few run directories."""

from __future__ import annotations

import json

import pytest
from rundirs import write_run

from fambench.analysis.ledger import compute_ledger, ledger_display


def _run(root, optimizer, seed, *, train_s, cpu_s, threads, contended, **precision):
    run_dir = write_run(
        root, optimizer=optimizer, seed=seed, train_s=train_s, contended=contended,
        evals=[(50, train_s / 2, 0.7), (100, train_s, 0.5)], **precision,
    )  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.update(cpu_s=cpu_s, threads=threads)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def test_ledger_sums_hours_per_phase_and_optimizer(tmp_path):
    tuning, study = tmp_path / "tuning", tmp_path / "study"
    # eval_s is the number of evaluations (2 s each run): thread s = (train_s + 2) × threads.
    _run(tuning, "adamw", 0, train_s=3598.0, cpu_s=7200.0, threads=2, contended=False)
    _run(tuning, "fam", 0, train_s=1798.0, cpu_s=1800.0, threads=1, contended=True)
    _run(study, "fam", 0, train_s=1798.0, cpu_s=1800.0, threads=1, contended=False)
    _run(study, "fam", 1, train_s=1798.0, cpu_s=1800.0, threads=1, contended=None)
    # bf16 emulated (counted apart, uncontended or not) and native bf16 (not counted there)
    _run(study, "muon", 0, train_s=3598.0, cpu_s=3600.0, threads=1, contended=False,
         precision="bf16", bf16_native=False)  # fmt: skip
    _run(study, "muon", 1, train_s=1798.0, cpu_s=1800.0, threads=1, contended=False,
         precision="bf16", bf16_native=True)  # fmt: skip
    table = compute_ledger({"tuning": [tuning], "study": [study]})
    rows = table.set_index(["phase", "optimizer"])
    assert list(dict.fromkeys(table["phase"])) == ["tuning", "study"]
    assert rows.loc[("tuning", "adamw"), "thread_h"] == pytest.approx(2.0)
    assert rows.loc[("tuning", "adamw"), "cpu_h"] == pytest.approx(2.0)
    assert rows.loc[("tuning", "(all)"), "thread_h"] == pytest.approx(2.5)
    assert rows.loc[("tuning", "(all)"), "uncontended_share"] == pytest.approx(2.0 / 2.5)
    assert rows.loc[("study", "fam"), "runs"] == 2
    assert rows.loc[("study", "fam"), "unmeasured_runs"] == 1
    assert rows.loc[("study", "fam"), "uncontended_share"] == pytest.approx(0.5)
    assert rows.loc[("study", "fam"), "emulated_bf16_thread_h"] == 0.0
    assert rows.loc[("study", "muon"), "emulated_bf16_thread_h"] == pytest.approx(1.0)
    assert rows.loc[("study", "muon"), "uncontended_thread_h"] == pytest.approx(1.5)
    assert rows.loc[("study", "(all)"), "emulated_bf16_thread_h"] == pytest.approx(1.0)
    assert rows.loc[("tuning", "(all)"), "emulated_bf16_thread_h"] == 0.0
    shown = ledger_display(table).set_index(["phase", "optimizer"])
    assert shown.loc[("tuning", "(all)"), "uncontended share"] == "80%"
    assert shown.loc[("study", "fam"), "thread h"] == "1.00"
    assert shown.loc[("study", "muon"), "emulated bf16 thread h"] == "1.00"
    native_only = compute_ledger({"tuning": [tuning]})
    assert "emulated bf16 thread h" not in ledger_display(native_only).columns
    assert (native_only["emulated_bf16_thread_h"] == 0).all()


def test_an_empty_ledger_has_the_columns(tmp_path):
    run_dir = write_run(tmp_path, summary=False)
    table = compute_ledger({"study": [run_dir]})
    assert table.empty and "uncontended_share" in table.columns
