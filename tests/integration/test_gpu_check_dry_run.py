"""benchmarks/gpu_check.py runs end to end on the CPU (its dry run): the script a GPU session
runs as it is must not fail on a typo."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fambench.workloads import get_preset

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.subprocess
def test_gpu_check_dry_run_prints_every_table(synth_corpus, smoke_cache):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu",
         "--preset", "smoke", "--steps", "2", "--repeats", "2",
         "--data", str(synth_corpus), "--cache-dir", str(smoke_cache)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("optimizer | steps/s"))
    names = lines[header].split(" | ")
    module = _gpu_check_module()
    count = len(module.STUDY_OPTIMIZERS)
    rows = [
        dict(zip(names, line.split(" | "), strict=True))
        for line in lines[header + 1 : header + 1 + count]
    ]
    assert [r["optimizer"] for r in rows] == list(module.STUDY_OPTIMIZERS)
    # No CUDA: no syncs counted, in total or by phase.
    assert all(float(r["steps/s"]) > 0 and float(r["syncs/step"]) == 0 for r in rows)
    # Every optimizer trains on the same batches: the same audio per step.
    audio_per_step = [float(r["audio s/s"]) / float(r["steps/s"]) for r in rows]
    assert max(audio_per_step) == pytest.approx(min(audio_per_step), rel=1e-2)  # 3 digits
    shares = [sum(float(v) for k, v in r.items() if k.endswith(" %")) for r in rows]
    assert shares == pytest.approx([100.0] * count, abs=0.5)  # the phases cover each step
    assert all(r["syncs by phase"] == "dat 0 for 0 bac 0 opt 0" for r in rows)
    assert not any(line.startswith("torch.compile") for line in lines)  # CUDA only by default
    assert "synthetic feature stream" in out.stdout
    labels = ("fam:", "fam-fixed:", "adamw (fused):", "adamw (foreach):", "sgd-momentum (foreach):")
    for label in labels:
        (line,) = [line for line in lines if line.strip().startswith(label)]
        assert " ms (" in line and "skipped" not in line, line
    (torchrun,) = [line for line in lines if line.startswith("torchrun (1 process")]
    assert "completed, 60 steps" in torchrun and "world_size 1" in torchrun, torchrun


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_compile_line_compares_with_eager_or_says_why_compiling_failed(monkeypatch):
    gpu_check = _gpu_check_module()
    preset = get_preset("smoke")
    batches = gpu_check.synthetic_batches(
        preset.batch_frames, preset.model.n_mels, preset.data.vocab_size or 256, 0, 2
    )
    cpu = torch.device("cpu")
    compiled: list[bool] = []

    def fake_compile(model, dynamic):  # the model as it is: the line's arithmetic is the check
        compiled.append(dynamic)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    eager = {"steps/s": 2.0}
    line = gpu_check.compile_check(preset, cpu, batches, 2, eager)
    assert compiled == [True]
    steps_per_s = float(line.split(": ")[1].split(" steps/s")[0])
    ratio = float(line.split(" steps/s (")[1].split("x eager)")[0])
    # The ratio is printed with two decimals, steps/s with three significant digits.
    assert steps_per_s > 0 and abs(ratio - steps_per_s / 2.0) <= 0.005 + 0.001 * steps_per_s
    assert "compiling + 2 warm-up steps" in line

    def broken_compile(model, dynamic):
        raise RuntimeError("cannot determine truth value of Relational\nmore detail")

    monkeypatch.setattr(torch, "compile", broken_compile)
    assert gpu_check.compile_check(preset, cpu, batches, 2, eager) == (
        "torch.compile (adamw, dynamic shapes): FAILED: RuntimeError: "
        "cannot determine truth value of Relational"
    )
