"""The committed runs keep their ids: the command each records, planned again by today's code,
names the same run directory (so rerunning a study finds, resumes or reports its runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fambench.rundir import find_run_dirs, load_run
from fambench.training import RunRequest, plan_run

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ("study", "study-ci")
STUDY_RUNS = sorted(find_run_dirs([ROOT / "results" / name for name in STUDIES]))


def _request(run_dir: Path, out: Path) -> RunRequest:
    config = load_run(run_dir).config
    return RunRequest(
        optimizer=config.optimizer,
        preset=config.preset,
        overrides=dict(config.optimizer_overrides),
        seed=config.seed,
        steps=config.steps,
        time_budget_s=config.time_budget_s,
        out_dir=out,
        threads=1,
        precision=config.training.get("precision"),
    )


@pytest.mark.parametrize("name", STUDIES)
def test_the_study_is_committed(name):
    assert len(find_run_dirs([ROOT / "results" / name])) >= 100


@pytest.mark.parametrize("run_dir", STUDY_RUNS, ids=lambda p: p.name)
def test_a_committed_study_run_is_planned_under_its_own_id(run_dir, tmp_path):
    assert plan_run(_request(run_dir, tmp_path)).run_id == run_dir.name
