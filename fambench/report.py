"""A markdown report of a results directory: tables, plots and the provenance of the runs.

`write_report` writes, into one directory: ``report.md``, ``comparison.csv`` (numbers),
``comparison.md`` (the readable table), ``pairwise.csv`` and the PNG plots the report links to
by relative path, so the directory reads well on GitHub as it is.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import fambench
from fambench.analysis import Comparison, ResultSet, compare, load_results
from fambench.analysis.aggregate import MIN_VERDICT_N
from fambench.analysis.labels import MISSING
from fambench.analysis.ledger import compute_ledger, has_emulated_bf16, ledger_display
from fambench.analysis.profiles import BEST_BASELINE, TAU_MAX, Workloads, best_baseline
from fambench.analysis.stats import DEFAULT_BOOTSTRAP, DEFAULT_CI_METHOD
from fambench.analysis.tables import (
    comparison_display,
    fmt_num,
    interval_label,
    pairwise_display,
    scores_display,
    to_markdown,
    workloads_displays,
    write_table,
)
from fambench.fileio import write_text
from fambench.plots import plot_all, plot_profile, profile_plot_path
from fambench.report_settings import read_tuning_runs

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
#: The performance-profile plot by time; the one by steps goes beside it (profile_plot_path).
PROFILE_PLOT = "performance_profile.png"


@dataclass(frozen=True)
class ReportFiles:
    """Everything `build_report` wrote."""

    report: Path
    comparison_csv: Path
    comparison_md: Path
    pairwise_csv: Path
    plots: tuple[Path, ...]
    comparison: pd.DataFrame
    pairs: pd.DataFrame


def write_report(
    results_dir: PathLike | Sequence[PathLike],
    out_dir: PathLike | None = None,
    *,
    reference: str,
    preset: str | None = None,
    target_wer: float | None = None,
    method: str = DEFAULT_CI_METHOD,
    n_boot: int = DEFAULT_BOOTSTRAP,
    include_contended: bool = False,
    baseline: str = BEST_BASELINE,
    hparams_dir: Path | None = None,
    tuning_runs: Sequence[PathLike] = (),
) -> Path:
    """Load the runs under ``results_dir``, write the report and its files; return report.md.

    ``out_dir`` defaults to ``results_dir`` (the first one when several are given); ``method``
    is how intervals are computed (fambench.analysis.stats.CI_METHODS); the compute ledger
    counts ``tuning_runs`` (directories of tuning trials; default: those the first results
    directory's report.json names, see fambench.report_settings) beside the study's runs.
    """
    paths = [results_dir] if isinstance(results_dir, str | os.PathLike) else list(results_dir)
    results = load_results(paths, preset=preset, hparams_dir=hparams_dir)
    out = Path(out_dir) if out_dir is not None else Path(paths[0])
    tuning_runs = list(tuning_runs) or read_tuning_runs(Path(paths[0]))
    return build_report(
        results,
        out,
        reference=reference,
        sources=paths,
        target_wer=target_wer,
        method=method,
        n_boot=n_boot,
        include_contended=include_contended,
        baseline=baseline,
        tuning_runs=tuning_runs,
    ).report


def build_report(
    results: ResultSet,
    out_dir: PathLike,
    *,
    reference: str,
    sources: Sequence[PathLike] = (),
    target_wer: float | None = None,
    method: str = DEFAULT_CI_METHOD,
    n_boot: int = DEFAULT_BOOTSTRAP,
    include_contended: bool = False,
    baseline: str = BEST_BASELINE,
    tuning_runs: Sequence[PathLike] = (),
) -> ReportFiles:
    """Write report.md, comparison.csv/.md, pairwise.csv, ledger.csv and the plots for
    ``results``; with a completed run, workload_times.csv, workload_steps.csv and
    speedups.csv; with values on two workloads or more, the performance-profile plots (by
    time, and by steps)."""
    out = Path(out_dir)
    comparison = compare(
        results,
        reference=reference,
        target_wer=target_wer,
        method=method,
        n_boot=n_boot,
        include_contended=include_contended,
        baseline=baseline,
    )
    agg, pairs, workloads = comparison.aggregate, comparison.pairs, comparison.workloads
    # Before anything is written: a tuning directory without runs fails here.
    phases = {"tuning": list(tuning_runs)} if tuning_runs else {}
    ledger = compute_ledger({**phases, "study": list(results.runs["run_dir"])})
    comparison_csv = write_table(agg, out / "comparison.csv", "csv")
    comparison_md = write_table(comparison_display(agg), out / "comparison.md", "markdown")
    pairwise_csv = write_table(pairs, out / "pairwise.csv", "csv")
    plots = plot_all(results, out, target_wer=target_wer)
    if workloads is not None:
        write_table(workloads.by_time.table.reset_index(), out / "workload_times.csv", "csv")
        write_table(workloads.by_steps.table.reset_index(), out / "workload_steps.csv", "csv")
        write_table(workloads.speedups, out / "speedups.csv", "csv")
        for profile in workloads.profiles():
            if profile.n_profiled >= 2:
                path = profile_plot_path(out / PROFILE_PLOT, profile.axis)
                plots = [*plots, plot_profile(profile, path)]
    write_table(ledger, out / "ledger.csv", "csv")
    text = render_report(comparison, plots, out, sources=sources, ledger=ledger)
    report = write_text(out / "report.md", text)
    log.info("report written to %s", report)
    return ReportFiles(
        report, comparison_csv, comparison_md, pairwise_csv, tuple(plots), agg, pairs
    )


def render_report(
    comparison: Comparison,
    plots: Sequence[Path],
    out_dir: Path,
    *,
    sources: Sequence[PathLike] = (),
    ledger: pd.DataFrame | None = None,
) -> str:
    """The markdown text of the report (PNG links relative to ``out_dir``)."""
    runs, reference = comparison.results.runs, comparison.reference
    presets = comparison.results.presets
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = ", ".join(f"`{s}`" for s in sources) or "the given directories"
    lines = [
        f"# fambench report: {', '.join(presets)}",
        "",
        f"{len(runs)} runs ({_counts(runs['optimizer'])}) loaded from {where}; "
        f"runs by status: {_counts(runs['status'])}. "
        f"Generated {now} by fambench {fambench.__version__}.",
        "",
        *_headline_section(comparison.pairs, comparison.workloads, reference),
        *_design_section(runs),
        *_comparison_section(comparison),
        *_pairwise_section(comparison),
        *_workloads_section(comparison.workloads, out_dir),
        *_plots_section(
            [p for p in plots if not p.stem.startswith(Path(PROFILE_PLOT).stem)], out_dir, presets
        ),
        *_ledger_section(ledger),
        *_runs_section(runs),
        *_provenance_section(runs),
    ]
    return "\n".join(lines).rstrip() + "\n"


def seeds_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Configurations × workloads: how many seeds completed (0 where none did)."""
    done = runs[runs["status"] == "completed"]
    table = done.groupby(["config", "preset"], sort=False)["seed"].nunique().unstack("preset")
    order = list(dict.fromkeys(runs["config"]))
    presets = list(dict.fromkeys(runs["preset"]))
    return table.reindex(index=order, columns=presets).fillna(0).astype(int)


def _design_section(runs: pd.DataFrame) -> list[str]:
    """The seeds behind every number; where they differ, the screening design named."""
    table = seeds_table(runs)
    if table.empty or table.to_numpy().min() == table.to_numpy().max():
        return []
    most = int(table.to_numpy().max())
    full = "; ".join(
        f"{preset}: {', '.join(table.index[table[preset] == most])}"
        for preset in table.columns
        if (table[preset] == most).any()
    )
    return [
        "## Design",
        "",
        to_markdown(table.rename_axis("optimizer").reset_index()),
        "Completed seeds per configuration and workload. They differ: a *screening design*, "
        f"every configuration first with a few seeds, then {most} seeds for those a verdict "
        f"needs ({full}). A configuration with fewer "
        f"seeds gets no verdict (that needs n ≥ {MIN_VERDICT_N}); its intervals are wide, "
        "and the best tuned baseline of a workload is chosen on every configuration's median "
        "over the seeds it has.",
        "",
    ]


def _comparison_section(comparison: Comparison) -> list[str]:
    return [
        "## Comparison",
        "",
        to_markdown(comparison_display(comparison.aggregate)),
        "How to read it: statistics are over **completed** runs (diverged, interrupted and "
        "running ones are counted under *runs*, never averaged). WER is mean ± standard "
        f"deviation over seeds; *95% CI* is {_mean_ci_text(comparison.method, comparison.n_boot)}"
        ', "—" with a single seed; *interval* says how it was computed and from how many seeds '
        "(n). *Time to WER* is the training time (evaluation excluded) at which dev WER first "
        "reached the target, interpolated linearly between the two evaluations around it: "
        "mean over the seeds that reached it, and how many did.",
        "",
    ]


def _pairwise_section(comparison: Comparison) -> list[str]:
    reference, pairs = comparison.reference, comparison.pairs
    lines = [f"## {reference} against the others", ""]
    if pairs.empty:
        return [
            *lines,
            f"No completed `{reference}` runs beside other optimizers: nothing to compare.",
            "",
        ]
    return [
        *lines,
        to_markdown(pairwise_display(pairs)),
        f"ΔWER = {reference} − other: negative means {reference} reaches a lower WER. "
        f"{_pairwise_ci_text(comparison.method, comparison.n_boot)} Against a *baseline* this "
        f"asks whether {reference} helps; against an *ablation* (an optimizer registered as "
        f"{reference} with one part removed) whether that part does.",
        "",
        _VERDICT_TEXT,
        "",
    ]


BEST_TUNED = "best tuned baseline"


def headline_pairs(
    pairs: pd.DataFrame, workloads: Workloads | None, reference: str
) -> list[tuple[str, str, pd.Series]]:
    """(workload, what, pairwise row) on final dev WER, per workload: the reference against
    the best tuned baseline (what: BEST_TUNED), its ablations ("ablation") and its variants
    ("variant")."""
    picked = []
    dev = pairs[pairs["metric"] == "final_dev_wer"] if not pairs.empty else pairs
    for preset in dict.fromkeys(dev["preset"]) if not dev.empty else []:
        on = dev[dev["preset"] == preset]
        best = best_baseline(workloads.times, preset, reference) if workloads else None
        picks = [(BEST_TUNED, on[(on["kind"] == "baseline") & (on["other"] == best)])]
        picks += [
            ("ablation", on[on["kind"] == "ablation"]),
            ("variant", on[on["kind"] == "variant"]),
        ]
        picked += [(preset, what, r) for what, chosen in picks for _, r in chosen.iterrows()]
    return picked


def headline(pairs: pd.DataFrame, workloads: Workloads | None, reference: str) -> pd.DataFrame:
    """Per workload: the reference against the best tuned baseline, against its ablation and
    against its variants (final dev WER), each ΔWER with its interval, n and method."""
    rows = [
        {
            "workload": preset,
            "comparison": f"{r['reference']} − {r['other']} ({what})",
            "ΔWER [95% CI]": f"{r['delta']:+.3f} {_ci_text(r['ci_low'], r['ci_high'])}",
            "n, method": interval_label(r["method"], r["n"], r["pairing"]),
            "verdict": r["verdict"],
        }
        for preset, what, r in headline_pairs(pairs, workloads, reference)
    ]
    return pd.DataFrame(
        rows, columns=["workload", "comparison", "ΔWER [95% CI]", "n, method", "verdict"]
    )


def headline_summary(
    pairs: pd.DataFrame, workloads: Workloads | None, reference: str
) -> pd.DataFrame:
    """The headline in one table (the README's): a row per workload, a column per comparison
    (the best tuned baseline, then each ablation and variant by name); each cell ΔWER and its
    interval, the baseline's name, n and method, then the verdict without its explanation."""
    cells: dict[str, dict[str, str]] = {}
    for preset, what, r in headline_pairs(pairs, workloads, reference):
        column = f"{reference} − {BEST_TUNED if what == BEST_TUNED else r['other']}"
        named = f"{r['other']}; " if what == BEST_TUNED else ""
        how = interval_label(r["method"], r["n"], r["pairing"])
        verdict = str(r["verdict"]).split(" (")[0]
        cells.setdefault(preset, {})[column] = (
            f"{r['delta']:+.3f} {_ci_text(r['ci_low'], r['ci_high'])} ({named}{how}): {verdict}"
        )
    frame = pd.DataFrame.from_dict(cells, orient="index").fillna(MISSING)
    return frame.rename_axis("workload").reset_index()


def _ci_text(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "[—]"
    return f"[{low:+.3f}, {high:+.3f}]"


def _headline_section(
    pairs: pd.DataFrame, workloads: Workloads | None, reference: str
) -> list[str]:
    table = headline(pairs, workloads, reference)
    if table.empty:
        return []
    lines = [
        "## Headline",
        "",
        to_markdown(headline_summary(pairs, workloads, reference)),
        to_markdown(table),
        f"ΔWER = {reference} − other on final dev WER (negative: {reference} lower). The best "
        "tuned baseline of a workload is the baseline with the lowest median final dev WER. "
        f"A verdict needs the interval to exclude 0 and n ≥ {MIN_VERDICT_N}.",
        "",
    ]
    scores = scores_display(workloads) if workloads is not None else None
    if scores is not None:
        lines += [
            to_markdown(scores),
            "Performance-profile scores (AlgoPerf; 1: fastest to the target on every workload, "
            f"0: never within {TAU_MAX:g}× the fastest): *by time* ranks the training seconds "
            "to the workload's target, *by steps* the optimizer steps to it (what the updates "
            "buy, whatever a step costs).",
            "",
        ]
    return lines


_VALUES_TEXT = {
    "time": (
        "Each cell: the **median** over the seeds of the training seconds to the workload's "
        "target dev WER (in the header; set from the best tuned baseline's seeds where "
        "`fambench/workloads/targets/` has a file), a seed that missed the target counting as "
        "infinitely slow; then how many seeds reached it of those timed. Runs that shared "
        "their cores with other processes (*contended*, see the runs table) are not timed."
    ),
    "steps": (
        "The same by optimizer steps: each cell the median over the completed seeds of the "
        "step at which dev WER first reached the target (interpolated between evaluations), "
        "then how many seeds reached it. Every completed seed counts: steps do not depend on "
        "what else ran on the machine."
    ),
}


def _workloads_section(workloads: Workloads | None, out_dir: Path) -> list[str]:
    if workloads is None:
        return []
    shown = workloads_displays(workloads)
    lines = ["## Across workloads", ""]
    for profile, values, display in zip(
        workloads.profiles(), shown.values, shown.profiles, strict=True
    ):
        lines += [f"### By {profile.axis}", "", to_markdown(values), _VALUES_TEXT[profile.axis], ""]
        if display is None:
            continue
        plot = profile_plot_path(out_dir / PROFILE_PLOT, profile.axis).name
        lines += [
            to_markdown(display),
            f"Performance profile (AlgoPerf) by {profile.axis} over {profile.n_profiled} "
            f"workloads: ρ(τ) is the share of workloads on which an optimizer's {profile.axis} "
            f"to the target is within τ × the fastest optimizer's (∞ when it missed the "
            f"target); the score is ρ's mean over τ ∈ [1, {TAU_MAX:g}] (1: fastest everywhere; "
            f"0: never within {TAU_MAX:g}×).",
            "",
            f"![Performance profile by {profile.axis}]({plot})",
            "",
        ]
    if not shown.speedups.empty:
        lines += [
            "### Speedups",
            "",
            to_markdown(shown.speedups),
            "Speedup: the baseline's median time to target ÷ the optimizer's (above 1: faster "
            "than the baseline; the baseline is the best tuned baseline of the workload unless "
            "one was named); the interval is a paired t-interval of the mean log-time ratio "
            "over the seeds on which both reached the target, exponentiated. A configuration "
            "whose seeds mostly missed the target has a median time of ∞ and no ratio; an "
            "interval beside it covers only the seeds on which both reached the target.",
            "",
        ]
    return lines


def _ledger_section(ledger: pd.DataFrame | None) -> list[str]:
    if ledger is None or ledger.empty:
        return []
    emulated = (
        "*emulated bf16* the thread-hours of bf16 runs on a CPU without bf16 dot products "
        "(their WER counts, their times are left out of every comparison), "
        if has_emulated_bf16(ledger)
        else ""
    )
    return [
        "## Compute ledger",
        "",
        to_markdown(ledger_display(ledger)),
        "What the runs cost, per phase and optimizer (ledger.csv): *CPU h* the processes' own "
        "CPU time, *thread h* (training + evaluation seconds) × threads, the cores a run held; "
        "*uncontended* the thread-hours of runs that had their cores to themselves (their "
        f"times are measurements), {emulated}"
        "*runs not measured* those that ran before contention was recorded. The tuning phase "
        "counts the trials of the directories given with "
        "`--tuning-runs` or named in the results directory's report.json.",
        "",
    ]


_VERDICT_TEXT = (
    "*verdict*: the optimizer with the lower WER, named only when the interval excludes 0 "
    f"**and** n ≥ {MIN_VERDICT_N} seeds (n: pairs when paired, else the smaller group); "
    "otherwise *inconclusive*, with about how many seeds would resolve a difference of the "
    "observed size: a power calculation (two-sided 5% level, 80% power) that takes the "
    "observed difference and its seed-to-seed standard deviation as the truth (column "
    f"`seeds_needed` of pairwise.csv; the verdict shows at least {MIN_VERDICT_N}). "
    "With 2–3 seeds a real difference of a few WER points usually stays inconclusive: "
    "run more seeds before drawing a conclusion."
)


def _mean_ci_text(method: str, n_boot: int) -> str:
    if method == "bootstrap":
        return (
            f"a percentile bootstrap of the mean ({n_boot:,} resamples; chosen with "
            "`--ci-method bootstrap`: below about ten seeds it is too narrow)"
        )
    return "a Student-t interval of the mean (mean ± t(0.975, n−1) · sd / √n)"


def _pairwise_ci_text(method: str, n_boot: int) -> str:
    if method == "bootstrap":
        return (
            f"*paired*: percentile bootstrap ({n_boot:,} resamples) over the per-seed "
            "differences (the same seed gives both runs the same initialisation and data "
            "order); *unpaired*: independent bootstraps of the two means, used when fewer than "
            "two seeds match. Chosen with `--ci-method bootstrap`; below about ten seeds these "
            "intervals are too narrow."
        )
    return (
        "*paired*: a paired t-interval of the per-seed differences (the same seed gives both "
        "runs the same initialisation and data order); *unpaired*: Welch's t-interval of the "
        "difference of means, used when fewer than two seeds match."
    )


def _code(text: str) -> str:
    # Inline code that survives backticks inside the text (GitHub markdown rule).
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _counts(values: pd.Series) -> str:
    counts = values.value_counts(sort=False)
    return ", ".join(f"{n} {name}" for name, n in counts.items())


_PLOT_TITLES = {
    "train_loss_vs_step": "Train loss against step",
    "train_loss_vs_time": "Train loss against training seconds",
    "dev_wer_vs_time": "Dev WER against training seconds",
    "dev_cer_vs_time": "Dev CER against training seconds",
    "momentum": "Effective momentum per parameter group",
    "bands": "Band-power share per parameter group",
}


def _plots_section(plots: Sequence[Path], out_dir: Path, presets: list[str]) -> list[str]:
    lines = ["## Plots", ""]
    if not plots:
        return [*lines, "No metric rows to plot.", ""]
    lines += [
        "Lines are the mean over completed seeds, interpolated onto a common grid; the band is "
        "a 95% bootstrap interval over seeds (none with one seed). The momentum and band "
        "plots come from the trace an optimizer keeps in its run directory (the file named by "
        "`trace` in config.json).",
        "",
    ]
    for plot in plots:
        stem = plot.stem
        kind = next((k for k in _PLOT_TITLES if stem.endswith(k)), stem)
        title = _PLOT_TITLES.get(kind, stem)
        subject = stem[: -len(kind)].strip("-") if kind != stem else ""
        if len(presets) == 1 and subject.startswith(presets[0]):
            subject = subject[len(presets[0]) :].strip("-")  # one preset: the title says it
        heading = f"{title} — {subject}" if subject else title
        rel = Path(os.path.relpath(plot, out_dir)).as_posix()
        lines += [f"### {heading}", "", f"![{heading}]({rel})", ""]
    return lines


def _runs_section(runs: pd.DataFrame) -> list[str]:
    table = pd.DataFrame(
        {
            "run": runs["run_id"],
            "optimizer": runs["optimizer"],
            "seed": runs["seed"].astype(str),
            "status": runs["status"],
            "steps": runs["steps"].map(lambda v: fmt_num(v, 0)),
            "train s": runs["train_s"].map(lambda v: fmt_num(v, 1)),
            "CPU s / wall s": [
                f"{fmt_num(c, 0)} / {fmt_num(w, 0)}"
                for c, w in zip(runs["cpu_s"], runs["wall_s"], strict=True)
            ],
            "threads": runs["threads"].map(lambda v: fmt_num(v, 0)),
            "others' cores": runs["others_cores_peak"].map(lambda v: fmt_num(v, 2)),
            "contended": runs["contended"].map(
                lambda v: "yes" if v is True else ("no" if v is False else "—")
            ),
            "final dev WER": runs["final_dev_wer"].map(fmt_num),
            "best dev WER": runs["best_dev_wer"].map(fmt_num),
            "test WER": runs["test_wer"].map(fmt_num),
            "message": runs["message"].fillna(""),
        }
    )
    return ["## Runs", "", to_markdown(table)]


def _provenance_section(runs: pd.DataFrame) -> list[str]:
    keys = [
        ("fambench_version", "fambench"),
        ("git_commit", "git commit"),
        ("python", "Python"),
        ("torch", "torch"),
        ("torchaudio", "torchaudio"),
        ("device", "device"),
        ("threads", "threads"),
        ("hostname", "host"),
        ("optimizer_source", "optimizer code"),
    ]
    rows = []
    for column, label in keys:
        values = runs[column].replace("", "unknown").value_counts(sort=False)
        if len(values) == 1:
            rows.append({"": label, "value": f"`{values.index[0]}`"})
        else:
            rows.append(
                {"": label, "value": ", ".join(f"`{v}` ({n} runs)" for v, n in values.items())}
            )
    started = runs["started_at"].replace("", math.nan).dropna()
    if len(started):
        rows.append({"": "started", "value": f"{started.min()} … {started.max()}"})
    lines = ["## Provenance", "", to_markdown(pd.DataFrame(rows)), "<details>"]
    lines += ["<summary>Command line of each run</summary>", ""]
    for _, run in runs.iterrows():
        command = run["command"] or "unknown"
        lines.append(f"- `{run['run_id']}`: {_code(command)}")
    lines += ["", "</details>", ""]
    return lines
