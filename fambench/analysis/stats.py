"""Statistics over seeds: Student-t, paired-t and Welch intervals, percentile bootstraps, and
the power calculation behind "about how many seeds would resolve this"."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from fambench.errors import ConfigError

DEFAULT_BOOTSTRAP = 10_000

#: How an interval is computed: ``t`` (the default) is Student's t, a paired t-interval for
#: per-seed differences and Welch's interval for two independent groups; ``bootstrap`` is a
#: percentile bootstrap, sound from about ten seeds up (with three, its interval is about the
#: range of the data and far too narrow).
CI_METHODS = ("t", "bootstrap")
DEFAULT_CI_METHOD = "t"
#: The power calculation behind ``seeds_needed``: a two-sided test at ALPHA with power POWER.
ALPHA = 0.05
POWER = 0.8


def check_ci_method(method: str) -> str:
    """The interval method, lower-cased; ConfigError listing the valid ones otherwise."""
    name = str(method).strip().lower()
    if name not in CI_METHODS:
        raise ConfigError(f"unknown CI method {method!r}; choose one of {', '.join(CI_METHODS)}")
    return name


def finite_values(values: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    """The finite values, as a float array."""
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of the finite values: mean ± t_{(1+level)/2, n−1}·sd/√n.

    (nan, nan) with fewer than two finite values; (mean, mean) when they are all equal.
    """
    x = finite_values(values)
    if x.size < 2:
        return (math.nan, math.nan)
    mean = float(x.mean())
    half = float(stats.t.ppf((1.0 + level) / 2.0, x.size - 1)) * float(x.std(ddof=1))
    half /= math.sqrt(x.size)
    return (mean - half, mean + half)


def paired_t_interval(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """Paired-t interval of mean(a − b): `t_interval` of the per-pair differences.

    ``a`` and ``b`` are aligned (element i of both comes from seed i); a pair with a missing
    value is left out. ValueError when their lengths differ.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired values need equal lengths, got {x.size} and {y.size}")
    return t_interval(x - y, level)


def welch_interval(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """Welch's interval of mean(a) − mean(b) for independent groups (unequal variances,
    Welch–Satterthwaite degrees of freedom), as scipy's
    ``ttest_ind(a, b, equal_var=False).confidence_interval(level)``.

    (nan, nan) unless both have two finite values; (Δ, Δ) when neither varies.
    """
    x, y = finite_values(a), finite_values(b)
    if x.size < 2 or y.size < 2:
        return (math.nan, math.nan)
    delta = float(x.mean() - y.mean())
    va, vb = float(x.var(ddof=1)) / x.size, float(y.var(ddof=1)) / y.size
    if va + vb == 0:
        return (delta, delta)
    df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    half = float(stats.t.ppf((1.0 + level) / 2.0, df)) * math.sqrt(va + vb)
    return (delta - half, delta + half)


def seeds_needed_paired(
    differences: Sequence[float] | np.ndarray, *, alpha: float = ALPHA, power: float = POWER
) -> float:
    """About how many pairs (seeds run with both optimizers) resolve a difference this size.

    A standard power calculation taking the observed mean and standard deviation of the
    per-seed differences as the truth: the smallest n ≥ 2 with
    n ≥ ((t_{1−α/2, n−1} + t_{power, n−1}) · sd / |mean|)², i.e. a paired t-test at two-sided
    ``alpha`` would find the difference with probability about ``power``. The search starts at
    the normal approximation ((z_{1−α/2} + z_{power}) · sd / |mean|)², which never exceeds it
    and misses a seed or more at small n. NaN with fewer than two finite values, or when the
    mean or the standard deviation is 0.
    """
    x = finite_values(differences)
    if x.size < 2:
        return math.nan
    mean, sd = abs(float(x.mean())), float(x.std(ddof=1))
    if mean == 0 or sd == 0:
        return math.nan
    return _power_n((sd / mean) ** 2, lambda n: n - 1, alpha, power)


def seeds_needed_unpaired(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
) -> float:
    """About how many seeds per optimizer resolve a difference of means this size, for two
    independent groups: the smallest n ≥ 2 with
    n ≥ 2 · ((t_{1−α/2, 2n−2} + t_{power, 2n−2}) · pooled_sd / |Δ|)², starting from the normal
    approximation 2 · ((z_{1−α/2} + z_{power}) · pooled_sd / |Δ|)² (see seeds_needed_paired).
    NaN unless both have two finite values, or when Δ or the pooled sd is 0.
    """
    x, y = finite_values(a), finite_values(b)
    if x.size < 2 or y.size < 2:
        return math.nan
    delta = abs(float(x.mean() - y.mean()))
    pooled = (x.size - 1) * float(x.var(ddof=1)) + (y.size - 1) * float(y.var(ddof=1))
    pooled = math.sqrt(pooled / (x.size + y.size - 2))
    if delta == 0 or pooled == 0:
        return math.nan
    return _power_n(2.0 * (pooled / delta) ** 2, lambda n: 2 * n - 2, alpha, power)


def _power_n(k: float, df: Callable[[int], int], alpha: float, power: float) -> float:
    """The smallest n ≥ 2 with n ≥ k · (t_{1−α/2, df(n)} + t_{power, df(n)})²."""
    z = float(stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power))
    start = k * z * z
    if not math.isfinite(start):
        return math.inf
    n = max(2, math.ceil(start))  # t quantiles exceed z ones: the answer is never smaller

    def t_sum(n: int) -> float:
        return float(stats.t.ppf(1.0 - alpha / 2.0, df(n)) + stats.t.ppf(power, df(n)))

    while n < k * t_sum(n) ** 2:  # the right side falls as n grows
        n += 1
    return float(n)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; (nan, nan) with fewer than two finite values.

    Only sound from about ten values up: see CI_METHODS.
    """
    x = finite_values(values)
    if x.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    return _percentiles(means, level)


def bootstrap_diff_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a) − mean(b), resampling a and b independently."""
    x, y = finite_values(a), finite_values(b)
    if x.size < 2 or y.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    mx = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    my = y[rng.integers(0, y.size, size=(n_boot, y.size))].mean(axis=1)
    return _percentiles(mx - my, level)


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def mean_interval(
    values: Sequence[float] | np.ndarray,
    method: str = DEFAULT_CI_METHOD,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float]:
    """The 95% interval of the mean by ``method`` (CI_METHODS): t_interval or bootstrap_ci."""
    if check_ci_method(method) == "bootstrap":
        return bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return t_interval(values)


def describe(values: Iterable[float], method: str, n_boot: int, seed: int) -> dict:
    """Mean, sample standard deviation, the 95% interval of the mean by ``method`` and n, of
    the finite values (``mean``, ``std``, ``ci_low``, ``ci_high``, ``n``, ``ci_method``)."""
    x = finite_values(list(values))
    low, high = mean_interval(x, method, n_boot=n_boot, seed=seed)
    return {
        "mean": float(x.mean()) if x.size else math.nan,
        "std": float(x.std(ddof=1)) if x.size >= 2 else math.nan,
        "ci_low": low,
        "ci_high": high,
        "n": int(x.size),
        "ci_method": method,
    }
