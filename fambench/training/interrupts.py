"""Ctrl-C and SIGTERM as one request to stop, honoured at a step boundary.

A signal that arrives inside a training step is held until the step has finished, so the
state a checkpoint saves is always a whole step: model, buffers, optimizer, schedule, RNGs and
data position agree. Anywhere else (data preparation, evaluation, a checkpoint being written)
it raises KeyboardInterrupt at once; none of those change the training state. SIGTERM is what
`timeout`, Slurm and Kubernetes send, and SIGUSR2 what Slurm sends before a time limit under
submitit (fambench.slurm), so both are treated exactly like Ctrl-C. On several
data-parallel ranks the signal is held everywhere in the training loop and the ranks stop
together (StopRequests.agreeing).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

# SIGUSR2: what submitit asks Slurm to send before a time limit (fambench.slurm).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class AgreedStop(KeyboardInterrupt):
    """A stop every data-parallel rank agreed on after the same step: they may save together."""


class StopRequests:
    """Turns SIGINT/SIGTERM into KeyboardInterrupt, deferred while a step is running.

    On several data-parallel ranks (:meth:`agreeing`) a rank cannot stop on its own: the
    others would wait for it in their next collective. There every signal is held, also
    between steps, and after each step the ranks agree whether any of them holds one; if so
    all raise :class:`AgreedStop` at the same step boundary. A second signal while one is held
    raises KeyboardInterrupt at once (the ranks then resume from their last checkpoint).
    """

    def __init__(self) -> None:
        self.in_step = False
        self.pending: int | None = None
        self.agree: Callable[[bool], bool] | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.agree is not None and self.pending is None:
            self.pending = signum
            return
        if self.in_step and self.agree is None:
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
    def agreeing(self, agree: Callable[[bool], bool] | None) -> Iterator[None]:
        """While the block runs, stop only where ``agree(held here)`` is True on every rank
        (``agree`` is a collective: every rank calls it after every step). None: no change."""
        self.agree = agree
        try:
            yield
        finally:
            self.agree = None

    @contextmanager
    def step(self) -> Iterator[None]:
        """A training step: stop signals wait for its end, then raise KeyboardInterrupt
        (AgreedStop when the ranks agree)."""
        self.in_step = True
        try:
            yield
        finally:
            self.in_step = False
        if self.agree is not None:
            if self.agree(self.pending is not None):
                self.pending = None
                raise AgreedStop
        elif self.pending is not None:
            self.pending = None
            raise KeyboardInterrupt
