"""Hand-built run directories with known numbers (shared by the compare/plots/report tests),
and the tests of loading them: formats, fallbacks and the clear errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from rundirs import write_run

from fambench.compare import load_results, load_run_dir
from fambench.errors import ResultsError
from fambench.rundir import FORMAT_VERSION, read_metrics

# --------------------------------------------------------------------------- loading tests


def test_load_results_flattens_config_and_summary(tmp_path):
    write_run(tmp_path, optimizer="fam", seed=0)
    write_run(tmp_path, optimizer="adamw", seed=0, hparams_key="lr=0.002")
    rs = load_results([tmp_path])
    assert list(rs.runs["optimizer"]) == ["adamw", "fam"]  # by name
    fam = rs.runs.iloc[1]
    assert fam["status"] == "completed"
    assert fam["final_dev_wer"] == 0.5 and fam["best_dev_wer"] == 0.5
    assert fam["test_wer"] == 0.45
    assert fam["torch"] == "2.14.1" and fam["threads"] == "2" and fam["git_commit"] == "abc1234"
    assert fam["steps_budget"] == 100
    assert set(rs.metrics["run_id"]) == set(rs.runs["run_id"])
    assert len(rs.metrics) == 2 * (10 + 2)  # 10 train rows and 2 evaluations per run


def test_a_single_run_directory_can_be_given(tmp_path):
    run = write_run(tmp_path, optimizer="sgd")
    rs = load_results([run])
    assert list(rs.runs["optimizer"]) == ["sgd"]


def test_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsError, match=r"no runs found"):
        load_results([tmp_path])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "x.txt").write_text("hello")
    with pytest.raises(ResultsError, match=str(tmp_path)):
        load_results([tmp_path])


def test_missing_directory_and_no_paths(tmp_path):
    with pytest.raises(ResultsError, match="no such directory"):
        load_results([tmp_path / "nope"])
    with pytest.raises(ResultsError, match="no results directory"):
        load_results([])


@pytest.mark.parametrize("version", [None, 1, FORMAT_VERSION + 1])
def test_other_format_version_names_the_directory(tmp_path, version):
    run = write_run(tmp_path, format_version=version)
    with pytest.raises(ResultsError) as err:
        load_results([tmp_path])
    message = str(err.value)
    assert str(run) in message and f"format {FORMAT_VERSION}" in message
    assert "\n" not in message


def test_broken_json_is_a_clear_error(tmp_path):
    run = write_run(tmp_path)
    (run / "summary.json").write_text("{not json")
    with pytest.raises(ResultsError, match=r"summary.json: not valid JSON"):
        load_results([tmp_path])


def test_csv_fallback_and_eval_wall_s_filled(tmp_path):
    run = write_run(tmp_path, parquet=False, evals=[(50, 10.0, 0.9), (100, 20.0, 0.5)])
    frame = pd.read_csv(run / "metrics.csv")
    frame.loc[frame["dev_wer"].notna(), "wall_s"] = np.nan  # a writer that left them empty
    frame.to_csv(run / "metrics.csv", index=False)
    metrics = read_metrics(run)
    evals = metrics[metrics["dev_wer"].notna()]
    assert list(evals["wall_s"]) == pytest.approx([10.0, 20.0])  # from the train rows' curve


def test_run_without_summary_reads_as_running(tmp_path):
    run = write_run(tmp_path, summary=False, evals=[(50, 10.0, 0.8), (100, 20.0, 0.7)])
    row, metrics = load_run_dir(run)
    assert row["status"] == "running"
    assert row["final_dev_wer"] == 0.7 and row["best_dev_wer"] == 0.7  # from the metrics
    assert math.isnan(row["test_wer"])
    assert len(metrics) == 12


def test_summary_without_config_is_an_error(tmp_path):
    run = write_run(tmp_path)
    (run / "config.json").unlink()
    with pytest.raises(ResultsError, match="without config.json"):
        load_results([tmp_path])


def test_preset_filter(tmp_path):
    write_run(tmp_path, preset="synth")
    write_run(tmp_path, preset="ci")
    assert list(load_results([tmp_path], preset="ci").runs["preset"]) == ["ci"]
    with pytest.raises(
        ResultsError, match=r"no runs of preset 'smoke' \(presets found: ci, synth\)"
    ):
        load_results([tmp_path], preset="smoke")


def test_nested_directories_are_searched(tmp_path):
    write_run(tmp_path / "a", optimizer="fam")
    write_run(tmp_path / "b" / "deeper", optimizer="sgd")
    rs = load_results([tmp_path])
    assert sorted(rs.runs["optimizer"]) == ["fam", "sgd"]
