"""`fambench compare`, `fambench report` and `fambench bench`: parse options, call, print."""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fambench.cli import app, console, err_console, fail
from fambench.errors import ConfigError, FambenchError

DEFAULT_OPTIMIZERS = "fam,fam-fixed,adamw,sgd"
DEFAULT_REFERENCE = "fam"
_REFERENCE_HELP = "Optimizer every other one is compared with (ΔWER = reference − other)."
_CI_METHOD_HELP = (
    "How 95% intervals are computed: t (Student t; paired t or Welch for differences) or "
    "bootstrap (percentile bootstrap, sound from about 10 seeds)."
)
CiMethodOption = Annotated[str, typer.Option("--ci-method", help=_CI_METHOD_HELP)]
ContendedOption = Annotated[
    bool,
    typer.Option(
        "--include-contended",
        help="Count the times of runs that shared their cores with other processes (default: "
        "left out of time statistics; their WER always counts).",
    ),
]
BaselineOption = Annotated[
    str,
    typer.Option(
        help="Configuration speedups are measured against: 'best' (the best tuned baseline per "
        "workload: lowest median final dev WER of the optimizers that are not the reference or "
        "an ablation of it) or a name such as adamw."
    ),
]
# The columns a narrow terminal loses first.
_DROP_ORDER = (
    "best dev WER\n(95% CI)",
    "peak MB",
    "steps/s",
    "hparams",
    "against",
    "interval",
    "test WER",
    "train s",
)
_TEXT_COLUMNS = {
    "hparams", "runs", "pairing", "verdict", "comparison", "metric", "against", "interval",
}  # fmt: skip


def _min_width(frame: pd.DataFrame) -> int:
    # What rich_table needs: whole lines for number columns and their headers, the longest
    # word for text, one space of padding each side, and a column of slack for rich's rounding.
    total = 2
    for column in frame.columns:
        values = [Text.from_markup(str(v)).plain for v in frame[column]]
        if column in _TEXT_COLUMNS:
            pieces = [w for v in [*values, str(column)] for w in v.split()]
        else:
            pieces = [line for v in [*values, str(column)] for line in v.split("\n")]
        total += max((len(w) for w in pieces), default=0) + 3
    return total


def rich_table(frame: pd.DataFrame, title: str | None = None) -> Table:
    """A rich Table of a display frame (strings; the column named by
    ``frame.attrs["markup_column"]`` holds rich markup, every other cell is plain text)."""
    table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD)
    markup = frame.attrs.get("markup_column")
    cells = {
        column: [
            Text.from_markup(str(v)) if column == markup else Text(str(v)) for v in frame[column]
        ]
        for column in frame.columns
    }
    for column in frame.columns:
        # Only free text wraps on a narrow terminal; numbers keep their width (a number wrapped
        # or cropped reads as another number).
        widest = max((line.cell_len for v in cells[column] for line in v.split()), default=0)
        text = column in _TEXT_COLUMNS
        table.add_column(
            str(column), overflow="fold", min_width=None if text else widest, no_wrap=not text
        )
    for i in range(len(frame)):
        table.add_row(*(cells[column][i] for column in frame.columns))
    return table


def terminal_comparison(agg: pd.DataFrame) -> pd.DataFrame:
    """The comparison made narrower for a terminal: each CI under its mean, and the runs that
    did not complete under the optimizer's name."""
    from fambench.compare import COMPARE_STATUSES, comparison_display

    unfinished_statuses = [*(s for s in COMPARE_STATUSES if s != "completed"), "other"]
    frame = comparison_display(agg)
    for mean, ci in (("final dev WER", "95% CI"), ("best dev WER", "best 95% CI")):
        pairs = zip(frame[mean], frame[ci], strict=True)
        frame[mean] = [m if c == "—" else f"{m}\n{c}" for m, c in pairs]
        frame = frame.drop(columns=[ci])
    unfinished = []
    for _, row in agg.iterrows():
        counts = [f"{int(row[f'n_{s}'])} {s}" for s in unfinished_statuses if int(row[f"n_{s}"])]
        unfinished.append("\n".join(counts))
    frame["optimizer"] = [
        f"{escape(name)}\n[yellow]{extra}[/]" if extra else escape(name)
        for name, extra in zip(frame["optimizer"], unfinished, strict=True)
    ]
    frame = frame.drop(columns=["runs"]).rename(
        columns={
            "final dev WER": "final dev WER\n(95% CI)",
            "best dev WER": "best dev WER\n(95% CI)",
        }
    )
    frame.columns = [c.replace("time to WER", "time to\nWER") for c in frame.columns]
    frame.attrs["markup_column"] = "optimizer"
    return frame


class _WarningLines(logging.Handler):
    """A warning of fambench's modules (a run skipped, a duplicate run) as one stderr line."""

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split("\n"))
        err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


@contextmanager
def _warnings_on_stderr() -> Iterator[None]:
    """While the block runs, fambench's warnings go to stderr, once each, as "warning: ..."."""
    logger = logging.getLogger("fambench")
    handler = _WarningLines(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _print_stale(runs: pd.DataFrame) -> None:
    """One stderr line per stale run: where it is and the command that resumes it."""
    for _, run in runs[runs["status"] == "stale"].iterrows():
        command = f"`{run['command']}`" if run.get("command") else "the command that started it"
        err_console.print(
            f"[yellow]stale:[/] {escape(str(run['run_dir']))}: its process is gone; "
            f"rerun {escape(command)} to resume it",
            highlight=False,
            soft_wrap=True,
        )


def _load_results(paths: list[Path], preset: str | None):
    """load_results, its warnings (runs skipped or duplicated) and stale runs on stderr."""
    from fambench.compare import load_results

    with _warnings_on_stderr():
        results = load_results(paths, preset=preset)
    _print_stale(results.runs)
    return results


def _check_target(target_wer: float | None) -> None:
    if target_wer is not None and not target_wer > 0:
        raise ConfigError(f"--target-wer must be > 0, got {target_wer}")


def _print_tables(agg: pd.DataFrame, pairs: pd.DataFrame, reference: str) -> None:
    from fambench.compare import MIN_VERDICT_N, pairwise_display

    methods = sorted(set(agg["final_dev_wer_ci_method"].dropna().astype(str)))
    how = " or ".join(f"{m}-interval" if m == "t" else m for m in methods) or "interval"
    title = f"Comparison (completed runs; mean ± sd, 95% {how} of the mean)"
    console.print(fitted_table(terminal_comparison(agg), title))
    if not pairs.empty:
        title = (
            f"{reference} − other (negative: {reference} lower; a verdict needs the CI to "
            f"exclude 0 and n ≥ {MIN_VERDICT_N})"
        )
        console.print(fitted_table(pairwise_display(pairs), title))


def _workloads_count(n: int) -> str:
    return f"{n} workload{'' if n == 1 else 's'}"


def _print_workloads(workloads) -> None:
    """Times to target per workload, the performance profile and the speedups."""
    if workloads is None:
        return
    times, profile, speed = workloads.displays()
    console.print(
        fitted_table(times, "Time to target per workload (median over timed seeds; reached/timed)")
    )
    if profile is not None:
        title = (
            f"Performance profile over {_workloads_count(workloads.n_profiled)}: ρ(τ) = share of "
            "workloads within τ × the fastest time; score = its mean over τ in [1, 4]"
        )
        console.print(fitted_table(profile, title))
    if not speed.empty:
        console.print(fitted_table(speed, "Speedup: baseline's time to target ÷ the optimizer's"))


def fitted_table(frame: pd.DataFrame, title: str) -> Table:
    """rich_table without the least important columns the terminal has no room for."""
    hidden: list[str] = []
    for column in [*_DROP_ORDER, None]:
        table = rich_table(frame.drop(columns=hidden), title)
        if _min_width(frame.drop(columns=hidden)) <= console.width:
            break
        if column in frame.columns:
            hidden.append(column)
    if hidden:
        names = ", ".join(c.replace("\n", " ") for c in hidden)
        table.caption = f"terminal too narrow: {names} hidden (--format markdown shows all)"
    return table


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
    reference: Annotated[str, typer.Option(help=_REFERENCE_HELP)] = DEFAULT_REFERENCE,
    ci_method: CiMethodOption = "t",
    include_contended: ContendedOption = False,
    baseline: BaselineOption = "best",
    profile_plot: Annotated[
        Path | None, typer.Option(help="Write the performance-profile plot (PNG) here.")
    ] = None,
) -> None:
    """Aggregate runs over seeds: WER with t intervals, time to target, pairwise differences;
    across workloads, times to target, the performance profile and speedups."""
    from fambench.compare import (
        aggregate,
        check_ci_method,
        check_format,
        comparison_display,
        format_from_suffix,
        pairwise,
        pairwise_display,
        to_markdown,
        write_table,
    )
    from fambench.fileio import write_text
    from fambench.profiles import Workloads

    try:
        _check_target(target_wer)
        method = check_ci_method(ci_method)
        name = (
            check_format(fmt)
            if fmt is not None
            else (format_from_suffix(out) if out is not None else "table")
        )
        if name == "parquet" and out is None:
            raise ConfigError("--format parquet needs --out FILE (parquet is binary)")
        results = _load_results(results_dirs or [Path("results")], preset)
        agg = aggregate(
            results.runs,
            results.metrics,
            target_wer=target_wer,
            method=method,
            include_contended=include_contended,
        )
        metrics = ["final_dev_wer"]
        if results.runs["test_wer"].notna().any():
            metrics.append("test_wer")
        pairs = pairwise(results.runs, reference=reference, metrics=metrics, method=method)
        with _warnings_on_stderr():
            workloads = Workloads.of(
                results,
                target_wer=target_wer,
                reference=reference,
                baseline=baseline,
                include_contended=include_contended,
            )
            if profile_plot is not None:
                if workloads is not None and workloads.n_profiled >= 2:
                    workloads.plot(profile_plot)
                else:
                    err_console.print(
                        f"[yellow]warning:[/] no {profile_plot} written: a performance profile "
                        "needs every configuration's time on at least two workloads",
                        highlight=False,
                        soft_wrap=True,
                    )
                    profile_plot = None
        if out is not None:
            if name == "markdown":
                text = to_markdown(comparison_display(agg))
                if not pairs.empty:
                    text += "\n" + to_markdown(pairwise_display(pairs))
                text += workloads.markdown() if workloads is not None else ""
                write_text(out, text)
            elif name == "table":
                write_table(comparison_display(agg), out, "table")
            else:
                write_table(agg, out, name)
    except FambenchError as exc:
        raise fail(str(exc)) from None
    if out is not None:
        if name == "table":
            _print_tables(agg, pairs, reference)
            _print_workloads(workloads)
        console.print(f"wrote {out} ({name}, {len(agg)} rows)")
    elif name == "table":
        _print_tables(agg, pairs, reference)
        _print_workloads(workloads)
    elif name == "markdown":
        typer.echo(to_markdown(comparison_display(agg)), nl=False)
        if not pairs.empty:
            typer.echo("")
            typer.echo(to_markdown(pairwise_display(pairs)), nl=False)
        if workloads is not None:
            typer.echo(workloads.markdown(), nl=False)
    else:
        typer.echo(agg.to_csv(index=False), nl=False)
    if profile_plot is not None:
        err_console.print(f"wrote {profile_plot}", highlight=False)


@app.command("report")
def report_command(
    results_dir: Annotated[Path, typer.Argument(help="Results directory (searched recursively).")],
    out: Annotated[
        Path | None, typer.Option(help="Where report.md and its files go (default: RESULTS_DIR).")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="Only runs of this preset.")] = None,
    target_wer: Annotated[float | None, typer.Option(help="Target dev WER.")] = None,
    reference: Annotated[str, typer.Option(help=_REFERENCE_HELP)] = DEFAULT_REFERENCE,
    ci_method: CiMethodOption = "t",
    include_contended: ContendedOption = False,
    baseline: BaselineOption = "best",
) -> None:
    """Write a markdown report (tables, plots, provenance) that reads well on GitHub."""
    from fambench.compare import check_ci_method
    from fambench.report import write_report

    try:
        _check_target(target_wer)
        method = check_ci_method(ci_method)
        with _warnings_on_stderr():
            path = write_report(
                results_dir,
                out,
                reference=reference,
                preset=preset,
                target_wer=target_wer,
                method=method,
                include_contended=include_contended,
                baseline=baseline,
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
    reference: Annotated[str, typer.Option(help=_REFERENCE_HELP)] = DEFAULT_REFERENCE,
    hparams: Annotated[
        Path | None, typer.Option(help="Tuned-values file to use instead of the preset's.")
    ] = None,
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
    rerun_contended: Annotated[
        bool,
        typer.Option(
            help="Train again the finished runs whose timing was contended (same WER, honest time)."
        ),
    ] = False,
) -> None:
    """Run every optimizer × seed (finished runs skipped, interrupted ones resumed), then report.

    Each run holds core slots for its threads: grids started side by side wait for free
    cores rather than share them."""
    from fambench.bench import parse_optimizers, parse_variant, run_grid
    from fambench.compare import check_ci_method

    views = _RunViews()
    try:
        _check_target(target_wer)
        method = check_ci_method(ci_method)
        names = parse_optimizers(optimizers)
        variants = [parse_variant(text) for text in variant or []]
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        if steps is not None and time_budget is not None:
            raise ConfigError("give either --steps or --time-budget, not both")
        result = run_grid(
            preset,
            names,
            range(seeds),
            out,
            cache_dir,
            steps=steps,
            time_budget_s=time_budget,
            data_root=data,
            target_wer=target_wer,
            reference=reference,
            hparams_file=hparams,
            force=force,
            threads=threads,
            command=shlex.join(["fambench", *sys.argv[1:]]),
            progress=views,
            on_run=views.next_run,
            on_wait=views.waiting,
            method=method,
            variants=variants,
            include_contended=include_contended,
            rerun_contended=rerun_contended,
        )
        files = result.files
    except FambenchError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted; run the same command to resume the grid", 130) from None
    finally:
        views.stop()
    for run in result.runs:
        if run.status == "running" and run.skipped:
            console.print(
                f"[yellow]{run.optimizer} seed {run.seed}: being run by another bench process[/]"
            )
        elif run.status not in ("completed", "interrupted"):
            console.print(f"[yellow]{run.optimizer} seed {run.seed}: {run.status}[/]")
    if files is not None:
        console.print(fitted_table(terminal_comparison(files.comparison), "Comparison"))
        console.print(f"report: {files.report}", highlight=False, soft_wrap=True)
    if result.interrupted:
        console.print("[yellow]grid interrupted; run the same command to resume it[/]")
        raise typer.Exit(130)


class _RunViews:
    """One progress display per run of the grid (commands_run's view when it is there)."""

    def __init__(self) -> None:
        self.view = None

    def next_run(self, index: int, total: int, label: str) -> None:
        self.stop()
        console.print(f"[bold]run {index}/{total}[/]: {label}", highlight=False)
        try:
            from fambench.cli.commands_run import _ProgressView
        except ImportError:
            self.view = None
        else:
            self.view = _ProgressView()

    def waiting(self, text: str) -> None:
        console.print(f"[yellow]{escape(text)}[/]", highlight=False)

    def __call__(self, event) -> None:  # fambench.training.ProgressEvent
        if self.view is not None:
            self.view(event)

    def stop(self) -> None:
        if self.view is not None:
            self.view.stop()
            self.view = None
