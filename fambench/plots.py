"""PNG plots of a ResultSet: learning curves with CI bands over seeds, and optimizer traces
(per-group momentum and band powers, from trace records such as FAM's).

Figures are built with `matplotlib.figure.Figure` (no pyplot state, no display needed) and saved
atomically. Curves average *completed* runs, like the tables; a group with no completed run is
drawn from whatever runs it has and labelled "(partial)".
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fambench.analysis.aggregate import bf16_emulated, group_target
from fambench.analysis.labels import budget_label
from fambench.analysis.load import GROUP_KEYS, ResultSet
from fambench.analysis.profiles import TAU_MAX, Profile, Workloads, profile_scores
from fambench.errors import ConfigError
from fambench.fileio import atomic_write
from fambench.optim.fam.trace import read_trace

log = logging.getLogger(__name__)

GRID_POINTS = 200
BAND_BOOTSTRAP = 2_000
_DPI = 110
LINE_STYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Curve:
    """One line of a plot: the mean over runs on a common grid, with a 95% band (NaN if n < 2)."""

    label: str
    optimizer: str
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_runs: int


def plot_all(
    results: ResultSet, out_dir: str | os.PathLike[str], *, target_wer: float | None = None
) -> list[Path]:
    """Write every plot for every preset into ``out_dir``; return the paths written."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    for preset in results.presets:
        prefix = _safe(preset)
        specs = [
            ("step", "train_loss", f"{prefix}-train_loss_vs_step.png"),
            ("train_s", "train_loss", f"{prefix}-train_loss_vs_time.png"),
            ("train_s", "dev_wer", f"{prefix}-dev_wer_vs_time.png"),
            ("train_s", "dev_cer", f"{prefix}-dev_cer_vs_time.png"),
        ]
        for x, y, name in specs:
            path = plot_curves(
                results, preset, x=x, y=y, path=out_dir / name, target_wer=target_wer
            )
            if path is not None:
                written.append(path)
        written.extend(plot_traces(results, preset, out_dir))
    return written


# --------------------------------------------------------------------------- learning curves


def seed_curves(results: ResultSet, preset: str, *, x: str, y: str) -> list[Curve]:
    """One Curve per configuration of ``preset`` (optimizer, hyperparameters and budget, as in
    compare): seeds interpolated onto a common grid.

    The grid spans the x range every run covers (so each point averages all seeds); when the
    runs do not overlap, the first run alone is drawn. On the time axis (``train_s``), runs on
    emulated bf16 are left out where others ran the preset.
    """
    runs = results.runs[results.runs["preset"] == preset]
    if x == "train_s":
        # A run on emulated bf16 took other seconds than bf16 hardware takes: it stays off a
        # time axis that runs on the hardware share (fambench.workloads.bf16_products).
        emulated = bf16_emulated(runs)
        if not emulated.all():
            runs = runs[~emulated]
    configurations = list(runs.groupby(list(GROUP_KEYS[1:]), sort=False, dropna=False))
    # Each optimizer's plain configuration first, so that it gets the solid line.
    order = list(dict.fromkeys(str(key[0]) for key, _ in configurations))
    configurations.sort(
        key=lambda c: (order.index(str(c[0][0])), str(c[1]["config"].iloc[0]) != str(c[0][0]))
    )
    labels = _configuration_labels(configurations)
    curves: list[Curve] = []
    for (key, group), label in zip(configurations, labels, strict=True):
        optimizer = key[0]
        done = group[group["status"] == "completed"]
        partial = done.empty
        chosen = group if partial else done
        series = []
        for run_id in chosen["run_id"]:
            rows = results.metrics[results.metrics["run_id"] == run_id]
            rows = rows[np.isfinite(rows[x]) & np.isfinite(rows[y])]
            rows = rows.sort_values(x, kind="stable").drop_duplicates(x, keep="last")
            if len(rows) >= 1:
                series.append((rows[x].to_numpy(float), rows[y].to_numpy(float)))
        if not series:
            continue
        curves.append(_mean_curve(label, str(optimizer), series, partial))
    return curves


def _configuration_labels(configurations: list[tuple[tuple, pd.DataFrame]]) -> list[str]:
    """A short legend label per configuration ((optimizer, hparams_key, budgets), runs).

    The optimizer's name where it has one configuration; else compare's label
    (``fam[sampling=random]``) where those tell its configurations apart; else the
    hyperparameters, and the budget where budgets differ.
    """
    by_optimizer: dict[str, list[int]] = {}
    for i, (key, _) in enumerate(configurations):
        by_optimizer.setdefault(str(key[0]), []).append(i)
    labels = [""] * len(configurations)
    for optimizer, members in by_optimizer.items():
        configs = [str(configurations[i][1]["config"].iloc[0]) for i in members]
        budgets = [budget_label(*configurations[i][0][2:]) for i in members]
        for i, config, budget in zip(members, configs, budgets, strict=True):
            if len(members) == 1:
                labels[i] = optimizer
            elif len(set(configs)) == len(members):
                labels[i] = config
            else:
                hkey = configurations[i][0][1]
                labels[i] = f"{optimizer} [{hkey}" + (
                    f", {budget}]" if len(set(budgets)) > 1 else "]"
                )
    return labels


def _mean_curve(
    label: str, optimizer: str, series: list[tuple[np.ndarray, np.ndarray]], partial: bool
) -> Curve:
    start = max(xs[0] for xs, _ in series)
    stop = min(xs[-1] for xs, _ in series)
    if len(series) == 1 or stop <= start:
        if len(series) > 1:  # no common range: show the longest run alone rather than a mix
            series = [max(series, key=lambda s: s[0][-1] - s[0][0])]
        xs, ys = series[0]
        nan = np.full_like(ys, np.nan)
        label += " (n=1)" + (" (partial)" if partial else "")
        return Curve(label, optimizer, xs, ys, nan, nan, 1)
    label += f" (n={len(series)})" + (" (partial)" if partial else "")
    grid = np.linspace(start, stop, GRID_POINTS)
    values = np.stack([np.interp(grid, xs, ys) for xs, ys in series])
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(series), size=(BAND_BOOTSTRAP, len(series)))
    boot = values[idx].mean(axis=1)
    low, high = np.quantile(boot, [0.025, 0.975], axis=0)
    return Curve(label, optimizer, grid, values.mean(axis=0), low, high, len(series))


def plot_curves(
    results: ResultSet,
    preset: str,
    *,
    x: str,
    y: str,
    path: Path,
    target_wer: float | None = None,
) -> Path | None:
    """Plot ``y`` against ``x`` (``step`` or ``train_s``), one line per optimizer; None without
    data."""
    curves = seed_curves(results, preset, x=x, y=y)
    if not curves:
        log.info("no %s data for preset %s; %s not written", y, preset, path.name)
        return None
    colors = optimizer_colors(results)
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    drawn: dict[str, int] = {}  # configurations of each optimizer so far
    for curve in curves:
        color = colors.get(curve.optimizer)
        # An optimizer's configurations share its colour and differ in line style.
        style = LINE_STYLES[drawn.get(curve.optimizer, 0) % len(LINE_STYLES)]
        drawn[curve.optimizer] = drawn.get(curve.optimizer, 0) + 1
        ax.plot(curve.x, curve.mean, label=curve.label, color=color, linewidth=1.6, linestyle=style)
        if np.isfinite(curve.low).any():
            ax.fill_between(curve.x, curve.low, curve.high, color=color, alpha=0.2, linewidth=0)
    if y == "train_loss" and all(np.nanmin(c.mean) > 0 for c in curves):
        ax.set_yscale("log")
    if y == "dev_wer":
        target = target_wer if target_wer is not None else _preset_target(results, preset)
        if target is not None:
            ax.axhline(
                target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.4g}"
            )
    ax.set_xlabel({"step": "step", "train_s": "training seconds"}.get(x, x))
    ax.set_ylabel(
        {"train_loss": "train loss (CTC)", "dev_wer": "dev WER", "dev_cer": "dev CER"}.get(y, y)
    )
    ax.set_title(f"{preset}: {ax.get_ylabel()} vs {ax.get_xlabel()} (mean, 95% CI over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def optimizer_colors(results: ResultSet) -> dict[str, tuple]:
    """A stable colour per optimizer name, shared by every plot of a ResultSet."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    names = list(dict.fromkeys(results.runs["optimizer"]))
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def _preset_target(results: ResultSet, preset: str) -> float | None:
    """The target compare times against: the recorded workload target, else the runs' own."""
    runs = results.runs[results.runs["preset"] == preset]
    target = group_target(runs, None) if len(runs) else math.nan
    return None if math.isnan(target) else target


# --------------------------------------------------------------------------- optimizer traces


def plot_traces(results: ResultSet, preset: str, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Per group of runs with a trace: effective momentum and band-power heatmaps."""
    out_dir = Path(out_dir)
    runs = results.runs[(results.runs["preset"] == preset) & (results.runs["trace"] != "")]
    keys_per_opt = runs.groupby("optimizer")["hparams_key"].nunique()
    written: list[Path] = []
    for (optimizer, hkey), group in runs.groupby(["optimizer", "hparams_key"], sort=False):
        done = group[group["status"] == "completed"]
        chosen = group if done.empty else done
        frames = [read_trace(path) for path in chosen["trace"]]
        trace = (
            pd.concat([f for f in frames if len(f)], ignore_index=True)
            if any(len(f) for f in frames)
            else pd.DataFrame()
        )
        if trace.empty:
            continue
        name = f"{_safe(preset)}-{_safe(optimizer)}"
        if keys_per_opt.get(optimizer, 1) > 1:
            name += f"-{_safe(hkey)}"
        title = f"{preset}: {optimizer} ({len(chosen)} run{'s' if len(chosen) > 1 else ''})"
        written.append(_plot_momentum(trace, out_dir / f"{name}-momentum.png", title))
        written.append(_plot_bands(trace, out_dir / f"{name}-bands.png", title))
    return written


def _group_label(trace: pd.DataFrame, group: int) -> str:
    handlers = trace.loc[trace["group"] == group, "handler"]
    handler = handlers.mode().iloc[0] if len(handlers) else ""
    return f"group {group}" + (f" ({handler})" if handler else "")


def _plot_momentum(trace: pd.DataFrame, path: Path, title: str) -> Path:
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    means = trace.groupby(["group", "step"])["momentum"].mean()
    for group in sorted(trace["group"].unique()):
        line = means.loc[group]
        ax.plot(line.index, line.to_numpy(), label=_group_label(trace, group), linewidth=1.4)
    ax.set_xlabel("step")
    ax.set_ylabel("effective momentum (mean over parameters)")
    ax.set_title(f"{title}: effective momentum per parameter group")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def band_shares(trace: pd.DataFrame, group: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, shares[step, band]): each band's share of the group's power, mean over parameters.

    Only records with the group's most common band count are used.
    """
    rows = trace[trace["group"] == group]
    lengths = rows["band_ema"].map(len)
    rows = rows[lengths == lengths.mode().iloc[0]] if len(rows) else rows
    if rows.empty or len(rows["band_ema"].iloc[0]) == 0:
        return np.array([]), np.empty((0, 0))
    power = np.abs(np.array(rows["band_ema"].tolist(), dtype=float))
    total = power.sum(axis=1, keepdims=True)
    shares = np.divide(power, total, out=np.full_like(power, np.nan), where=total > 0)
    frame = pd.DataFrame(shares).assign(step=rows["step"].to_numpy())
    mean = frame.groupby("step").mean()
    return mean.index.to_numpy(), mean.to_numpy()


def _plot_bands(trace: pd.DataFrame, path: Path, title: str) -> Path:
    groups = sorted(trace["group"].unique())
    fig = Figure(figsize=(7.5, 1.0 + 1.9 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    data = {group: band_shares(trace, group) for group in groups}
    # One colour scale for every group, stretched to the data: shares near 1/n_bands would all
    # look alike on a fixed 0..1 scale.
    top = max((float(np.nanmax(sh)) for _, sh in data.values() if sh.size), default=1.0)
    image = None
    for ax, group in zip(axes, groups, strict=True):
        steps, shares = data[group]
        ax.set_ylabel(_group_label(trace, group).replace(" (", "\n("), fontsize="small")
        if shares.size == 0:
            ax.text(0.5, 0.5, "no band data", ha="center", va="center", transform=ax.transAxes)
            continue
        half = (steps[1] - steps[0]) / 2 if len(steps) > 1 else 0.5
        image = ax.imshow(
            shares.T,
            aspect="auto",
            origin="lower",
            interpolation="nearest",
            extent=(steps[0] - half, steps[-1] + half, -0.5, shares.shape[1] - 0.5),
            vmin=0.0,
            vmax=top if np.isfinite(top) and top > 0 else 1.0,
            cmap="viridis",
        )
        ax.set_yticks(range(shares.shape[1]))
        ax.tick_params(labelsize="x-small")
    axes[-1].set_xlabel("step")
    axes[0].set_title(f"{title}: band power share per group (band 0 = lowest frequency)")
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="share of band power", shrink=0.9)
    return _save(fig, path)


# --------------------------------------------------------------------------- helpers


def _save(fig: Figure, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI))


def _safe(name: object) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "x"


# --------------------------------------------------------------------------- across workloads


#: What τ divides, per axis (the x label of a profile plot).
_AXIS_TEXT = {"time": "time to target", "steps": "steps to target"}


def plot_profile(profile: Profile, path: str | os.PathLike[str]) -> Path:
    """The performance-profile plot of one axis; ConfigError below two profiled workloads."""
    if profile.n_profiled < 2:
        raise ConfigError(
            f"a performance profile by {profile.axis} needs every configuration's value on at "
            f"least two workloads; complete: {profile.profiled_names()} of "
            f"{', '.join(profile.table.columns)}"
        )
    return plot_performance_profile(profile.ratios, Path(path), axis=profile.axis)


def profile_plot_path(path: str | os.PathLike[str], axis: str) -> Path:
    """Where the profile of ``axis`` goes beside ``path`` (the time profile's): the path
    itself for time, ``<stem>_<axis><suffix>`` otherwise."""
    path = Path(path)
    return path if axis == "time" else path.with_name(f"{path.stem}_{axis}{path.suffix}")


def write_profile_plots(workloads: Workloads | None, path: str | os.PathLike[str]) -> list[Path]:
    """plot_profile by time at ``path`` and by steps beside it (profile_plot_path), where there
    are two profiled workloads; else a warning, and nothing."""
    if workloads is None or workloads.by_time.n_profiled < 2:
        log.warning(
            "no %s written: a performance profile needs every configuration's time on at "
            "least two workloads",
            path,
        )
        return []
    profiles = [p for p in workloads.profiles() if p.n_profiled >= 2]
    return [plot_profile(p, profile_plot_path(path, p.axis)) for p in profiles]


def plot_performance_profile(
    ratios: pd.DataFrame, path: Path, tau_max: float = TAU_MAX, *, axis: str = "time"
) -> Path:
    """ρ_s(τ) for τ in [1, tau_max], one step line per configuration (see
    fambench.analysis.profiles); ``axis`` names what the ratios are of."""
    scores = profile_scores(ratios, tau_max)
    fig = Figure(figsize=(6.4, 4.2), dpi=_DPI)
    ax = fig.add_subplot()
    for i, config in enumerate(ratios.index):
        row = ratios.loc[config].to_numpy(dtype=float)
        taus = sorted({1.0, tau_max, *(r for r in row if 1.0 <= r <= tau_max)})
        fractions = [float((row <= tau).mean()) for tau in taus]
        # Configurations often share a profile (e.g. all 0): later lines are thinner and dashed
        # so that one drawn over another leaves both visible.
        ax.step(
            taus,
            fractions,
            where="post",
            label=f"{config} (score {scores[config]:.3f})",
            linewidth=max(1.0, 4.0 - 0.7 * i),
            linestyle=LINE_STYLES[i % len(LINE_STYLES)],
        )
    ax.set_xlim(1.0, tau_max)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"τ ({_AXIS_TEXT[axis]} ÷ fastest on the workload)")
    ax.set_ylabel(f"fraction of the {ratios.shape[1]} workloads within τ")
    ax.set_title(f"Performance profile by {axis}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)
