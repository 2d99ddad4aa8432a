"""The committed reports regenerate, from the committed runs, to the same tables and numbers
(tests/report_check.py: report.md, comparison.md and every CSV beside them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_check import check, compared_files

import fambench.targets
from fambench.hparams_dirs import SHIPPED_DIR

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # each regenerates a whole report


@pytest.mark.parametrize("results", ["results/study", "results/study-ci", "results/workloads"])
def test_a_committed_report_regenerates_to_the_same_numbers(results, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the report names its source as the committed one does
    # Times to target are read against the targets the package ships, as when committed.
    monkeypatch.setattr(fambench.targets, "SHIPPED_TARGETS_DIR", SHIPPED_DIR)
    assert {"report.md", "comparison.csv", "pairwise.csv"} <= set(compared_files(Path(results)))
    differences, _ = check(Path(results), tmp_path)
    assert differences == []
