"""Fault injection for the crash-safety suite: send a signal to this process at a chosen point.

Used in-process by tests/integration/test_fault_injection.py (SIGINT, SIGTERM: the trainer's handlers turn
them into an orderly stop) and, for SIGKILL, as a script run in a child process:

    python tests/faults.py OPTIMIZER POINT SIGNAL CORPUS CACHE OUT

Points: ``features`` (while the feature cache is being written, before it exists), ``step``
(after the 22nd step's update, while the step is still being logged), ``forward`` (inside the
forward pass of step 22), ``evaluation`` (inside the second dev evaluation, at step 30),
``checkpoint`` (half-way through writing the second checkpoint, at step 30).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

POINTS = ("features", "step", "forward", "evaluation", "checkpoint")
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
STEPS = 30  # the smoke preset evaluates (and checkpoints) at steps 15 and 30
AT_STEP = 22


def _fire(sig: int) -> None:
    os.kill(os.getpid(), sig)


def _nth_call(n: int, before: Callable[[], None], function: Callable) -> Callable:
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            before()
        return function(*args, **kwargs)

    return wrapped


@contextlib.contextmanager
def injected(point: str, sig: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable | None]:
    """Arm ``point``; yields a progress callback to pass to run_training (or None)."""
    import fambench.training.checkpoint as checkpoint
    import fambench.training.loop as loop
    import fambench.training.setup as setup
    from fambench.data.features import FeatureCache

    fire = lambda: _fire(sig)  # noqa: E731
    progress = None
    if point == "features":
        monkeypatch.setattr(FeatureCache, "_write", _nth_call(1, fire, FeatureCache._write))
    elif point == "step":

        def progress(event):
            if event.phase == "train" and event.step == AT_STEP:
                fire()

    elif point == "forward":
        build = setup.build_model

        def build_model(preset, data):
            model = build(preset, data)
            calls = [0]

            def hook(module, inputs):
                if module.training:
                    calls[0] += 1
                    if calls[0] == AT_STEP:
                        fire()

            model.encoder.conformer_layers[0].register_forward_pre_hook(hook)
            return model

        monkeypatch.setattr(setup, "build_model", build_model)
    elif point == "evaluation":
        monkeypatch.setattr(loop, "evaluate", _nth_call(2, fire, loop.evaluate))
    elif point == "checkpoint":
        from fambench.fileio import atomic_write

        def half_then_signal(path, data):
            def writer(tmp: Path) -> None:
                with open(tmp, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    fire()
                    handle.write(data[len(data) // 2 :])

            return atomic_write(path, writer)

        faulty = _nth_call_instead(2, half_then_signal, checkpoint.write_bytes)
        monkeypatch.setattr(checkpoint, "write_bytes", faulty)
    else:
        raise ValueError(f"unknown point {point!r}")
    yield progress


def _nth_call_instead(n: int, faulty: Callable, function: Callable) -> Callable:
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        return (faulty if calls[0] == n else function)(*args, **kwargs)

    return wrapped


def request(optimizer: str, corpus: Path, cache: Path, out: Path):
    from fambench.training import RunRequest

    return RunRequest(
        optimizer=optimizer,
        preset="smoke",
        steps=STEPS,
        data_root=corpus,
        cache_dir=cache,
        out_dir=out,
        threads=1,
    )


def main(argv: list[str]) -> int:
    optimizer, point, sig, corpus, cache, out = argv
    from fambench.training import run_training

    with pytest.MonkeyPatch.context() as monkeypatch:
        with injected(point, SIGNALS[sig], monkeypatch) as progress:
            run_training(request(optimizer, Path(corpus), Path(cache), Path(out)), progress)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
