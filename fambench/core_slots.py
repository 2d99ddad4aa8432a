"""Core slots: `bench` and `tune` never start more concurrent runs than the cores allow.

Each core of the machine is a lock file in one directory per user; a run that will use T
threads holds T of them (all of them when T exceeds the cores) while it trains, and waits while
fewer are free. The slots are flock()s, so a process that dies frees its cores at once. Taking
slots happens under one allocation lock, so two runs never each take half of what both need.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from fambench.errors import ResultsError
from fambench.machine import usable_cores

#: Overrides where the slot files live (tests point it at a temporary directory).
SLOTS_ENV = "FAMBENCH_CORE_SLOTS"
POLL_S = 2.0


def slots_dir() -> Path:
    """The directory of the slot files (per user, shared by every fambench process)."""
    configured = os.environ.get(SLOTS_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"fambench-core-slots-{os.getuid()}"


def _open(path: Path) -> IO[bytes]:
    try:
        return open(path, "ab")  # noqa: SIM115 - held for the run's whole life
    except OSError as exc:
        raise ResultsError(f"cannot open core slot {path}: {exc.strerror}") from exc


def _try_lock(handle: IO[bytes]) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _take(directory: Path, wanted: int, cores: int) -> list[IO[bytes]] | None:
    """``wanted`` free slots, all or none (under the allocation lock)."""
    with _open(directory / "allocation.lock") as allocation:
        fcntl.flock(allocation, fcntl.LOCK_EX)
        held: list[IO[bytes]] = []
        for core in range(cores):
            handle = _open(directory / f"core-{core}.lock")
            if _try_lock(handle):
                held.append(handle)
                if len(held) == wanted:
                    return held
            else:
                handle.close()
        for handle in held:
            handle.close()  # closing releases the flock
        return None


def busy_slots(cores: int | None = None) -> int:
    """How many core slots fambench runs hold now."""
    directory = slots_dir()
    count = 0
    for core in range(cores or usable_cores()):
        path = directory / f"core-{core}.lock"
        if not path.exists():
            continue
        with _open(path) as handle:
            if _try_lock(handle):
                fcntl.flock(handle, fcntl.LOCK_UN)
            else:
                count += 1
    return count


@contextmanager
def reserved_cores(
    threads: int,
    *,
    on_wait: Callable[[str], None] | None = None,
    poll_s: float = POLL_S,
    timeout_s: float | None = None,
) -> Iterator[int]:
    """Hold ``threads`` core slots (at most all cores) until the block ends; yields how many.

    Waits, telling ``on_wait`` once, while other fambench runs hold too many. TimeoutError
    after ``timeout_s`` (None: wait as long as it takes).
    """
    cores = usable_cores()
    wanted = max(1, min(threads, cores))
    directory = slots_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(
            f"cannot create core slot directory {directory}: {exc.strerror}"
        ) from exc
    started, told = time.monotonic(), False
    while (held := _take(directory, wanted, cores)) is None:
        if timeout_s is not None and time.monotonic() - started >= timeout_s:
            raise TimeoutError(f"{wanted} of {cores} cores did not come free in {timeout_s:g} s")
        if on_wait is not None and not told:
            on_wait(
                f"waiting for {wanted} free core{'s' if wanted > 1 else ''}: other fambench runs "
                f"hold {busy_slots(cores)} of {cores}"
            )
            told = True
        time.sleep(poll_s)
    try:
        yield wanted
    finally:
        for handle in held:
            handle.close()
