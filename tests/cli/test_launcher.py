"""The Slurm options and records without a cluster: what each bad value says, the sbatch
script submitit would write, the jobs file and the status table (tests/integration/test_slurm.py
runs them against a real one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fambench.cli as cli
from fambench.errors import ConfigError, ResultsError
from fambench.slurm import SlurmSettings, Submitted, jobs_file, parse_slurm_option, read_jobs
from fambench.status import run_counts, task_counts, task_table

runner = CliRunner()


def invoke(*args: object):
    cli._register_commands()
    return runner.invoke(cli.app, [str(a) for a in args])


def test_slurm_options_are_name_value_pairs():
    assert parse_slurm_option("qos=high") == ("qos", "high")
    assert parse_slurm_option("--mem-per-cpu=4G") == ("mem-per-cpu", "4G")
    assert parse_slurm_option("constraint=a100|h100") == ("constraint", "a100|h100")
    for bad in ("qos", "=high", "qos=", "Qos=high", "q os=1"):
        with pytest.raises(ConfigError, match="expected an sbatch option as NAME=VALUE"):
            parse_slurm_option(bad)


@pytest.mark.parametrize(
    "settings, message",
    [
        (SlurmSettings(time_min=0), "--slurm-time must be at least 1 minute, got 0"),
        (SlurmSettings(cpus_per_task=0), "--slurm-cpus must be at least 1, got 0"),
        (SlurmSettings(gpus_per_task=-1), "--slurm-gpus must be 0 or more, got -1"),
        (SlurmSettings(extra={"array": "0-3"}), "--slurm-opt array: set by fambench"),
        (SlurmSettings(extra={"time": "10"}), "--slurm-opt time: set by fambench"),
    ],
)
def test_slurm_settings_that_cannot_work_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        settings.check()


def test_the_sbatch_script_asks_for_what_the_settings_say(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    settings = SlurmSettings(
        partition="cpu", time_min=30, cpus_per_task=4, gpus_per_task=1, extra={"qos": "high"}
    )
    executor = settings.executor(tmp_path, "fambench-grid")
    script = _make_sbatch_string(command="true", folder=tmp_path, **executor.parameters)
    for line in ("--partition=cpu", "--time=30", "--cpus-per-task=4", "--gpus-per-task=1",
                 "--qos=high", "--signal=USR2@90", "--job-name=fambench-grid"):  # fmt: skip
        assert f"#SBATCH {line}\n" in script, line


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--slurm-time", "5"], "--slurm-time needs --launcher slurm"),
        (["bench", "--wait"], "--wait needs --launcher slurm"),
        (["bench", "--launcher", "pbs"], "--launcher 'pbs': expected local or slurm"),
        (["bench", "--launcher", "slurm", "--slurm-opt", "qos"], "NAME=VALUE"),
        (["bench", "--launcher", "slurm", "--slurm-cpus", "0"], "--slurm-cpus must be at least"),
        (["bench", "--launcher", "slurm", "--rerun-contended"], "--rerun-contended runs here"),
        (["tune", "-o", "adamw", "--workers", "2"], "--workers needs --launcher slurm"),
    ],
)
def test_launcher_options_refuse_in_one_line(args, message, tmp_path):
    result = invoke(*args, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_single_task_is_a_plain_job_and_an_array_task_is_job_underscore_index():
    assert Submitted("12", "tune", 1).task_ids == ["12"]
    assert Submitted("12", "grid", 3).task_ids == ["12_0", "12_1", "12_2"]


def _run(out: Path, run_id: str, status: str) -> None:
    (out / run_id).mkdir(parents=True)
    (out / run_id / "summary.json").write_text(
        json.dumps({"run_id": run_id, "status": status, "format_version": 3})
    )


def test_status_joins_slurm_s_queue_and_the_run_directories(tmp_path):
    out = tmp_path / "grid"
    _run(out, "a", "completed")
    _run(out, "b", "interrupted")
    jobs_file(out).parent.mkdir(parents=True)
    jobs_file(out).write_text(
        json.dumps([{"job_id": "7", "kind": "grid", "tasks": 3, "run_ids": ["a", "b", "c"]}])
    )
    assert read_jobs(out) == [Submitted("7", "grid", 3, ("a", "b", "c"))]
    table = task_table(out, {"7_1": "PENDING", "7_2": "RUNNING"})
    assert table.to_dict("records") == [
        {"task": "7_0", "kind": "grid", "slurm": "—", "run": "a", "run status": "completed"},
        {
            "task": "7_1",
            "kind": "grid",
            "slurm": "PENDING",
            "run": "b",
            "run status": "interrupted",
        },
        {
            "task": "7_2",
            "kind": "grid",
            "slurm": "RUNNING",
            "run": "c",
            "run status": "not started",
        },
    ]
    assert task_counts(table) == {"left the queue": 1, "pending": 1, "running": 1}
    assert run_counts(out) == {"completed": 1, "interrupted": 1}
    assert set(task_table(out, None)["slurm"]) == {"unknown"}


def test_status_of_a_local_directory_counts_its_runs_and_names_a_broken_jobs_file(tmp_path):
    out = tmp_path / "local"
    _run(out, "x", "completed")
    result = invoke("status", out)
    assert result.exit_code == 0, result.output
    assert f"runs under {out}: 1 completed" in result.output and "Slurm tasks" not in result.output
    jobs_file(out).parent.mkdir(parents=True)
    jobs_file(out).write_text("{not json")
    with pytest.raises(ResultsError, match="not a fambench jobs file"):
        read_jobs(out)
    result = invoke("status", out)
    assert result.exit_code == 2 and "not a fambench jobs file" in result.output
    result = invoke("status", tmp_path / "missing")
    assert result.exit_code == 2 and "no such results directory" in result.output
