"""`fambench compare`, `report` and `bench` through the Typer app, on hand-built runs."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from rundirs import write_run
from typer.testing import CliRunner

import fambench.cli as cli

try:
    cli._register_commands()
except ImportError:  # a sibling command module not written yet: ours is enough here
    import fambench.cli.commands_compare  # noqa: F401

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(cli.app, [str(a) for a in args])


@pytest.fixture
def runs_dir(tmp_path):
    runs = tmp_path / "results"
    for seed, (fam, sgd) in enumerate([(0.30, 0.50), (0.32, 0.52)]):
        write_run(runs, optimizer="fam", seed=seed, evals=[(50, 10.0, 0.9), (100, 20.0, fam)])
        write_run(runs, optimizer="sgd", seed=seed, hparams_key="lr=0.05",
                  evals=[(50, 10.0, 0.9), (100, 20.0, sgd)])  # fmt: skip
    return runs


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setattr(cli.console, "width", 200)


def test_compare_table(runs_dir, wide):
    result = invoke("compare", runs_dir)
    assert result.exit_code == 0, result.output
    assert "0.310 ± 0.014" in result.output  # fam: mean of 0.30, 0.32
    # its CI: Student t over two seeds, 0.31 ± t_{0.975,1} · 0.01 = 0.31 ± 0.127
    assert "[0.183, 0.437]" in result.output and "t, n=2" in result.output
    assert "fam − sgd" in result.output and "paired (2 seeds)" in result.output
    # both seeds differ by exactly -0.20: no spread, no power estimate, too few seeds
    assert "[-0.200, -0.200]" in result.output and "inconclusive (n = 2)" in result.output
    assert "too narrow" not in result.output


def test_compare_ci_method_bootstrap(runs_dir, wide):
    result = invoke("compare", runs_dir, "--ci-method", "bootstrap")
    assert result.exit_code == 0, result.output
    assert "[0.300, 0.320]" in result.output  # exact with two seeds (and far too narrow)
    assert "bootstrap, n=2" in result.output
    result = invoke("compare", runs_dir, "--ci-method", "bootstrap", "--format", "csv")
    table = pd.read_csv(io.StringIO(result.stdout))
    assert table["final_dev_wer_ci_method"].tolist() == ["bootstrap", "bootstrap"]
    assert table["final_dev_wer_ci_low"].tolist() == pytest.approx([0.30, 0.50])


def test_compare_table_on_a_narrow_terminal_hides_columns_not_digits(runs_dir, monkeypatch):
    monkeypatch.setattr(cli.console, "width", 70)
    result = invoke("compare", runs_dir)
    assert result.exit_code == 0, result.output
    assert "0.310 ± 0.014" in result.output and "[0.183, 0.437]" in result.output
    assert "too narrow" in result.output
    assert all(len(line) <= 70 for line in result.output.splitlines())


def test_compare_markdown_and_csv_to_stdout(runs_dir):
    result = invoke("compare", runs_dir, "--format", "markdown")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("| optimizer | hparams | seeds | final dev WER |")
    assert any(
        line.startswith("| fam − sgd | baseline | final dev WER | -0.200 |") for line in lines
    )
    result = invoke("compare", runs_dir, "--format", "CSV", "--target-wer", "0.7")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.output))
    assert table["optimizer"].tolist() == ["fam", "sgd"]
    assert table["final_dev_wer_mean"].tolist() == pytest.approx([0.31, 0.51])
    assert table["final_dev_wer_n"].tolist() == [2, 2]
    assert table["final_dev_wer_ci_method"].tolist() == ["t", "t"]
    # 0.7 between 0.9 (10 s) and fam's 0.30 / 0.32 (20 s), averaged over the two seeds
    expected = (10 + 0.2 / 0.6 * 10 + 10 + 0.2 / 0.58 * 10) / 2
    assert table.loc[0, "time_to_target_s"] == pytest.approx(expected)
    assert table["target_wer"].tolist() == [0.7, 0.7]


def test_compare_writes_files(tmp_path, runs_dir):
    for name, fmt in [("c.csv", None), ("c.parquet", "parquet"), ("c.md", None), ("c.txt", None)]:
        out = tmp_path / "out" / name
        args = ["compare", runs_dir, "--out", out] + (["--format", fmt] if fmt else [])
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        assert out.is_file() and f"wrote {out}" in result.output.replace("\n", "")
    assert pd.read_csv(tmp_path / "out" / "c.csv")["n_seeds"].tolist() == [2, 2]
    assert pd.read_parquet(tmp_path / "out" / "c.parquet")["optimizer"].tolist() == ["fam", "sgd"]
    markdown = (tmp_path / "out" / "c.md").read_text()
    assert markdown.startswith("| optimizer |") and "| fam − sgd |" in markdown
    assert "0.310 ± 0.014" in (tmp_path / "out" / "c.txt").read_text()


def test_compare_preset_filter(tmp_path, runs_dir):
    write_run(runs_dir, preset="ci", optimizer="adamw", hparams_key="x")
    result = invoke("compare", runs_dir, "--preset", "ci", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert pd.read_csv(io.StringIO(result.output))["optimizer"].tolist() == ["adamw"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xml"], "unknown format 'xml'; choose one of table, markdown, csv, parquet"),
        (["--format", "parquet"], "--format parquet needs --out FILE"),
        (["--target-wer", "-1"], "--target-wer must be > 0"),
        (["--preset", "nope"], "no runs of preset 'nope'"),
        (["--ci-method", "z"], "unknown CI method 'z'; choose one of t, bootstrap"),
    ],
)
def test_compare_user_errors(runs_dir, args, message):
    result = invoke("compare", runs_dir, *args)
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output.replace("\n", "")


def test_compare_empty_and_old_format_dirs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("compare", empty)
    assert result.exit_code == 2 and "no runs found" in result.output
    old = tmp_path / "old"
    run = write_run(old, format_version=0)
    result = invoke("compare", old)
    assert result.exit_code == 2 and result.stdout == ""
    flat = result.stderr.replace("\n", "")
    assert flat.startswith(f"error: {old}: no readable run (1 skipped): {run}: config.json is")
    assert "format 0" in flat and "reads formats 2, 3" in flat
    assert "warning:" not in flat  # the error alone says it


def _stderr_lines(result, start: str) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(start)]


def test_compare_skips_an_unreadable_run_with_one_warning_line(runs_dir, wide):
    bad = write_run(runs_dir / "old", optimizer="adamw", hparams_key="x", format_version=1)
    (bad / "summary.json").write_text("{")  # as the old version left it, half written
    result = invoke("compare", runs_dir)
    assert result.exit_code == 0, result.output
    assert "0.310 ± 0.014" in result.stdout and "paired (2 seeds)" in result.stdout
    assert "adamw" not in result.stdout
    assert _stderr_lines(result, "warning:") == [
        f"warning: skipped run {bad}: config.json is format 1; this fambench reads formats "
        "2, 3 (written by a different fambench version: rerun the run or use a matching fambench)"
    ]
    assert len(result.stderr.splitlines()) == 1
    result = invoke("compare", runs_dir, "--format", "csv")  # stdout stays a clean table
    assert result.exit_code == 0, result.output
    assert pd.read_csv(io.StringIO(result.stdout))["optimizer"].tolist() == ["fam", "sgd"]
    assert len(_stderr_lines(result, f"warning: skipped run {bad}: ")) == 1


def test_compare_reports_a_stale_run(runs_dir, wide):
    stale = write_run(runs_dir, optimizer="fam", seed=5, status="running", test_wer=None)
    result = invoke("compare", runs_dir)
    assert result.exit_code == 0, result.output
    assert "1 stale" in result.stdout  # under the optimizer's name
    assert _stderr_lines(result, "stale:") == [
        f"stale: {stale}: its process is gone; rerun `fambench run --optimizer fam --seed 5` "
        "to resume it"
    ]
    result = invoke("compare", runs_dir, "--format", "csv")
    table = pd.read_csv(io.StringIO(result.stdout))
    assert table["n_stale"].tolist() == [1, 0] and table["n_running"].tolist() == [0, 0]
    assert table["n_seeds"].tolist() == [2, 2]


def test_compare_keeps_one_copy_of_a_duplicated_run(tmp_path, runs_dir):
    copy = write_run(tmp_path / "copy", optimizer="sgd", seed=0, hparams_key="lr=0.05",
                     status="interrupted", evals=[(50, 10.0, 0.99)])  # fmt: skip
    result = invoke("compare", runs_dir, tmp_path / "copy", "--format", "csv")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))
    assert table["n_runs"].tolist() == [2, 2] and table["n_interrupted"].tolist() == [0, 0]
    assert table["final_dev_wer_mean"].tolist() == pytest.approx([0.31, 0.51])
    kept = runs_dir / copy.name
    assert _stderr_lines(result, "warning:") == [
        f"warning: run {copy.name} found twice: kept {kept} (completed), ignored {copy} "
        "(interrupted); the more finished copy is kept, then the one with the newer summary.json"
    ]


def test_compare_shows_the_budgets_it_keeps_apart(runs_dir):
    for seed, (fam, sgd) in enumerate([(0.20, 0.40), (0.22, 0.46)]):
        write_run(runs_dir, optimizer="fam", seed=seed, steps_budget=400, evals=[(400, 80.0, fam)])
        write_run(runs_dir, optimizer="sgd", seed=seed, hparams_key="lr=0.05", steps_budget=400,
                  evals=[(400, 80.0, sgd)])  # fmt: skip
    result = invoke("compare", runs_dir, "--format", "markdown")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| budget | optimizer | hparams | seeds | final dev WER |")
    assert [line.split(" | ")[:4] for line in lines[2:6]] == [
        ["| 100 steps", "fam", "lr=0.5", "2"],
        ["| 100 steps", "sgd", "lr=0.05", "2"],
        ["| 400 steps", "fam", "lr=0.5", "2"],
        ["| 400 steps", "sgd", "lr=0.05", "2"],
    ]
    assert "| 100 steps | fam − sgd | baseline | final dev WER | -0.200 |" in result.stdout
    assert "| 400 steps | fam − sgd | baseline | final dev WER | -0.220 |" in result.stdout


def test_report_command(tmp_path, runs_dir):
    out = tmp_path / "rep"
    result = invoke("report", runs_dir, "--out", out)
    assert result.exit_code == 0, result.output
    report = out / "report.md"
    assert report.is_file() and "report.md" in result.output.replace("\n", "")
    text = report.read_text()
    assert "## fam against the others" in text and "Student-t interval" in text
    assert "| fam − sgd | baseline | final dev WER | -0.200 |" in text
    assert "| paired t, n=2 | paired (2 seeds) | inconclusive (n = 2) |" in text
    result = invoke("report", runs_dir, "--out", out, "--ci-method", "bootstrap")
    assert result.exit_code == 0, result.output
    text = report.read_text()
    assert "| bootstrap, n=2 |" in text and "percentile bootstrap" in text
    result = invoke("report", runs_dir, "--out", out, "--ci-method", "z")
    assert result.exit_code == 2 and "unknown CI method 'z'" in result.output
    result = invoke("report", tmp_path / "missing")
    assert result.exit_code == 2 and "no such directory" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optimizers", " , "], "--optimizers is empty"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--steps", "10", "--time-budget", "5"], "either --steps or --time-budget"),
        (["--ci-method", "z"], "unknown CI method 'z'"),
    ],
)
def test_bench_user_errors(tmp_path, args, message):
    result = invoke("bench", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2
    assert message in result.output.replace("\n", "")
    assert not (tmp_path / "out").exists()
