"""The run-directory format: its writers, the lock, and loading runs back into pandas."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from fambench.errors import ResultsError
from fambench.rundir import (
    FORMAT_VERSION,
    METRIC_COLUMNS,
    SUMMARY_FIELDS,
    RunConfig,
    RunFiles,
    RunLock,
    Summary,
    load_run,
    metrics_frame,
)


def _make_run(root, run_id="synth-fam-s0-00000000", status="completed", wer=0.5):
    files = RunFiles(root / run_id)
    files.write_config(
        RunConfig(
            run_id=run_id,
            preset="synth",
            optimizer="fam",
            seed=0,
            steps=20,
            hparams_key="lr=0.5",
            optimizer_hparams={"lr": 0.5},
            model={"d_model": 144},
            target_wer=0.6,
            provenance={"torch": "2.14.1", "threads": 2},
        )
    )
    files.write_summary(
        Summary(
            run_id=run_id,
            status=status,
            steps=20,
            train_s=4.0,
            final_dev_wer=wer,
            time_to_target_s=float("nan"),
        )
    )
    files.write_metrics(
        [
            {"step": 10, "train_s": 2.0, "train_loss": 3.0, "lr": 0.1, "grad_norm": 1.0},
            {"step": 20, "train_s": 4.0, "train_loss": 2.0, "lr": 0.1, "grad_norm": 1.0},
            {
                "step": 20,
                "train_s": 4.0,
                "dev_wer": wer,
                "dev_cer": wer / 2,
                "dev_loss": 1.5,
                "eval_s": 0.5,
            },
        ]
    )
    return files


def test_written_run_reads_back(tmp_path):
    files = _make_run(tmp_path)
    run = load_run(files.root)
    assert run.run_id == "synth-fam-s0-00000000"
    assert run.summary.status == "completed" and run.summary.final_dev_wer == 0.5
    on_disk = json.loads(files.summary.read_text())
    assert on_disk["time_to_target_s"] is None  # NaN is written as null
    assert tuple(on_disk) == SUMMARY_FIELDS and on_disk["format_version"] == FORMAT_VERSION
    assert list(run.metrics.columns) == list(METRIC_COLUMNS)
    assert run.metrics["step"].dtype == "int64"
    assert math.isnan(run.metrics.loc[0, "dev_wer"]) and run.metrics.loc[2, "dev_wer"] == 0.5
    csv = pd.read_csv(files.metrics_csv)
    pd.testing.assert_frame_equal(csv, run.metrics, check_dtype=False)


def test_a_run_still_starting_reads_as_running(tmp_path):
    files = _make_run(tmp_path)
    files.summary.unlink()
    files.metrics_parquet.unlink()
    files.metrics_csv.unlink()
    run = load_run(files.root)
    assert run.summary is None and run.status == "running" and run.metrics.empty


def test_clear_errors(tmp_path):
    files = _make_run(tmp_path / "old")
    config = json.loads(files.config.read_text())
    config["format_version"] = 0
    files.config.write_text(json.dumps(config))
    with pytest.raises(ResultsError, match=r"is format 0; this fambench reads formats 2, 3 \("):
        load_run(files.root)
    config.update(format_version=FORMAT_VERSION, seed="0")
    files.config.write_text(json.dumps(config))
    with pytest.raises(ResultsError, match=r"config.json: seed should be an integer, found '0'"):
        load_run(files.root)
    del config["preset"]
    files.config.write_text(json.dumps({**config, "seed": 0}))
    with pytest.raises(ResultsError, match=r"config.json: preset should be text, found missing"):
        load_run(files.root)
    files.config.write_text("{broken")
    with pytest.raises(ResultsError, match="not valid JSON"):
        load_run(files.root)


def test_the_config_reads_back_as_written_and_format_2_runs_still_read(tmp_path):
    files = _make_run(tmp_path)
    run = load_run(files.root)
    assert run.config == RunConfig.from_json(run.config.to_json(), "x")
    assert run.config.target_wer == 0.6 and run.config.provenance["threads"] == 2
    assert list(run.metrics.columns) == list(METRIC_COLUMNS)
    # Format 2 named the metric rows' training seconds wall_s; nothing else differs.
    for name in ("config.json", "summary.json"):
        data = json.loads((files.root / name).read_text())
        (files.root / name).write_text(json.dumps({**data, "format_version": 2}))
    legacy = run.metrics.rename(columns={"train_s": "wall_s"})
    legacy.to_parquet(files.metrics_parquet)
    old = load_run(files.root)
    assert old.config == dataclasses.replace(run.config, format_version=2)
    pd.testing.assert_frame_equal(old.metrics, run.metrics)
    assert metrics_frame(legacy.to_dict("records")).equals(run.metrics)  # a format-2 checkpoint


@pytest.mark.subprocess
def test_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path):
    path = tmp_path / "run.lock"
    with RunLock(path):
        assert path.read_text().split()[1] == str(os.getpid())
        with pytest.raises(ResultsError, match="in use by another process"):
            RunLock(path).acquire()
    assert not path.exists()
    # A lock left by a process that has exited is stale.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    import socket

    path.write_text(f"{socket.gethostname()} {dead}\n")
    with RunLock(path):
        assert path.read_text().split()[1] == str(os.getpid())
