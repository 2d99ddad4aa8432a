"""Tables: the display frames of a comparison and every output format, written once.

Display frames hold text, ready to print (what the table and markdown formats show); the
numeric frames of fambench.analysis are what the csv and parquet formats write.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.markup import escape

from fambench.analysis.aggregate import MIN_VERDICT_N, several_budgets
from fambench.analysis.comparison import Comparison
from fambench.analysis.labels import MISSING, as_float, budget_labels
from fambench.analysis.load import COMPARE_STATUSES
from fambench.analysis.profiles import (
    AXES,
    Profile,
    Workloads,
    axis_runs,
    performance_profile,
    profile_scores,
)
from fambench.errors import ConfigError
from fambench.fileio import atomic_write, write_text

TABLE_FORMATS = ("table", "markdown", "csv", "parquet")
_METRIC_LABELS = {
    "final_dev_wer": "final dev WER",
    "best_dev_wer": "best dev WER",
    "test_wer": "test WER",
}


def fmt_num(value: object, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or "—" when missing."""
    x = as_float(value)
    return f"{x:.{digits}f}" if math.isfinite(x) else MISSING


def _fmt_ci(low: float, high: float, digits: int = 3) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return MISSING
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def interval_label(method: object, n: object, pairing: object = None) -> str:
    """``"t, n=3"``, ``"paired t, n=3"``, ``"Welch t, n=2"``, ``"bootstrap, n=12"``: how an
    interval was computed and from how many seeds; "—" without seeds."""
    count = as_float(n)
    if not math.isfinite(count) or count < 1:
        return MISSING
    name = str(method)
    if name == "t" and pairing in ("paired", "unpaired"):
        name = "paired t" if pairing == "paired" else "Welch t"
    return f"{name}, n={count:.0f}"


def _fmt_mean_std(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return MISSING
    return f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f}"


def _fmt_seconds(value: float) -> str:
    return f"{value:.0f}" if math.isfinite(value) and value >= 100 else fmt_num(value, 1)


def status_text(row: pd.Series | dict) -> str:
    """``"3 completed · 1 diverged"`` from the ``n_<status>`` counts of an aggregate row."""
    parts = [f"{int(row[f'n_{s}'])} {s}" for s in COMPARE_STATUSES if int(row.get(f"n_{s}", 0))]
    if int(row.get("n_other", 0)):
        parts.append(f"{int(row['n_other'])} other")
    return " · ".join(parts) or "none"


def timing_text(row: pd.Series | dict) -> str:
    """What the times of an aggregate row rest on when some seeds were contended or computed
    bf16 without native bf16: ``"2 of 5 contended, left out"`` (contended ones "included"
    under --include-contended), ``"1 of 5 on emulated bf16, left out"``; "" otherwise."""
    contended = int(row.get("n_contended", 0) or 0)
    emulated = int(row.get("n_bf16_emulated", 0) or 0)
    seeds, timed = int(row.get("n_seeds", 0)), int(row.get("n_timed", 0))
    parts = []
    if contended:
        fate = "included" if timed + emulated == seeds else "left out"
        parts.append(f"{contended} of {seeds} contended, {fate}")
    if emulated:
        parts.append(f"{emulated} of {seeds} on emulated bf16, left out")
    return "; ".join(parts)


def comparison_display(agg: pd.DataFrame) -> pd.DataFrame:
    """The aggregate table as human-readable strings (what the table/markdown formats show).

    *interval* says how the 95% CI was computed and from how many seeds ("t, n=3").
    """
    targets = {float(t) for t in agg["target_wer"] if math.isfinite(t)}
    ttt_column = f"time to WER {next(iter(targets)):.2f}" if len(targets) == 1 else "time to target"
    rows = [_comparison_row(r, ttt_column, len(targets) > 1) for _, r in agg.iterrows()]
    frame = pd.DataFrame(rows)
    if not any(frame["timing"]):
        frame = frame.drop(columns=["timing"])
    if several_budgets(agg):
        frame.insert(1, "budget", budget_labels(agg))
    if frame["preset"].nunique() == 1:
        frame = frame.drop(columns=["preset"])
    return frame


def _comparison_row(r: pd.Series, ttt_column: str, several_targets: bool) -> dict[str, str]:
    interval = interval_label(r.get("final_dev_wer_ci_method"), r.get("final_dev_wer_n"))
    best_ci = _fmt_ci(r["best_dev_wer_ci_low"], r["best_dev_wer_ci_high"])
    best = interval_label(r.get("best_dev_wer_ci_method"), r.get("best_dev_wer_n"))
    if best != interval and best_ci != MISSING:
        best_ci += f" ({best})"  # rare: a run with a final but no best WER, or the reverse
    return {
        "preset": r["preset"],
        "optimizer": r.get("config", r["optimizer"]),
        "hparams": r["hparams_key"],
        "seeds": str(int(r["n_seeds"])),
        "final dev WER": _fmt_mean_std(r["final_dev_wer_mean"], r["final_dev_wer_std"]),
        "95% CI": _fmt_ci(r["final_dev_wer_ci_low"], r["final_dev_wer_ci_high"]),
        "interval": interval,
        "best dev WER": _fmt_mean_std(r["best_dev_wer_mean"], r["best_dev_wer_std"]),
        "best 95% CI": best_ci,
        "test WER": _fmt_mean_std(r["test_wer_mean"], r["test_wer_std"]),
        ttt_column: _time_to_target_text(r, several_targets),
        "train s": _fmt_seconds(r["train_s"]),
        "steps/s": fmt_num(r["steps_per_s"], 2),
        "peak MB": fmt_num(r["peak_memory_mb"], 0),
        "runs": status_text(r),
        "timing": timing_text(r),
    }


def _time_to_target_text(r: pd.Series, several_targets: bool) -> str:
    """``"179 s (3/5)"``: mean time over the seeds that reached the target, and how many did."""
    if not math.isfinite(r["target_wer"]):
        return MISSING
    text = MISSING
    if math.isfinite(r["time_to_target_s"]):
        text = f"{_fmt_seconds(r['time_to_target_s'])} s"
    text += f" ({int(r['reached'])}/{int(r['n_seeds'])})"
    if several_targets:
        text += f" @ {r['target_wer']:.2f}"
    return text


def pairwise_display(pw: pd.DataFrame) -> pd.DataFrame:
    """The pairwise table as human-readable strings (with the budget when the runs of a preset
    had several); *interval* says how the 95% CI was computed and from how many seeds."""
    rows = []
    for _, r in pw.iterrows():
        pairing = (
            f"paired ({r['n_pairs']} seed{'' if r['n_pairs'] == 1 else 's'})"
            if r["pairing"] == "paired"
            else (f"unpaired ({r['n_reference']} vs {r['n_other']} seeds)")
        )
        rows.append(
            {
                "preset": r["preset"],
                "comparison": f"{r['reference']} − {r['other']}",
                "against": r["kind"],
                "metric": _METRIC_LABELS.get(str(r["metric"]), str(r["metric"])),
                "ΔWER": f"{r['delta']:+.3f}" if math.isfinite(r["delta"]) else MISSING,
                "95% CI": _fmt_ci(r["ci_low"], r["ci_high"]),
                "interval": interval_label(r["method"], r["n"], r["pairing"]),
                "pairing": pairing,
                "verdict": str(r["verdict"]),
            }
        )
    columns = [
        "preset", "comparison", "against", "metric", "ΔWER", "95% CI", "interval", "pairing",
        "verdict",
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    # The budget is shown when the runs had several, though pairs may exist at one only.
    if len(pw) and pw.attrs.get("several_budgets", several_budgets(pw)):
        frame.insert(1, "budget", budget_labels(pw))
    if frame["preset"].nunique() <= 1:
        frame = frame.drop(columns=["preset"])
    return frame


#: The τ values the profile table shows (the plot draws the whole step function).
TABLE_TAUS = (1.0, 1.5, 2.0, 3.0, 4.0)


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "not reached"
    return f"{value:.0f} s" if value >= 100 else f"{value:.1f} s"


def _steps(value: float) -> str:
    if math.isnan(value):
        return "—"
    return "not reached" if math.isinf(value) else f"{value:.0f}"


def times_display(profile: Profile, times: pd.DataFrame) -> pd.DataFrame:
    """Configurations × workloads as text: the median time (or steps) to target, and how
    many of the seeds that count on the axis reached the target ("not reached": more than
    half missed it; "—": no seed counts)."""
    counted = axis_runs(times, profile.axis)
    column, text = AXES[profile.axis], _seconds if profile.axis == "time" else _steps
    reached = counted.assign(hit=np.isfinite(counted[column])).groupby(["config", "preset"])
    counts = reached["hit"].agg(["sum", "size"])
    table = profile.table
    frame = pd.DataFrame({"optimizer": table.index})
    for preset in table.columns:
        target = times.loc[times["preset"] == preset, "target_wer"].iloc[0]
        cells = []
        for config in table.index:
            hit, size = counts.loc[(config, preset)] if (config, preset) in counts.index else (0, 0)
            cells.append(f"{text(table.loc[config, preset])} ({int(hit)}/{int(size)})")
        frame[f"{preset} (WER {target:.3f})"] = cells
    return frame


def profile_display(ratios: pd.DataFrame, taus: Sequence[float] = TABLE_TAUS) -> pd.DataFrame:
    """ρ(τ) at a few τ and the integrated score, per configuration."""
    profile = performance_profile(ratios, taus)
    frame = pd.DataFrame({"optimizer": ratios.index})
    for tau in taus:
        frame[f"ρ({tau:g})"] = [f"{v:.2f}" for v in profile[tau]]
    frame["score [1, 4]"] = [f"{v:.3f}" for v in profile_scores(ratios)]
    return frame


def scores_display(workloads: Workloads) -> pd.DataFrame | None:
    """Per configuration, its profile score by time and by steps (None below two profiled
    workloads by time); a column says over how many workloads."""
    if workloads.by_time.n_profiled < 2:
        return None
    frame = pd.DataFrame({"optimizer": workloads.by_time.ratios.index})
    for profile in workloads.profiles():
        header = f"score by {profile.axis} ({profile.n_profiled} workloads)"
        if profile.n_profiled < 2:
            frame[header] = MISSING
            continue
        scores = profile_scores(profile.ratios).reindex(frame["optimizer"])
        frame[header] = [fmt_num(v) for v in scores]
    return frame


def speedup_display(table: pd.DataFrame) -> pd.DataFrame:
    """The speedup table as text: ``×1.25 [1.05, 1.49] (paired t on log time, n=5)``."""
    rows = []
    for _, r in table.iterrows():
        ratio = r["speedup"]
        # A median of ∞: more than half of the timed seeds missed the target.
        if math.isnan(ratio):
            text = "— (both missed the target on most seeds)"
        elif ratio == 0:
            text = "— (missed the target on most seeds)"
        elif math.isinf(ratio):
            text = "∞ (the baseline missed the target on most seeds)"
        else:
            text = f"×{ratio:.2f}"
        interval = "—"
        if math.isfinite(r["ratio_low"]):
            text += f" [{r['ratio_low']:.2f}, {r['ratio_high']:.2f}]"
            # With a median of ∞ the interval covers only the seeds on which both got there.
            both = "" if math.isfinite(ratio) and ratio > 0 else " (seeds both reached it)"
            interval = f"paired t on log time, n={int(r['n'])}{both}"
        rows.append(
            {
                "preset": r["preset"],
                "optimizer": r["config"],
                "baseline": r["baseline"],
                "speedup": text,
                "interval": interval,
            }
        )
    return pd.DataFrame(rows, columns=["preset", "optimizer", "baseline", "speedup", "interval"])


@dataclass(frozen=True)
class WorkloadsDisplay:
    """The display frames across workloads: per axis (time, then steps) the values to target
    and the profile (None below two profiled workloads), then the speedups."""

    values: tuple[pd.DataFrame, pd.DataFrame]
    profiles: tuple[pd.DataFrame | None, pd.DataFrame | None]
    speedups: pd.DataFrame


def workloads_displays(workloads: Workloads) -> WorkloadsDisplay:
    """Every display frame of ``workloads``."""
    axes = workloads.profiles()
    return WorkloadsDisplay(
        tuple(times_display(p, workloads.times) for p in axes),
        tuple(profile_display(p.ratios) if p.n_profiled else None for p in axes),
        speedup_display(workloads.speedups),
    )


# --------------------------------------------------------------------------- the terminal


def terminal_comparison(agg: pd.DataFrame) -> pd.DataFrame:
    """The comparison made narrower for a terminal: each CI under its mean, and the runs that
    did not complete under the optimizer's name (rich markup in the column named by
    ``attrs["markup_column"]``; every other cell is plain text)."""
    unfinished_statuses = [*(s for s in COMPARE_STATUSES if s != "completed"), "other"]
    frame = comparison_display(agg)
    for mean, ci in (("final dev WER", "95% CI"), ("best dev WER", "best 95% CI")):
        pairs = zip(frame[mean], frame[ci], strict=True)
        frame[mean] = [m if c == MISSING else f"{m}\n{c}" for m, c in pairs]
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


def terminal_tables(comparison: Comparison) -> list[tuple[str, pd.DataFrame]]:
    """(title, display frame) of every table compare prints on a terminal, in order."""
    agg, reference = comparison.aggregate, comparison.reference
    methods = sorted(set(agg["final_dev_wer_ci_method"].dropna().astype(str)))
    how = " or ".join(f"{m}-interval" if m == "t" else m for m in methods) or "interval"
    tables = [
        (f"Comparison (completed runs; mean ± sd, 95% {how} of the mean)", terminal_comparison(agg))
    ]
    if not comparison.pairs.empty:
        title = (
            f"{reference} − other (negative: {reference} lower; a verdict needs the CI to "
            f"exclude 0 and n ≥ {MIN_VERDICT_N})"
        )
        tables.append((title, pairwise_display(comparison.pairs)))
    if comparison.workloads is not None:
        tables += _workloads_tables(comparison.workloads)
    return tables


#: The median per workload, as its table's title says it, per axis.
VALUES_TITLES = {
    "time": "Time to target per workload (median over timed seeds; reached/timed)",
    "steps": "Steps to target per workload (median over seeds; reached/seeds)",
}


def _workloads_tables(workloads: Workloads) -> list[tuple[str, pd.DataFrame]]:
    shown = workloads_displays(workloads)
    tables = []
    for profile, values, display in zip(
        workloads.profiles(), shown.values, shown.profiles, strict=True
    ):
        tables.append((VALUES_TITLES[profile.axis], values))
        if display is not None:
            n = profile.n_profiled
            title = (
                f"Performance profile by {profile.axis} over {n} workload"
                f"{'' if n == 1 else 's'}: ρ(τ) = share of workloads within τ × the fastest; "
                "score = its mean over τ in [1, 4]"
            )
            tables.append((title, display))
    if not shown.speedups.empty:
        tables.append(("Speedup: baseline's time to target ÷ the optimizer's", shown.speedups))
    return tables


# --------------------------------------------------------------------------- formats and files


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped)."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([header, rule, *body]) + "\n"


def check_format(fmt: str) -> str:
    """The table format, lower-cased; ConfigError listing the valid ones otherwise."""
    name = fmt.strip().lower()
    if name not in TABLE_FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(TABLE_FORMATS)}")
    return name


def format_from_suffix(path: Path) -> str:
    """The table format a file name asks for (``.csv``, ``.parquet``, ``.md``; else table)."""
    return {".csv": "csv", ".parquet": "parquet", ".md": "markdown"}.get(
        path.suffix.lower(), "table"
    )


def render_table(frame: pd.DataFrame, fmt: str) -> str:
    """``frame`` as csv, markdown or plain text (``table``); ConfigError for parquet.

    ``frame`` is the raw numeric table for csv and the display table otherwise.
    """
    fmt = check_format(fmt)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "markdown":
        return to_markdown(frame)
    if fmt == "table":
        return frame.to_string(index=False) + "\n"
    raise ConfigError("parquet is binary: write it to a file")


def write_table(frame: pd.DataFrame, path: str | os.PathLike[str], fmt: str) -> Path:
    """Write ``frame`` as parquet or as render_table's text, atomically (temp, then rename)."""
    if check_format(fmt) == "parquet":
        return atomic_write(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))
    return write_text(path, render_table(frame, fmt))


def comparison_markdown(comparison: Comparison) -> str:
    """Every table of a comparison as markdown: aggregate, pairwise (when there are pairs),
    then times across workloads, the profile and the speedups, one blank line apart."""
    text = to_markdown(comparison_display(comparison.aggregate))
    if not comparison.pairs.empty:
        text += "\n" + to_markdown(pairwise_display(comparison.pairs))
    if comparison.workloads is not None:
        shown = workloads_displays(comparison.workloads)
        for values, profile in zip(shown.values, shown.profiles, strict=True):
            text += "\n" + to_markdown(values)
            if profile is not None:
                text += "\n" + to_markdown(profile)
        if not shown.speedups.empty:
            text += "\n" + to_markdown(shown.speedups)
    return text


def comparison_text(comparison: Comparison, fmt: str) -> str:
    """A comparison as text: every table for markdown, else the aggregate (its numbers for
    csv, its display frame for table); ConfigError for parquet."""
    name = check_format(fmt)
    if name == "markdown":
        return comparison_markdown(comparison)
    agg = comparison.aggregate
    return render_table(agg if name == "csv" else comparison_display(agg), name)


def write_comparison(comparison: Comparison, path: str | os.PathLike[str], fmt: str) -> Path:
    """Write a comparison in ``fmt``: the aggregate's numbers for parquet, comparison_text
    otherwise."""
    if check_format(fmt) == "parquet":
        return write_table(comparison.aggregate, path, "parquet")
    return write_text(path, comparison_text(comparison, fmt))
