"""Run directories for tests, built through fambench.rundir (the format's one writer)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from fambench.rundir import FORMAT_VERSION, RunConfig, RunFiles, Summary


def write_run(
    root: Path,
    *,
    preset: str = "synth",
    optimizer: str = "fam",
    ablation_of: str | None = None,
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
    trace: list[dict] | None = None,
    format_version: int | None = FORMAT_VERSION,
    summary: bool = True,
    parquet: bool = True,
    message: str = "",
    precision: str = "fp32",
    steps_budget: int = 100,
    time_budget_s: float | None = None,
    run_id: str | None = None,
    contended: bool | None = None,
    overrides: dict | None = None,
    bf16_native: bool = True,
) -> Path:
    """Write config.json / summary.json / metrics.parquet+csv for one run; return its dir.

    ``evals`` are (step, train_s, dev_wer); ``train`` are (step, train_s, train_loss) and default
    to a falling loss every 10 steps up to the last evaluation. ``steps_budget`` and
    ``time_budget_s`` are the budget in config.json (a run that diverged stops short of it);
    ``run_id`` defaults to one made of the preset, optimizer, seed, hparams key and budget.
    ``contended`` is the summary's contention flag; ``overrides`` the user's optimizer values;
    ``bf16_native`` whether the device had native bf16 (config.training).
    """
    if run_id is None:
        identity = f"{hparams_key}|{steps_budget}|{time_budget_s}"
        run_id = f"{preset}-{optimizer}-s{seed}-{zlib.crc32(identity.encode()):08x}"
    files = RunFiles(root / run_id)
    files.root.mkdir(parents=True)
    evals = list(evals)
    last_step = max([e[0] for e in evals] + [10])
    if train is None:
        seconds_per_step = (evals[-1][1] / evals[-1][0]) if evals else 0.2
        train = [
            (s, s * seconds_per_step, 5.0 / (1 + s / 20)) for s in range(10, last_step + 1, 10)
        ]
    rows = [
        {"step": s, "train_s": w, "train_loss": loss, "lr": 0.1, "grad_norm": 1.0}
        for s, w, loss in train
    ] + [
        {
            "step": s,
            "train_s": w,
            "dev_wer": wer,
            "dev_cer": wer / 2,
            "dev_loss": 1.0,
            "eval_s": 1.0,
        }
        for s, w, wer in evals
    ]
    files.write_metrics(sorted(rows, key=lambda r: r["step"]))
    if not parquet:
        files.metrics_parquet.unlink()
    config = RunConfig(
        format_version=format_version,
        run_id=run_id,
        preset=preset,
        optimizer=optimizer,
        ablation_of=ablation_of,
        optimizer_overrides=dict(overrides or {}),
        optimizer_hparams={"lr": 0.5},
        hparams_key=hparams_key,
        seed=seed,
        steps=steps_budget,
        time_budget_s=time_budget_s,
        model={"d_model": 144},
        data={"kind": "synth"},
        training={"precision": precision, "bf16_native": bf16_native},
        target_wer=target_wer,
        trace="fam_trace.jsonl" if trace is not None else None,
        provenance={
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
    )
    files.write_config(config)  # format_version None reads as missing
    wers = [e[2] for e in evals]
    if summary:
        summary_record = Summary(
            run_id=run_id,
            status=status,
            steps=last_step,
            train_s=train_s if train_s is not None else (evals[-1][1] if evals else 1.0),
            eval_s=float(len(evals)),
            final_dev_wer=wers[-1] if wers else None,
            final_dev_cer=wers[-1] / 2 if wers else None,
            best_dev_wer=min(wers) if wers else None,
            test_wer=test_wer,
            target_wer=target_wer,
            steps_per_s=steps_per_s,
            audio_s_per_s=50.0,
            peak_memory_mb=peak_memory_mb,
            contended=contended,
            precision=precision,
            message=message,
            format_version=format_version,
        )
        files.write_summary(summary_record)
    if trace is not None:
        with open(files.root / "fam_trace.jsonl", "w") as fh:
            for item in trace:
                fh.write(json.dumps(item) + "\n")
    return files.root


def trace_records(steps=(10, 20, 30, 40)) -> list[dict]:
    """FAM trace records for two groups (conv with 4 bands, attention with 3) over ``steps``."""
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
