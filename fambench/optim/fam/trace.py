"""FAM's trace: per analysed parameter, every ``TRACE_EVERY`` of its steps, its band EMAs and
momentum, appended to ``<directory>/fam_trace.jsonl``; written by :class:`PendingRecords`, read
by :func:`read_trace`.

One JSON object per line: ``step``, ``param`` (its name), ``group`` (its group's index),
``handler``, ``band_ema`` (a list, one share per band) and ``momentum``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import TYPE_CHECKING

from torch import Tensor

from fambench.optim.tracing import truncate_trace

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TRACE_COLUMNS",
    "TRACE_EVERY",
    "TRACE_FILE",
    "PendingRecords",
    "prepare_trace_file",
    "read_trace",
]

logger = logging.getLogger(__name__)

TRACE_EVERY = 10
TRACE_FILE = "fam_trace.jsonl"
TRACE_COLUMNS = ["step", "param", "group", "handler", "momentum", "band_ema"]

Meta = list[tuple[str, int, str, int]]  # per row: param name, group, handler name, n_bands


class PendingRecords:
    """Trace records taken during steps and not written yet.

    They hold device tensors until :meth:`write`, so a step never waits for the device.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Meta, list[int], list[int], Tensor, Tensor]] = []

    def __bool__(self) -> bool:
        return bool(self._pending)

    def take(self, meta: Meta, steps: list[int], ema: Tensor, momentum: Tensor) -> None:
        """Keep the rows whose step count is a multiple of ``TRACE_EVERY``.

        ``meta`` and ``steps`` describe the rows of ``ema`` (N, max_bands) and ``momentum`` (N,).
        """
        logged = [r for r, s in enumerate(steps) if s % TRACE_EVERY == 0]
        if logged:
            self._pending.append(
                (meta, logged, [steps[r] for r in logged], ema.clone(), momentum.clone())
            )

    def write(self, directory: str | None) -> None:
        """Append the pending records to ``<directory>/fam_trace.jsonl`` (None: drop them)."""
        pending, self._pending = self._pending, []
        if not pending or directory is None:
            return
        lines = []
        for meta, logged, steps, ema, momentum in pending:
            ema_rows, momenta = ema.tolist(), momentum.tolist()
            for r, step in zip(logged, steps, strict=True):
                name, group, handler, n_bands = meta[r]
                record = {
                    "step": step,
                    "param": name,
                    "group": group,
                    "handler": handler,
                    "band_ema": ema_rows[r][:n_bands],
                    "momentum": momenta[r],
                }
                lines.append(json.dumps(record) + "\n")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, TRACE_FILE), "a", encoding="utf-8") as handle:
            handle.writelines(lines)
        logger.debug("wrote %d FAM trace records to %s", len(lines), directory)


def prepare_trace_file(directory: str, resume_step: int) -> None:
    """Make ``directory`` and cut its trace file to the records up to ``resume_step``
    (see :func:`~fambench.optim.tracing.truncate_trace`)."""
    truncate_trace(os.path.join(directory, TRACE_FILE), resume_step)
    os.makedirs(directory, exist_ok=True)


def read_trace(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Records of a trace file (JSON Lines): step, param, group, handler, momentum, band_ema (list).

    Lines that are not complete JSON records (a run still writing, say) are skipped. pandas is
    imported here, not with the optimizer, which needs torch only.
    """
    import pandas as pd

    records = []
    skipped = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                records.append(
                    {
                        "step": int(rec["step"]),
                        "param": str(rec.get("param", "")),
                        "group": int(rec.get("group", 0)),
                        "handler": str(rec.get("handler", "")),
                        "momentum": float(rec.get("momentum", math.nan)),
                        "band_ema": [float(v) for v in rec.get("band_ema") or []],
                    }
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                skipped += 1
    if skipped:
        logger.warning("%s: %d malformed line(s) skipped", path, skipped)
    return pd.DataFrame(records, columns=TRACE_COLUMNS)
