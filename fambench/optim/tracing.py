"""Optimizer traces: a capability an optimizer declares by implementing :class:`TraceWriter`.

A trainer that wants an optimizer's trace checks ``isinstance(optimizer, TraceWriter)``, calls
:meth:`TraceWriter.start_trace` with the run directory (and the checkpoint step when resuming)
and :meth:`TraceWriter.flush_trace` at every checkpoint. It needs no optimizer's name.

:func:`truncate_trace` is the resume rule of a JSON-lines trace whose records carry a ``"step"``,
for optimizers that write one.
"""

from __future__ import annotations

import json
import os
from typing import Protocol, runtime_checkable

__all__ = ["TraceWriter", "truncate_trace"]


@runtime_checkable
class TraceWriter(Protocol):
    """An optimizer that can write a trace of its internal state during training."""

    def start_trace(self, directory: str | os.PathLike[str], resume_step: int = 0) -> str | None:
        """Begin writing this optimizer's trace into directory. Records after resume_step, left by
        an interrupted run, are dropped first. Returns the name of the file written inside
        directory, or None when this optimizer has nothing to trace (and turns nothing on)."""
        ...

    def flush_trace(self) -> None:
        """Write pending records now (a trainer calls this at every checkpoint)."""
        ...


def truncate_trace(path: str | os.PathLike[str], resume_step: int) -> None:
    """Cut the JSON-lines file ``path`` before its first record a resumed run will write again.

    The file is truncated in place at the first line that is not a complete JSON object with an
    integer ``"step"`` <= ``resume_step``: a record written after the checkpoint, or a line cut
    short by the interruption (no final newline, or not valid JSON). Records are appended in step
    order, so everything before that line is kept. A missing file is left missing.
    """
    if isinstance(resume_step, bool) or not isinstance(resume_step, int) or resume_step < 0:
        raise ValueError(f"resume_step must be a non-negative integer, got {resume_step!r}")
    try:
        handle = open(path, "r+b")
    except FileNotFoundError:
        return
    with handle:
        keep = 0
        for line in handle:
            if not (line.endswith(b"\n") and _step_at_most(line, resume_step)):
                break
            keep += len(line)
        else:
            return  # every line is kept
        handle.seek(keep)
        handle.truncate()


def _step_at_most(line: bytes, resume_step: int) -> bool:
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False
    if not isinstance(record, dict):
        return False
    step = record.get("step")
    return isinstance(step, int) and not isinstance(step, bool) and step <= resume_step
