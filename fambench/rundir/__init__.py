"""The run-directory format: one writer and one reader of every file a run leaves behind.

Layout of ``results/<run-id>/`` (format_version 3; format 2 is read too):

- ``config.json``: the resolved configuration and provenance of the run (RunConfig);
- ``metrics.parquet`` and ``metrics.csv``: one row per logged train step and per evaluation,
  columns METRIC_COLUMNS (NaN where not applicable);
- ``summary.json``: status and headline numbers (Summary);
- ``checkpoint.pt``, ``tokenizer.json``, the trace of an optimizer that keeps one (its file
  named by ``trace`` in config.json),
  ``run.lock`` while a process owns the directory, ``tensorboard/`` on request.

Every file is written through `fambench.fileio.atomic_write`, so a reader never sees half a file.
"""

from fambench.fileio import atomic_write, write_bytes, write_json, write_text
from fambench.rundir.files import RunFiles, RunLock
from fambench.rundir.loading import LoadedRun, find_run_dirs, load_run, read_metrics
from fambench.rundir.records import (
    FINISHED,
    FORMAT_VERSION,
    METRIC_COLUMNS,
    PROVENANCE_KEYS,
    READABLE_VERSIONS,
    STATUSES,
    SUMMARY_FIELDS,
    RunConfig,
    Summary,
    eval_row,
    hparams_key,
    metrics_frame,
    train_row,
)
from fambench.rundir.targets import steps_to_target, time_to_target

__all__ = [
    "FINISHED",
    "FORMAT_VERSION",
    "METRIC_COLUMNS",
    "PROVENANCE_KEYS",
    "READABLE_VERSIONS",
    "STATUSES",
    "SUMMARY_FIELDS",
    "LoadedRun",
    "RunFiles",
    "RunConfig",
    "RunLock",
    "Summary",
    "atomic_write",
    "eval_row",
    "find_run_dirs",
    "hparams_key",
    "load_run",
    "metrics_frame",
    "read_metrics",
    "steps_to_target",
    "time_to_target",
    "train_row",
    "write_bytes",
    "write_json",
    "write_text",
]
