"""`fambench compare`, `fambench report` and `fambench bench`: parse options, call, print."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from fambench.cli import HparamsDir, app, console, err_console, fail
from fambench.cli.launcher import (
    LauncherOption,
    SlurmCpus,
    SlurmGpus,
    SlurmOpt,
    SlurmPartition,
    SlurmTime,
    WaitOption,
    print_submitted,
    slurm_settings,
    wait_quietly,
)
from fambench.cli.options import (
    DEFAULT_REFERENCE,
    REFERENCE_HELP,
    BaselineOption,
    CiMethodOption,
    ContendedOption,
    PrecisionOption,
    check_budget,
    check_target,
)
from fambench.cli.printing import fitted_table, print_stale, print_tables, warnings_on_stderr
from fambench.cli.progress import RunViews
from fambench.errors import ConfigError, FambenchError
from fambench.hparams_dirs import DEFAULT_USER_DIR

DEFAULT_OPTIMIZERS = "fam,fam-fixed,adamw,sgd"


def _output_format(fmt: str | None, out: Path | None) -> str:
    """--format, else the suffix of --out, else the terminal's table."""
    from fambench.analysis.tables import check_format, format_from_suffix

    if fmt is not None:
        name = check_format(fmt)
    else:
        name = format_from_suffix(out) if out is not None else "table"
    if name == "parquet" and out is None:
        raise ConfigError("--format parquet needs --out FILE (parquet is binary)")
    return name


@app.command("compare")
def compare_command(
    results_dirs: Annotated[
        list[Path] | None,
        typer.Argument(help="Results or run directories, searched recursively (default: results)"),
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Only runs of this preset.")] = None,
    target_wer: Annotated[
        float | None, typer.Option(help="Target dev WER for time-to-target (default: preset's).")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="table, markdown, csv or parquet (default: from --out's suffix, else table).",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the table to this file.")] = None,
    reference: Annotated[str, typer.Option(help=REFERENCE_HELP)] = DEFAULT_REFERENCE,
    ci_method: CiMethodOption = "t",
    include_contended: ContendedOption = False,
    baseline: BaselineOption = "best",
    profile_plot: Annotated[
        Path | None,
        typer.Option(
            help="Write the performance-profile plot by time (PNG) here, and the one by steps "
            "beside it (<name>_steps.png)."
        ),
    ] = None,
    hparams_dir: HparamsDir = DEFAULT_USER_DIR,
) -> None:
    """Aggregate runs over seeds: WER with t intervals, time to target, pairwise differences;
    across workloads, times to target, the performance profile and speedups."""
    from fambench.analysis import compare, load_results
    from fambench.analysis.stats import check_ci_method
    from fambench.analysis.tables import comparison_text, terminal_tables, write_comparison
    from fambench.plots import write_profile_plots

    try:
        check_target(target_wer)
        method = check_ci_method(ci_method)
        name = _output_format(fmt, out)
        with warnings_on_stderr():
            results = load_results(
                results_dirs or [Path("results")], preset=preset, hparams_dir=hparams_dir
            )
            print_stale(results.runs)
            comparison = compare(
                results,
                reference=reference,
                target_wer=target_wer,
                method=method,
                include_contended=include_contended,
                baseline=baseline,
            )
            plots = []
            if profile_plot is not None:
                plots = write_profile_plots(comparison.workloads, profile_plot)
        if out is not None:
            write_comparison(comparison, out, name)
    except FambenchError as exc:
        raise fail(str(exc)) from None
    if name == "table":
        print_tables(terminal_tables(comparison))
    elif out is None:
        typer.echo(comparison_text(comparison, name), nl=False)
    if out is not None:
        console.print(f"wrote {out} ({name}, {len(comparison.aggregate)} rows)")
    for plot in plots:
        err_console.print(f"wrote {plot}", highlight=False)


@app.command("report")
def report_command(
    results_dir: Annotated[Path, typer.Argument(help="Results directory (searched recursively).")],
    out: Annotated[
        Path | None, typer.Option(help="Where report.md and its files go (default: RESULTS_DIR).")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Only runs of this preset.")] = None,
    target_wer: Annotated[float | None, typer.Option(help="Target dev WER.")] = None,
    reference: Annotated[str, typer.Option(help=REFERENCE_HELP)] = DEFAULT_REFERENCE,
    ci_method: CiMethodOption = "t",
    include_contended: ContendedOption = False,
    baseline: BaselineOption = "best",
    hparams_dir: HparamsDir = DEFAULT_USER_DIR,
    tuning_runs: Annotated[
        list[Path] | None,
        typer.Option(
            help="Tuning trials (a directory searched recursively; repeatable) whose compute "
            "the report's ledger counts beside the study's runs (default: those "
            "RESULTS_DIR/report.json names)."
        ),
    ] = None,
) -> None:
    """Write a markdown report (tables, plots, compute ledger, provenance) that reads well on
    GitHub."""
    from fambench.analysis.stats import check_ci_method
    from fambench.report import write_report

    try:
        check_target(target_wer)
        method = check_ci_method(ci_method)
        with warnings_on_stderr():
            path = write_report(
                results_dir,
                out,
                reference=reference,
                preset=preset,
                target_wer=target_wer,
                method=method,
                include_contended=include_contended,
                baseline=baseline,
                hparams_dir=hparams_dir,
                tuning_runs=tuning_runs or (),
            )
    except FambenchError as exc:
        raise fail(str(exc)) from None
    console.print(f"report: {path}")


@app.command("bench")
def bench_command(
    preset: Annotated[str, typer.Option(help="Workload preset.")] = "synth",
    optimizers: Annotated[
        str, typer.Option(help="Comma-separated optimizer names or dotted paths.")
    ] = DEFAULT_OPTIMIZERS,
    seeds: Annotated[int, typer.Option(help="Seeds 0 .. N-1 for every optimizer.")] = 3,
    out: Annotated[Path, typer.Option(help="Results directory (runs and report).")] = Path(
        "results"
    ),
    cache_dir: Annotated[Path, typer.Option(help="Corpus and feature cache directory.")] = Path(
        "data"
    ),
    data: Annotated[
        Path | None, typer.Option(help="LibriSpeech root (LibriSpeech presets).")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Steps per run (default: preset's).")] = None,
    time_budget: Annotated[
        float | None, typer.Option(help="Training seconds per run instead of steps.")
    ] = None,
    target_wer: Annotated[float | None, typer.Option(help="Target dev WER.")] = None,
    reference: Annotated[str, typer.Option(help=REFERENCE_HELP)] = DEFAULT_REFERENCE,
    hparams: Annotated[
        Path | None, typer.Option(help="Tuned-values file to use instead of the preset's.")
    ] = None,
    hparams_dir: HparamsDir = DEFAULT_USER_DIR,
    force: Annotated[bool, typer.Option(help="Rerun completed runs too.")] = False,
    threads: Annotated[
        int | None, typer.Option(help="torch threads per run (default: the usable CPU cores).")
    ] = None,
    ci_method: CiMethodOption = "t",
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="An extra configuration, OPTIMIZER:key=value[,key=value] (tuned values with "
            "these on top), e.g. fam:sampling=random; repeatable."
        ),
    ] = None,
    include_contended: ContendedOption = False,
    precision: PrecisionOption = None,
    rerun_contended: Annotated[
        bool,
        typer.Option(
            help="Train again the finished runs whose timing was contended (same WER, honest time)."
        ),
    ] = False,
    launcher: LauncherOption = "local",
    slurm_partition: SlurmPartition = None,
    slurm_time: SlurmTime = None,
    slurm_cpus: SlurmCpus = None,
    slurm_gpus: SlurmGpus = None,
    slurm_opt: SlurmOpt = None,
    wait: WaitOption = False,
) -> None:
    """Run every optimizer × seed (finished runs skipped, interrupted ones resumed), then report.

    Each run holds core slots for its threads: grids started side by side wait for free
    cores rather than share them. With --launcher slurm the grid is one Slurm job array."""
    from fambench.analysis.stats import check_ci_method
    from fambench.bench import grid_cells, parse_optimizers, parse_variant, run_grid

    views = RunViews()
    try:
        check_target(target_wer)
        method = check_ci_method(ci_method)
        names = parse_optimizers(optimizers)
        variants = [parse_variant(text) for text in variant or []]
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        check_budget(steps, time_budget)
        settings = slurm_settings(
            launcher, slurm_partition, slurm_time, slurm_cpus, slurm_gpus, slurm_opt, wait
        )
        cell_options = dict(
            steps=steps,
            time_budget_s=time_budget,
            data_root=data,
            hparams_file=hparams,
            hparams_dir=hparams_dir,
            force=force,
            threads=threads,
            command=shlex.join(["fambench", *sys.argv[1:]]),
            variants=variants,
            precision=precision,
        )
        report_options = dict(
            target_wer=target_wer,
            reference=reference,
            method=method,
            include_contended=include_contended,
        )
        if settings is not None:
            if rerun_contended:
                raise ConfigError("--rerun-contended runs here only (--launcher local)")
            cells = grid_cells(preset, names, range(seeds), out, cache_dir, **cell_options)
            result = _submit_grid(cells, settings, out, wait, report_options)
            if result is None:
                return
        else:
            result = run_grid(
                preset,
                names,
                range(seeds),
                out,
                cache_dir,
                progress=views,
                on_run=views.next_run,
                on_wait=views.waiting,
                rerun_contended=rerun_contended,
                **report_options,
                **cell_options,
            )
    except FambenchError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted; run the same command to resume the grid", 130) from None
    finally:
        views.stop()
    _print_grid(result)
    if result.interrupted:
        console.print("[yellow]grid interrupted; run the same command to resume it[/]")
        raise typer.Exit(130)


def _submit_grid(cells, settings, out: Path, wait: bool, report_options: dict):
    """Submit the cells as one job array; with ``wait``, wait and return the grid's result
    (fambench.bench.BenchResult), else None."""
    from fambench.bench import BenchResult, grid_report, runs_on_disk
    from fambench.slurm import submit_grid

    submitted = submit_grid(cells, settings, out)
    print_submitted(submitted, out)
    if not wait:
        return None
    wait_quietly(submitted)
    runs = runs_on_disk(cells, submitted.run_ids)
    files = grid_report(runs, out, hparams_dir=cells[0].hparams_dir, **report_options)
    return BenchResult(runs=tuple(runs), files=files, interrupted=False)


def _print_grid(result) -> None:  # result: fambench.bench.BenchResult
    """The runs that did not complete, then the comparison and where the report is."""
    from fambench.analysis.tables import terminal_comparison

    for run in result.runs:
        if run.status == "running" and run.skipped:
            console.print(
                f"[yellow]{run.optimizer} seed {run.seed}: being run by another bench process[/]"
            )
        elif run.status not in ("completed", "interrupted"):
            console.print(f"[yellow]{run.optimizer} seed {run.seed}: {run.status}[/]")
    if result.files is not None:
        console.print(fitted_table(terminal_comparison(result.files.comparison), "Comparison"))
        console.print(f"report: {result.files.report}", highlight=False, soft_wrap=True)
