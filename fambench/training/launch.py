"""`fambench run --nproc N`: start N data-parallel ranks of the same command on this machine.

Each rank is `python -m fambench <the same arguments>` with the environment torchrun gives
its workers (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so a
run launched here and one launched with `torchrun --standalone --nproc-per-node N -m fambench
run ...` are the same run. The launcher forwards Ctrl-C and SIGTERM to the ranks and, when one
rank fails, stops the others instead of leaving them waiting in a collective.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def without_option(arguments: Sequence[str], option: str) -> list[str]:
    """`arguments` without `option` and its value (``--opt V`` or ``--opt=V``)."""
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == option:
            skip = True
        elif not argument.startswith(option + "="):
            kept.append(argument)
    return kept


def rank_environment(rank: int, nproc: int, port: int, threads: int | None) -> dict[str, str]:
    """The environment of rank `rank` of `nproc` (torchrun's variables)."""
    env = dict(os.environ)
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def launch(nproc: int, arguments: Sequence[str], threads: int | None = None) -> tuple[int, str]:
    """Run `python -m fambench *arguments` as `nproc` ranks; (exit code, what went wrong).

    The exit code is rank 0's, or the first failing rank's when rank 0 did not fail itself.
    """
    port = free_port()
    command = [sys.executable, "-m", "fambench", *arguments]
    ranks = [
        subprocess.Popen(command, env=rank_environment(rank, nproc, port, threads))
        for rank in range(nproc)
    ]

    def forward(signum: int, _frame: object) -> None:
        for process in ranks:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _wait(ranks)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


INTERRUPTED = 130  # a rank's exit code after Ctrl-C / SIGTERM (the run saved, resumable)


def _wait(ranks: list[subprocess.Popen], grace_s: float = 120.0) -> tuple[int, str]:
    """Wait for every rank. A failing rank stops the others at once; an interrupted one is
    given `grace_s` for the others to stop with it (they agree on the step and save it
    together, rank 0 last) before they are stopped too."""
    first_failure: tuple[int, int] | None = None  # (rank, code)
    interrupted_since: float | None = None
    while any(process.poll() is None for process in ranks):
        if first_failure is None:
            for rank, process in enumerate(ranks):
                code = process.poll()
                if code == INTERRUPTED and interrupted_since is None:
                    interrupted_since = time.monotonic()
                elif code not in (None, 0, INTERRUPTED):
                    first_failure = (rank, code)
                    _stop_others(ranks)
                    break
            overdue = (
                interrupted_since is not None and time.monotonic() - interrupted_since > grace_s
            )
            if first_failure is None and overdue:
                codes = [process.poll() for process in ranks]
                first_failure = (codes.index(INTERRUPTED), INTERRUPTED)
                _stop_others(ranks)
        time.sleep(0.2)
    codes = [process.returncode for process in ranks]
    if first_failure is None:
        failed = [(rank, code) for rank, code in enumerate(codes) if code != 0]
        if not failed:
            return 0, ""
        if all(code == INTERRUPTED for _, code in failed):
            return INTERRUPTED, ""  # rank 0 has said where the run stopped
        first_failure = next((f for f in failed if f[1] != INTERRUPTED), failed[0])
    rank, code = first_failure
    if rank == 0:
        return code, ""  # rank 0 has said what went wrong
    return code, f"rank {rank} exited with code {code}; the other ranks were stopped"


def _stop_others(ranks: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM every rank still running; SIGKILL what is left after `grace_s`."""
    for process in ranks:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    deadline = time.monotonic() + grace_s
    for process in ranks:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
