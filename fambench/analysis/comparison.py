"""One comparison of a ResultSet: everything `fambench compare` shows and the report writes.

The aggregate over seeds per configuration, the reference's pairwise differences (on final
dev WER, and on test WER where runs have one) and the times across workloads, computed once
with one interval method.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fambench.analysis.aggregate import aggregate, pairwise
from fambench.analysis.load import ResultSet
from fambench.analysis.profiles import BEST_BASELINE, Workloads
from fambench.analysis.stats import DEFAULT_BOOTSTRAP, DEFAULT_CI_METHOD, check_ci_method


@dataclass(frozen=True)
class Comparison:
    """The tables of one comparison; ``workloads`` is None when no run completed."""

    results: ResultSet
    aggregate: pd.DataFrame  # aggregate
    pairs: pd.DataFrame  # pairwise
    workloads: Workloads | None
    reference: str
    method: str
    n_boot: int


def compare(
    results: ResultSet,
    *,
    reference: str,
    target_wer: float | None = None,
    method: str = DEFAULT_CI_METHOD,
    n_boot: int = DEFAULT_BOOTSTRAP,
    include_contended: bool = False,
    baseline: str = BEST_BASELINE,
) -> Comparison:
    """Aggregate ``results`` over seeds, compare ``reference`` with every other configuration
    and time them across workloads (speedups against ``baseline``)."""
    method = check_ci_method(method)
    agg = aggregate(
        results.runs,
        results.metrics,
        target_wer=target_wer,
        method=method,
        n_boot=n_boot,
        include_contended=include_contended,
    )
    metrics = ["final_dev_wer"]
    if results.runs["test_wer"].notna().any():
        metrics.append("test_wer")
    pairs = pairwise(
        results.runs, reference=reference, metrics=metrics, method=method, n_boot=n_boot
    )
    workloads = Workloads.of(
        results,
        reference=reference,
        baseline=baseline,
        target_wer=target_wer,
        include_contended=include_contended,
    )
    return Comparison(results, agg, pairs, workloads, reference, method, n_boot)
