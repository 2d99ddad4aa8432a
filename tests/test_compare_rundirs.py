"""Hand-built run directories with known numbers (shared by the compare/plots/report tests),
and the tests of loading them: formats, fallbacks and the clear errors."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fambench.compare import load_results, load_run_dir, read_metrics
from fambench.errors import ResultsError

METRIC_COLUMNS = [
    "step", "wall_s", "train_loss", "lr", "grad_norm", "dev_wer", "dev_cer", "dev_loss", "eval_s",
]  # fmt: skip


def write_run(
    root: Path,
    *,
    preset: str = "synth",
    optimizer: str = "fam",
    seed: int = 0,
    hparams_key: str = "lr=0.5",
    status: str = "completed",
    evals: list[tuple[int, float, float]] = ((50, 10.0, 0.9), (100, 20.0, 0.5)),
    train: list[tuple[int, float, float]] | None = None,
    test_wer: float | None = 0.45,
    target_wer: float | None = 0.6,
    train_s: float | None = None,
    steps_per_s: float = 5.0,
    peak_memory_mb: float = 300.0,
    debug: list[dict] | None = None,
    format_version: int | None = 1,
    summary: bool = True,
    parquet: bool = True,
    message: str = "",
) -> Path:
    """Write config.json / summary.json / metrics.parquet+csv for one run; return its dir.

    ``evals`` are (step, wall_s, dev_wer); ``train`` are (step, wall_s, train_loss) and default
    to a falling loss every 10 steps up to the last evaluation.
    """
    run_id = f"{preset}-{optimizer}-s{seed}-{zlib.crc32(hparams_key.encode()):08x}"
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    evals = list(evals)
    last_step = max([e[0] for e in evals] + [10])
    if train is None:
        seconds_per_step = (evals[-1][1] / evals[-1][0]) if evals else 0.2
        train = [
            (s, s * seconds_per_step, 5.0 / (1 + s / 20)) for s in range(10, last_step + 1, 10)
        ]
    rows = [
        {"step": s, "wall_s": w, "train_loss": loss, "lr": 0.1, "grad_norm": 1.0}
        for s, w, loss in train
    ] + [
        {"step": s, "wall_s": w, "dev_wer": wer, "dev_cer": wer / 2, "dev_loss": 1.0, "eval_s": 1.0}
        for s, w, wer in evals
    ]
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS).sort_values("step", kind="stable")
    if parquet:
        metrics.to_parquet(run_dir / "metrics.parquet", index=False)
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    version = {} if format_version is None else {"format_version": format_version}
    config = {
        **version,
        "run_id": run_id,
        "preset": preset,
        "optimizer": optimizer,
        "optimizer_overrides": {},
        "optimizer_hparams": {"lr": 0.5},
        "hparams_key": hparams_key,
        "seed": seed,
        "steps": last_step,
        "time_budget_s": None,
        "model": {"d_model": 144},
        "data": {"kind": "synth"},
        "schedule": {},
        "target_wer": target_wer,
        "provenance": {
            "fambench_version": "0.1.0",
            "git_commit": "abc1234",
            "python": "3.12.0",
            "torch": "2.14.1",
            "torchaudio": "2.11.0",
            "device": "cpu",
            "threads": 2,
            "command": f"fambench run --optimizer {optimizer} --seed {seed}",
            "hostname": "testhost",
            "started_at": "2025-01-01T00:00:00Z",
        },
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    wers = [e[2] for e in evals]
    if summary:
        data = {
            **version,
            "run_id": run_id,
            "status": status,
            "steps": last_step,
            "train_s": train_s if train_s is not None else (evals[-1][1] if evals else 1.0),
            "eval_s": float(len(evals)),
            "final_dev_wer": wers[-1] if wers else None,
            "final_dev_cer": wers[-1] / 2 if wers else None,
            "best_dev_wer": min(wers) if wers else None,
            "test_wer": test_wer,
            "test_cer": None,
            "target_wer": target_wer,
            "time_to_target_s": None,
            "steps_per_s": steps_per_s,
            "audio_s_per_s": 50.0,
            "peak_memory_mb": peak_memory_mb,
            "message": message,
        }
        (run_dir / "summary.json").write_text(json.dumps(data))
    if debug is not None:
        with open(run_dir / "fam_debug.jsonl", "w") as fh:
            for record in debug:
                fh.write(json.dumps(record) + "\n")
    return run_dir


def fam_debug_records(steps=(10, 20, 30, 40)) -> list[dict]:
    """Debug records for two groups (conv with 4 bands, attention with 3) over ``steps``."""
    out = []
    for step in steps:
        for i, (group, handler, bands) in enumerate(
            [(0, "conv", [4.0, 2.0, 1.0, 1.0]), (0, "conv", [3.0, 3.0, 1.0, 1.0]),
             (1, "attention", [1.0, 1.0, 2.0])]
        ):  # fmt: skip
            out.append(
                {
                    "step": step,
                    "param": f"group{group}.param{i}",
                    "group": group,
                    "handler": handler,
                    "band_ema": [b * step for b in bands],
                    "momentum": 0.9 - 0.001 * step + 0.01 * group,
                }
            )
    return out


# --------------------------------------------------------------------------- loading tests


def test_load_results_flattens_config_and_summary(tmp_path):
    write_run(tmp_path, optimizer="fam", seed=0)
    write_run(tmp_path, optimizer="adamw", seed=0, hparams_key="lr=0.002")
    rs = load_results([tmp_path])
    assert list(rs.runs["optimizer"]) == ["fam", "adamw"]  # FAM family first
    fam = rs.runs.iloc[0]
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


@pytest.mark.parametrize("version", [None, 0, 2])
def test_other_format_version_names_the_directory(tmp_path, version):
    run = write_run(tmp_path, format_version=version)
    with pytest.raises(ResultsError) as err:
        load_results([tmp_path])
    message = str(err.value)
    assert str(run) in message and "format 1" in message
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
