"""The markdown report: its files, tables, provenance, and links that resolve."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from rundirs import trace_records, write_run

from fambench.errors import ResultsError
from fambench.report import write_report

N_BOOT = 1_000


@pytest.fixture
def runs_dir(tmp_path):
    runs = tmp_path / "results"
    for seed, (fam, adamw) in enumerate([(0.30, 0.40), (0.32, 0.41), (0.34, 0.45)]):
        write_run(runs, optimizer="fam", seed=seed, evals=[(50, 10.0, 0.9), (100, 20.0, fam)],
                  trace=trace_records())  # fmt: skip
        write_run(runs, optimizer="adamw", seed=seed, hparams_key="lr=0.002",
                  evals=[(50, 10.0, 0.9), (100, 20.0, adamw)])  # fmt: skip
    write_run(runs, optimizer="sgd", seed=0, hparams_key="lr=0.05", status="diverged",
              evals=[(50, 10.0, 1.0)], message="train loss nan at step 57")  # fmt: skip
    return runs


def _links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_report_files_tables_and_links(tmp_path, runs_dir):
    out = tmp_path / "report"
    report = write_report(runs_dir, out, reference="fam", n_boot=N_BOOT)
    assert report == out / "report.md"
    text = report.read_text()
    for name in ("comparison.csv", "comparison.md", "pairwise.csv"):
        assert (out / name).is_file()
    links = _links(text)
    assert len(links) == 6  # 4 learning curves + FAM momentum + FAM bands
    for link in links:
        assert not link.startswith("/")  # relative: the directory reads well on GitHub
        target = out / link
        assert target.is_file() and target.read_bytes()[:4] == b"\x89PNG"
    # The aggregate table with the known numbers.
    assert "| fam | lr=0.5 | 3 | 0.320 ± 0.020 |" in text
    assert "| sgd | lr=0.05 | 0 | — | — |" in text and "1 diverged" in text
    assert "| fam | lr=0.5 | 3 | 0.320 ± 0.020 | [0.270, 0.370] | t, n=3 |" in text  # Student t
    assert "a Student-t interval of the mean" in text
    # The pairwise line: paired differences -0.10, -0.09, -0.11, a paired t-interval
    # -0.10 ± t_{0.975,2} · 0.01/√3 = -0.10 ± 0.025; three seeds are too few for a verdict.
    assert (
        "| fam − adamw | baseline | final dev WER | -0.100 | [-0.125, -0.075] | paired t, n=3 | "
        "paired (3 seeds) | inconclusive (n = 3; about 5 seeds would resolve a difference this "
        "size) |"
    ) in text
    assert "n ≥ 5 seeds" in text and "power calculation" in text
    # Runs with their status and message, and the provenance.
    assert "| diverged |" in text and "train loss nan at step 57" in text
    assert "| torch | `2.14.1` |" in text and "| git commit | `abc1234` |" in text
    assert "`fambench run --optimizer sgd --seed 0`" in text
    comparison = pd.read_csv(out / "comparison.csv")
    assert comparison["final_dev_wer_mean"].tolist()[:2] == pytest.approx(
        [0.42, 0.32]
    )  # adamw, fam
    assert comparison["final_dev_wer_ci_method"].tolist()[:2] == ["t", "t"]
    assert comparison["final_dev_wer_n"].tolist()[:2] == [3, 3]
    pairs = pd.read_csv(out / "pairwise.csv")
    assert set(pairs["pairing"]) == {"paired"}
    dev = pairs.query("metric == 'final_dev_wer'").iloc[0]
    assert (dev["n"], dev["method"], dev["seeds_needed"]) == (3, "t", 2)
    assert dev["verdict"].startswith("inconclusive (n = 3;")


def test_report_with_bootstrap_intervals(tmp_path, runs_dir):
    text = write_report(
        runs_dir, tmp_path / "b", reference="fam", method="bootstrap", n_boot=N_BOOT
    ).read_text()
    assert "percentile bootstrap of the mean (1,000 resamples" in text
    assert "| fam | lr=0.5 | 3 | 0.320 ± 0.020 |" in text and "| bootstrap, n=3 |" in text
    assert "| paired (3 seeds) | inconclusive (n = 3;" in text  # the same verdict rule


def test_report_defaults_to_the_results_dir(runs_dir):
    report = write_report(runs_dir, reference="fam", n_boot=N_BOOT)
    assert report == runs_dir / "report.md"
    for link in _links(report.read_text()):
        assert (runs_dir / link).is_file()


def test_report_of_an_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsError, match="no runs found"):
        write_report(tmp_path, tmp_path / "out", reference="fam")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_report_without_fam_says_so(tmp_path):
    write_run(tmp_path / "r", optimizer="adamw", hparams_key="a")
    text = write_report(tmp_path / "r", reference="fam", n_boot=N_BOOT).read_text()
    assert "nothing to compare" in text
