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
    assert all(float(r[1]) > 0 and float(r[-1]) == 0 for r in rows)  # no CUDA: no syncs counted
    assert "synthetic feature stream" in out.stdout
    for label in ("fam:", "fam-fixed:", "adamw (foreach):", "sgd-momentum (foreach):"):
        assert any(line.strip().startswith(label) for line in lines), label
    (torchrun,) = [line for line in lines if line.startswith("torchrun (1 process")]
    assert "completed, 60 steps" in torchrun and "world_size 1" in torchrun, torchrun
