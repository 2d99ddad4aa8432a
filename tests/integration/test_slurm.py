"""`--launcher slurm` against a real single-node Slurm cluster (tests/slurm_cluster.py): a grid
as a job array, a tuning study as worker jobs, and a task stopped by a signal, requeued and
resumed to the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pandas as pd
import pytest
from runs import comparable, wait_for_checkpoint

from fambench.rundir import find_run_dirs, load_run
from fambench.slurm import queue, read_jobs, wait
from fambench.training import run_training

SLURM_TIME_MIN = "15"


@pytest.fixture
def slurm_env(slurm_conf, monkeypatch) -> dict[str, str]:
    """The environment sbatch, squeue and the CLI need to reach the test cluster."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_conf))
    return {**os.environ, "SLURM_CONF": str(slurm_conf)}


def _fambench(env: dict[str, str], *args: object, timeout: float = 600) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fambench", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _job_id(output: str) -> str:
    match = re.search(r"Slurm job(?: array)? (\d+)", output)
    assert match, output
    return match.group(1)


def test_a_grid_is_one_job_array_of_ordinary_runs(slurm_env, synth_corpus, smoke_cache, tmp_path):
    out = tmp_path / "grid"
    submitted = _fambench(
        slurm_env, "bench", "--preset", "smoke", "--optimizers", "adamw,sgd", "--seeds", "2",
        "--data", synth_corpus, "--cache-dir", smoke_cache, "--out", out,
        "--launcher", "slurm", "--slurm-time", SLURM_TIME_MIN,
    )  # fmt: skip
    job = _job_id(submitted)
    assert f"fambench status {out}" in submitted
    (record,) = read_jobs(out)
    assert (record.job_id, record.kind, record.tasks) == (job, "grid", 4)
    assert record.task_ids == [f"{job}_{i}" for i in range(4)]
    wait([record], poll_s=1.0)

    runs = find_run_dirs([out])
    assert sorted(r.name for r in runs) == sorted(record.run_ids)
    assert {load_run(r).status for r in runs} == {"completed"}
    assert {(load_run(r).config.optimizer, load_run(r).config.seed) for r in runs} == {
        ("adamw", 0), ("sgd", 0), ("adamw", 1), ("sgd", 1)
    }  # fmt: skip
    # one run per task, each task's output in its log
    logs = sorted((out / ".slurm" / "logs").rglob("*_log.out"))
    assert len(logs) == 4, logs

    status = _fambench(slurm_env, "status", out)
    assert "tasks: 4 left the queue" in status
    assert f"runs under {out}: 4 completed" in status
    for task in record.task_ids:
        assert re.search(rf"{task}\s.*grid\s.*completed", status), status

    # The same grid again, waiting this time: every run is reported, none trained again, and
    # the comparison is written once the tasks are done.
    stamps = {r: (r / "summary.json").stat().st_mtime_ns for r in runs}
    (out / "report.md").unlink(missing_ok=True)
    again = _fambench(
        slurm_env, "bench", "--preset", "smoke", "--optimizers", "adamw,sgd", "--seeds", "2",
        "--data", synth_corpus, "--cache-dir", smoke_cache, "--out", out,
        "--launcher", "slurm", "--slurm-time", SLURM_TIME_MIN, "--wait",
    )  # fmt: skip
    assert {r: (r / "summary.json").stat().st_mtime_ns for r in runs} == stamps
    assert len(read_jobs(out)) == 2 and "Comparison" in again
    assert (out / "report.md").is_file()


def test_a_tuning_study_on_two_worker_jobs_runs_every_trial_once(
    slurm_env, synth_corpus, smoke_cache, tmp_path, hparams_dir
):
    out = tmp_path / "tune"
    output = _fambench(
        slurm_env, "tune", "--preset", "smoke", "--optimizer", "adamw", "--trials", "4",
        "--data", synth_corpus, "--cache-dir", smoke_cache, "--out", out,
        "--hparams-dir", hparams_dir, "--launcher", "slurm", "--workers", "2",
        "--slurm-time", SLURM_TIME_MIN, "--wait",
    )  # fmt: skip
    (record,) = read_jobs(out)
    assert (record.kind, record.tasks) == ("tune", 2)
    assert "median of study bests" in output  # --wait: the tables once the workers are done

    trials = pd.read_csv(out / "smoke-adamw-trials.csv")
    assert sorted(trials["trial"]) == [0, 1, 2, 3]
    assert set(trials["status"]) == {"completed"}
    assert trials["run_id"].is_unique
    runs = find_run_dirs([out / "trials"])
    assert sorted(r.name for r in runs) == sorted(trials["run_id"])
    for run in runs:  # each trained once, start to end (a trial run twice at once fails)
        metrics = load_run(run).metrics
        assert metrics[metrics["train_loss"].notna()]["step"].tolist() == list(range(1, 31))
    recorded = json.loads((hparams_dir / "tuned" / "smoke.json").read_text())
    best = trials.loc[trials["final_dev_wer"].idxmin()]
    assert recorded["optimizers"]["adamw"]["lr"] == pytest.approx(best["lr"])


def _scontrol_job(job: str, env: dict[str, str]) -> dict[str, str]:
    text = subprocess.run(
        ["scontrol", "show", "job", job], env=env, capture_output=True, text=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S+)", text))


def _task_logs(out) -> str:
    """The Slurm tasks' logs under ``out`` (what each attempt printed), for a failure message."""
    logs = sorted((out / ".slurm" / "logs").rglob("*_log.*"))
    return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)


def test_a_signalled_task_is_requeued_and_resumes_to_the_uninterrupted_numbers(
    slurm_env, smoke, synth_corpus, smoke_cache, tmp_path
):
    out = tmp_path / "slurm"
    submitted = _fambench(
        slurm_env, "bench", "--preset", "smoke", "--optimizers", "fam", "--seeds", "1",
        "--steps", "80", "--data", synth_corpus, "--cache-dir", smoke_cache, "--out", out,
        "--launcher", "slurm", "--slurm-time", SLURM_TIME_MIN,
    )  # fmt: skip
    job = _job_id(submitted)  # one task: a plain job
    run_dir = wait_for_checkpoint(out, 15)
    subprocess.run(["scancel", "--signal=TERM", job], env=slurm_env, check=True)
    # The run saves its step and the task asks to be requeued; Slurm holds a requeued job
    # back for a while (BeginTime), which the test lifts rather than wait for.
    deadline = time.monotonic() + 300
    while _scontrol_job(job, slurm_env).get("Restarts") != "1":
        assert time.monotonic() < deadline, _scontrol_job(job, slurm_env)
        time.sleep(0.5)
    stopped = json.loads((run_dir / "summary.json").read_text())
    assert stopped["status"] == "interrupted" and 15 <= stopped["steps"] < 80
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=slurm_env)
    wait(read_jobs(out), poll_s=1.0)
    assert job not in queue()

    resumed = load_run(run_dir)
    assert resumed.status == "completed", (
        (run_dir / "summary.json").read_text()
        + _task_logs(out)
        + str(_scontrol_job(job, slurm_env))
    )
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 80

    alone = run_training(smoke("fam", steps=80, out_dir=tmp_path / "alone", threads=1))
    assert alone.run_id == run_dir.name
    # bitwise on CPU: every metric but the times
    pd.testing.assert_frame_equal(
        comparable(resumed.metrics), comparable(load_run(alone.run_dir).metrics)
    )
