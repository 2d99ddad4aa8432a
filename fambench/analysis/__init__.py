"""Analysis of run directories: what `fambench compare` shows and the report is made of.

One way through, each module using only those above it:

- ``labels``: how a configuration, a budget and a missing number are named;
- ``load``: run directories → ResultSet (a typed RunRecord per run, and the metric rows);
- ``stats``: t, paired-t and Welch intervals, bootstraps, the power calculation;
- ``aggregate``: statistics per configuration over seeds, pairwise differences, verdicts;
- ``profiles``: times to target across workloads, performance profiles, speedups;
- ``comparison``: all of the above for one ResultSet (Comparison);
- ``tables``: display frames and every output format (table, markdown, csv, parquet).

Nothing here draws or prints: fambench.plots, fambench.report and the CLI build on it.
"""

from fambench.analysis.comparison import Comparison, compare
from fambench.analysis.load import ResultSet, RunRecord, load_results

__all__ = ["Comparison", "ResultSet", "RunRecord", "compare", "load_results"]
