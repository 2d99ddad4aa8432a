"""`fambench run` and `fambench presets` through the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import fambench.cli.commands_run  # noqa: F401  (registers the commands)
from fambench.cli import app
from fambench.cli.commands_run import parse_opt_overrides
from fambench.errors import ConfigError
from fambench.rundir import load_run

runner = CliRunner()


@pytest.fixture(scope="session")
def cli_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli-cache")


def _run(*args: str):
    return runner.invoke(app, ["run", *args])


def test_run_trains_and_prints_the_result(synth_corpus, cli_cache, tmp_path):
    out = tmp_path / "results"
    args = [
        "--optimizer",
        "sgd",
        "--preset",
        "smoke",
        "--data",
        str(synth_corpus),
        "--cache-dir",
        str(cli_cache),
        "--out",
        str(out),
        "--steps",
        "6",
        "--threads",
        "1",
        "--opt",
        "lr=0.02",
        "--seed",
        "3",
    ]
    result = _run(*args)
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    assert run_dir.name.startswith("smoke-sgd-s3-")
    assert "final dev WER" in result.output and str(run_dir) in result.output.replace("\n", "")
    config = load_run(run_dir).config
    assert config.optimizer_overrides == {"lr": 0.02} and config.seed == 3
    # The recorded command line is sys.argv (pytest's here), prefixed with the program name.
    assert config.provenance["command"].split()[0] == "fambench"
    again = _run(*args)
    assert again.exit_code == 0 and "already completed" in again.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--optimizer", "adamw", "--preset", "nope"], "unknown preset 'nope'"),
        (["--optimizer", "nope"], "unknown optimizer 'nope'"),
        (["--optimizer", "adamw", "--opt", "lrr=0.1"], "unknown hyperparameter 'lrr'"),
        (["--optimizer", "adamw", "--opt", "lr=abc"], "lr must be a number"),
        (["--optimizer", "adamw", "--opt", "lr"], "expected key=value"),
        (["--optimizer", "adamw", "--opt", "lr=1", "--opt", "lr=2"], "given twice"),
        (["--optimizer", "adamw", "--preset", "mini-librispeech"], "--data ROOT"),
        (
            ["--optimizer", "adamw", "--preset", "mini-librispeech", "--data", "/nonexistent/x"],
            "no such directory",
        ),
        (["--optimizer", "adamw", "--steps", "5", "--time-budget", "3"], "either --steps"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(tmp_path, args, message):
    out = tmp_path / "results"
    result = _run(*args, "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_unwritable_out_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _run(
        "--optimizer",
        "adamw",
        "--out",
        str(blocker / "results"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert result.exit_code == 2
    assert "cannot write results" in result.stderr and "is not a directory" in result.stderr
    assert not (tmp_path / "cache").exists()


def test_parse_opt_overrides_types_values():
    assert parse_opt_overrides(["lr=0.1", "nesterov=false", "betas=[0.9,0.98]", "n=3"]) == {
        "lr": 0.1,
        "nesterov": False,
        "betas": [0.9, 0.98],
        "n": 3,
    }
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_opt_overrides(["=3"])


def test_presets_lists_every_preset():
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0
    for name in ("synth (default)", "smoke", "ci", "mini-librispeech", "librispeech-100"):
        assert name in result.output


def test_presets_show_what_the_baseline_that_set_a_target_measured(hparams_dir):
    from fambench.cli.commands_run import _measured
    from fambench.targets import WorkloadTarget, load_target, record_target

    record_target(
        WorkloadTarget(
            "digits",
            0.034,
            "AlgoPerf",
            baseline="adamw",
            seeds=(0, 1, 2, 3, 4),
            values=(0.03, 0.033, 0.034, 0.036, 0.04),
            cer_values=(0.008, 0.009, 0.01, 0.011, 0.02),
            run_seconds=((1, 186.0, 5), (2, 120.0, 1)),
        ),
        hparams_dir,
    )  # fmt: skip
    assert _measured(load_target("digits", None, user_dir=hparams_dir)) == (
        "\nbest baseline adamw: final dev CER 0.010, WER 0.034 (median of 5 seeds); "
        "3.1 min per run at 1 thread (5 runs); 2.0 min per run at 2 threads (1 runs)"
    )
    assert _measured(load_target("smoke", 1.0)) == ""
    assert "best baseline" not in runner.invoke(app, ["presets"]).output
    result = runner.invoke(app, ["presets", "--hparams-dir", str(hparams_dir)])
    assert result.exit_code == 0 and "best baseline" in result.output
