"""benchmarks/gpu_check.py runs end to end on the CPU (its dry run): the script a GPU session
runs as it is must not fail on a typo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
    rows = [line.split(" | ") for line in lines[header + 1 : header + 4]]
    assert [r[0] for r in rows] == ["adamw", "sgd", "fam"]
    # No CUDA: no syncs counted, in total or by phase.
    assert all(float(r[1]) > 0 and float(r[-2]) == 0 for r in rows)
    assert all(r[-1] == "dat 0 for 0 bac 0 opt 0" for r in rows)
    assert "synthetic feature stream" in out.stdout
    labels = ("fam:", "fam-fixed:", "adamw (fused):", "adamw (foreach):", "sgd-momentum (foreach):")
    for label in labels:
        (line,) = [line for line in lines if line.strip().startswith(label)]
        assert " ms (" in line and "skipped" not in line, line
    (torchrun,) = [line for line in lines if line.startswith("torchrun (1 process")]
    assert "completed, 60 steps" in torchrun and "world_size 1" in torchrun, torchrun
