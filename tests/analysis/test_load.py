"""Hand-built run directories with known numbers (shared by the compare/plots/report tests),
and the tests of loading them: formats, fallbacks and the clear errors."""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import pandas as pd
import pytest
from rundirs import write_run

from fambench.analysis import load_results
from fambench.analysis.aggregate import aggregate
from fambench.analysis.load import STALE_MESSAGE, load_run_dir
from fambench.errors import ResultsError
from fambench.rundir import FORMAT_VERSION, RunFiles, RunLock, read_metrics

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


def test_runs_of_one_workload_in_two_precisions_are_refused_in_one_line(tmp_path):
    write_run(tmp_path / "a", optimizer="adamw", seed=0)
    write_run(tmp_path / "a", optimizer="adamw", seed=1)
    write_run(tmp_path / "b", optimizer="adamw", seed=2, precision="bf16")
    write_run(tmp_path / "b", preset="ci", optimizer="adamw", seed=0, precision="bf16")
    with pytest.raises(ResultsError) as info:
        load_results([tmp_path])
    message = str(info.value)
    assert "preset 'synth' were trained in bf16 (1 runs) and fp32 (2 runs)" in message
    assert "\n" not in message
    assert load_results([tmp_path / "a"]).runs["precision"].tolist() == ["fp32", "fp32"]
    ci = load_results([tmp_path], preset="ci").runs
    assert ci["precision"].tolist() == ["bf16"]


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
    # The only run cannot be read: nothing to compare is an error (a lone bad run is skipped).
    run = write_run(tmp_path, format_version=version)
    with pytest.raises(ResultsError) as err:
        load_results([tmp_path])
    message = str(err.value)
    assert message.startswith(f"{tmp_path}: no readable run (1 skipped): {run}: config.json ")
    assert "this fambench reads formats 2, 3" in message
    assert "\n" not in message


def test_broken_json_is_a_clear_error(tmp_path):
    run = write_run(tmp_path)
    (run / "summary.json").write_text("{not json")
    with pytest.raises(ResultsError, match=r"summary.json: not valid JSON") as err:
        load_results([tmp_path])
    assert str(run) in str(err.value)


def _write_json(path, data) -> None:
    path.write_text(json.dumps(data))


def _break_version(name: str, version: int):
    def change(run) -> None:
        data = json.loads((run / name).read_text())
        _write_json(run / name, {**data, "format_version": version})

    return change


_VERSION_TAIL = (
    "; this fambench reads formats 2, 3 (written by a different fambench version: "
    "rerun the run or use a matching fambench)"
)
BREAKAGES = {
    "summary not JSON": (
        lambda run: (run / "summary.json").write_text("{not json"),
        "summary.json: not valid JSON (Expecting property name enclosed in double quotes at line 1)",
    ),
    "config not JSON": (
        lambda run: (run / "config.json").write_text('{"preset": "synth",'),
        "config.json: not valid JSON (",
    ),
    "config not an object": (
        lambda run: _write_json(run / "config.json", [1, 2]),
        "config.json: expected a JSON object",
    ),
    "config of format 1": (
        _break_version("config.json", 1),
        "config.json is format 1" + _VERSION_TAIL,
    ),
    "summary of a newer format": (
        _break_version("summary.json", FORMAT_VERSION + 1),
        f"summary.json is format {FORMAT_VERSION + 1}" + _VERSION_TAIL,
    ),
    "no config": (
        lambda run: (run / "config.json").unlink(),
        "summary.json without config.json; not a complete run",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_an_unreadable_run_is_skipped_and_the_others_compared(tmp_path, caplog, breakage):
    change, reason = BREAKAGES[breakage]
    good = write_run(tmp_path, optimizer="sgd", seed=0, evals=[(50, 10.0, 0.9), (100, 20.0, 0.4)])
    bad = write_run(tmp_path, optimizer="fam", seed=0).resolve()
    change(bad)
    with caplog.at_level(logging.WARNING, logger="fambench.analysis.load"):
        rs = load_results([tmp_path])
    assert list(rs.runs["run_id"]) == [good.name]
    assert set(rs.metrics["run_id"]) == {good.name}
    assert len(rs.skipped) == 1
    skipped_dir, skipped_reason = rs.skipped[0]
    assert skipped_dir == bad and skipped_reason.startswith(reason)
    assert [r.getMessage() for r in caplog.records] == [f"skipped run {bad}: {skipped_reason}"]
    row = aggregate(rs.runs, rs.metrics, n_boot=100).iloc[0]
    assert (row["optimizer"], row["n_seeds"], row["final_dev_wer_mean"]) == ("sgd", 1, 0.4)


def test_nothing_readable_is_an_error_naming_the_paths(tmp_path, caplog):
    bad = [write_run(tmp_path / "r", seed=seed) for seed in range(4)]
    for run in bad:
        (run / "summary.json").write_text("[")
    with caplog.at_level(logging.WARNING), pytest.raises(ResultsError) as err:
        load_results([tmp_path / "r"])
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'r'}: no readable run (4 skipped): {bad[0]}: ")
    assert all(str(run) in message for run in bad[:3]) and str(bad[3]) not in message
    assert message.endswith("; and 1 more") and message.count("not valid JSON") == 3
    assert not caplog.records  # the error says it all: no warning per run besides


# --------------------------------------------------------------------------- stale runs


def _leave_lock_behind(run) -> None:
    RunFiles(run).lock.write_text("otherhost 12345\n")  # a lock file nobody holds


@pytest.mark.parametrize(
    ("summary", "prepare"),
    [(False, None), (True, None), (True, _leave_lock_behind), (False, _leave_lock_behind)],
)
def test_a_running_run_whose_process_is_gone_is_stale(tmp_path, summary, prepare):
    run = write_run(tmp_path, status="running", summary=summary, test_wer=None)
    if prepare is not None:
        prepare(run)
    record, _ = load_run_dir(run)
    assert record.status == "stale" and record.message == STALE_MESSAGE
    assert record.numbers["final_dev_wer"] == 0.5  # the numbers are still read


@pytest.mark.parametrize("summary", [False, True])
def test_a_running_run_whose_lock_is_held_is_running(tmp_path, summary):
    run = write_run(tmp_path, status="running", summary=summary, message="training")
    with RunLock(RunFiles(run).lock):
        record, _ = load_run_dir(run)
        assert record.status == "running"
        assert record.message == ("training" if summary else "no summary.json yet")
    record, _ = load_run_dir(run)  # the lock released (its owner gone): stale
    assert record.status == "stale"


@pytest.mark.parametrize("status", ["completed", "diverged", "interrupted"])
def test_a_run_that_ended_is_never_stale(tmp_path, status):
    run = write_run(tmp_path, status=status)
    _leave_lock_behind(run)
    assert load_run_dir(run)[0].status == status


# --------------------------------------------------------------------------- duplicates


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        ("running", "completed", 1),  # the walk meets the stale copy first
        ("completed", "interrupted", 0),
        ("interrupted", "diverged", 1),
        ("running", "interrupted", 1),
    ],
)
def test_a_run_id_found_twice_keeps_the_most_finished_copy(tmp_path, caplog, first, second, kept):
    copies = [
        write_run(
            tmp_path / name, status=status, evals=[(50, 10.0, 0.9), (100, 20.0, wer)]
        ).resolve()
        for name, status, wer in [("a", first, 0.3), ("b", second, 0.6)]
    ]
    with caplog.at_level(logging.WARNING, logger="fambench.analysis.load"):
        rs = load_results([tmp_path])
    assert len(rs.runs) == 1 and rs.runs.iloc[0]["run_dir"] == str(copies[kept])
    assert rs.runs.iloc[0]["final_dev_wer"] == [0.3, 0.6][kept]
    assert rs.metrics["dev_wer"].dropna().tolist() == [0.9, [0.3, 0.6][kept]]
    status = (first, second)[kept].replace("running", "stale")  # no live owner: stale
    dropped = copies[1 - kept]
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"run {rs.runs.iloc[0]['run_id']} found twice: kept {copies[kept]} ({status}), "
        f"ignored {dropped} ("
    )


@pytest.mark.parametrize("newer", [0, 1])
def test_a_run_id_found_twice_with_one_status_keeps_the_newest(tmp_path, caplog, newer):
    copies = [
        write_run(tmp_path / name, evals=[(50, 10.0, 0.9), (100, 20.0, wer)]).resolve()
        for name, wer in [("a", 0.3), ("b", 0.6)]
    ]
    now = 1_700_000_000
    for i, run in enumerate(copies):
        stamp = now + (1000 if i == newer else 0)
        os.utime(run / "summary.json", (stamp, stamp))
    with caplog.at_level(logging.WARNING, logger="fambench.analysis.load"):
        rs = load_results([tmp_path])
    assert list(rs.runs["run_dir"]) == [str(copies[newer])]
    assert rs.runs.iloc[0]["final_dev_wer"] == [0.3, 0.6][newer]
    [record] = caplog.records
    assert f"kept {copies[newer]} (completed), ignored {copies[1 - newer]} (completed)" in (
        record.getMessage()
    )


def test_one_seed_twice_in_a_configuration_is_a_duplicate(tmp_path, caplog):
    # Two run ids (written by different fambench versions, say) for one seed of one setup.
    old = write_run(tmp_path, seed=0, run_id="synth-fam-s0-old", status="interrupted",
                    evals=[(50, 10.0, 0.9), (100, 20.0, 0.3)]).resolve()  # fmt: skip
    new = write_run(tmp_path, seed=0, run_id="synth-fam-s0-new",
                    evals=[(50, 10.0, 0.9), (100, 20.0, 0.5)]).resolve()  # fmt: skip
    write_run(tmp_path, seed=1, evals=[(50, 10.0, 0.9), (100, 20.0, 0.7)])
    write_run(tmp_path, seed=0, steps_budget=200, evals=[(50, 10.0, 0.9), (200, 40.0, 0.1)])
    with caplog.at_level(logging.WARNING, logger="fambench.analysis.load"):
        rs = load_results([tmp_path])
    ids = list(rs.runs["run_id"])
    assert len(ids) == 3 and "synth-fam-s0-new" in ids and "synth-fam-s0-old" not in ids
    assert str(old) not in set(rs.runs["run_dir"])
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"seed 0 of synth fam [lr=0.5] at 100 steps found twice: kept {new} (completed), "
        f"ignored {old} (interrupted)"
    )
    agg = aggregate(rs.runs, rs.metrics, n_boot=100)
    at_100 = agg[agg["steps_budget"] == 100].iloc[0]
    assert (at_100["n_runs"], at_100["n_seeds"], at_100["seeds"]) == (2, 2, "0,1")
    assert at_100["final_dev_wer_mean"] == pytest.approx(0.6)  # 0.5 and 0.7


def test_csv_fallback_and_eval_train_s_filled(tmp_path):
    run = write_run(tmp_path, parquet=False, evals=[(50, 10.0, 0.9), (100, 20.0, 0.5)])
    frame = pd.read_csv(run / "metrics.csv")
    frame.loc[frame["dev_wer"].notna(), "train_s"] = np.nan  # a writer that left them empty
    frame.to_csv(run / "metrics.csv", index=False)
    metrics = read_metrics(run)
    evals = metrics[metrics["dev_wer"].notna()]
    assert list(evals["train_s"]) == pytest.approx([10.0, 20.0])  # from the train rows' curve


def test_run_without_summary_reads_as_running(tmp_path):
    run = write_run(tmp_path, summary=False, evals=[(50, 10.0, 0.8), (100, 20.0, 0.7)])
    with RunLock(RunFiles(run).lock):  # its process is alive
        record, metrics = load_run_dir(run)
    assert record.status == "running" and record.message == "no summary.json yet"
    assert math.isnan(record.summary_mtime)
    numbers = record.numbers
    assert numbers["final_dev_wer"] == 0.7 and numbers["best_dev_wer"] == 0.7  # from the metrics
    assert math.isnan(numbers["test_wer"])
    assert len(metrics) == 12


def test_summary_without_config_is_an_error(tmp_path):
    # The only run: an error (beside a readable one it is skipped, see BREAKAGES).
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
