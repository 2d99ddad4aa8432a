"""Ctrl-C and SIGTERM as one request to stop, honoured at a step boundary.

A signal that arrives inside a training step is held until the step has finished, so the
state a checkpoint saves is always a whole step: model, buffers, optimizer, schedule, RNGs and
data position agree. Anywhere else (data preparation, evaluation, a checkpoint being written)
it raises KeyboardInterrupt at once; none of those change the training state. SIGTERM is what
`timeout`, Slurm and Kubernetes send, so it is treated exactly like Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """Turns SIGINT/SIGTERM into KeyboardInterrupt, deferred while a step is running."""

    def __init__(self) -> None:
        self.in_step = False
        self.pending: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.in_step:
            self.pending = signum
            return
        raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[StopRequests]:
        """Handle the stop signals while the block runs (main thread only; else a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextmanager
    def step(self) -> Iterator[None]:
        """A training step: stop signals wait for its end, then raise KeyboardInterrupt."""
        self.in_step = True
        try:
            yield
        finally:
            self.in_step = False
        if self.pending is not None:
            self.pending = None
            raise KeyboardInterrupt
