"""Tuned values and targets are user data: `tune` and `target` write a directory the user owns,
never the installed package, and `run` and `presets` read it before the package's own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rundirs import write_run

import fambench
from fambench.hparams_dirs import HPARAMS_DIR_ENV, portable_source
from fambench.workloads import load_tuned


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)


@pytest.fixture
def read_only_install(tmp_path):
    """A copy of the package, read-only as in a system site-packages, and a command that runs
    the fambench CLI from it in an empty working directory."""
    site = tmp_path / "site"
    shutil.copytree(
        Path(fambench.__file__).parent, site / "fambench",
        ignore=shutil.ignore_patterns("__pycache__"),
    )  # fmt: skip
    _make_read_only(site)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "250"}
    env.pop(HPARAMS_DIR_ENV, None)  # the default directory: results/hparams

    def fambench_cli(*args) -> subprocess.CompletedProcess:
        script = "import sys, fambench.cli as c; print(c.__file__, file=sys.stderr); c.main()"
        return subprocess.run(
            [sys.executable, "-c", script, *map(str, args)],
            cwd=work, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    yield site / "fambench", work, fambench_cli
    for path in [site, *site.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # so that tmp_path can be removed


@pytest.mark.subprocess
def test_tune_and_target_write_the_user_directory_not_a_read_only_package(
    read_only_install, synth_corpus, smoke_cache
):
    package, work, fambench_cli = read_only_install
    before = _snapshot(package)
    tuned = fambench_cli(
        "tune", "--preset", "smoke", "--optimizer", "adamw", "--trials", "1", "--threads", "1",
        "--data", synth_corpus, "--cache-dir", smoke_cache, "--out", "tune",
    )  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr
    assert tuned.stderr.startswith(str(package / "cli" / "__init__.py"))  # the copy ran
    recorded = json.loads((work / "results/hparams/tuned/smoke.json").read_text())
    assert set(recorded["optimizers"]) == {"adamw"}
    assert recorded["sources"]["adamw"]["source"] == "tune/smoke-adamw-trials.md"

    for seed, wer in enumerate((0.5, 0.45, 0.52, 0.48, 0.47)):
        evals = ((50, 10.0, 0.7), (100, 20.0, wer))
        write_run(work / "runs", preset="smoke", optimizer="adamw", seed=seed, evals=evals)
    target = fambench_cli("target", "runs", "--preset", "smoke")
    assert target.returncode == 0, target.stderr
    assert json.loads((work / "results/hparams/targets/smoke.json").read_text())[
        "target_wer"
    ] == pytest.approx(0.48)
    presets = fambench_cli("presets")
    assert presets.returncode == 0, presets.stderr
    smoke = presets.stdout[presets.stdout.index("│ smoke ") :]
    assert "30 steps, eval every 15; target WER 0.48 " in smoke
    assert "best baseline adamw: final dev CER 0.240, WER 0.480 (median of 5 seeds)" in smoke
    assert "tune/smoke-adamw-trials.md)" in smoke  # the tuned values shown are the new ones
    assert _snapshot(package) == before


def test_the_user_directory_overrides_the_shipped_values_optimizer_by_optimizer(tmp_path):
    shipped = load_tuned("smoke")
    assert shipped.for_optimizer("sgd") and shipped.for_optimizer("adamw")
    own = tmp_path / "tuned" / "smoke.json"
    own.parent.mkdir()
    own.write_text(
        json.dumps(
            {"preset": "smoke", "optimizers": {"adamw": {"lr": 0.123}},
             "sources": {"adamw": {"source": "mine.md", "method": "by hand"}}}
        )
    )  # fmt: skip
    merged = load_tuned("smoke", user_dir=tmp_path)
    assert merged.for_optimizer("adamw") == {"lr": 0.123}
    assert merged.source_of("adamw") == "mine.md"
    assert merged.for_optimizer("sgd") == shipped.for_optimizer("sgd")
    assert merged.source_of("sgd") == shipped.source_of("sgd")
    assert merged.paths == (own, *shipped.paths)
    # An explicit file is read alone.
    assert load_tuned("smoke", own).for_optimizer("sgd") == {}


def test_a_table_outside_the_working_directory_is_named_without_its_absolute_path(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert portable_source(tmp_path / "results" / "t" / "x.md") == "results/t/x.md"
    assert portable_source(Path("/somewhere/else/sweep/x.md")) == "sweep/x.md"
