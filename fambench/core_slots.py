"""Core slots: `bench` and `tune` never start more concurrent runs than the cores allow.

Each core of the machine is a lock file in one directory per user; a run that will use T
threads holds T of them (all of them when T exceeds the cores) while it trains, and waits while
fewer are free. The slots are file locks (`fambench.filelock`), so a process that dies frees
its cores at once. Taking slots happens under one allocation lock, so two runs never each take
half of what both need.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fambench.errors import ResultsError
from fambench.filelock import FileLock, is_locked
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


def _acquire(lock: FileLock) -> bool:
    try:
        return lock.acquire()
    except OSError as exc:
        raise ResultsError(f"cannot open core slot {lock.path}: {exc.strerror}") from exc


def _take(directory: Path, wanted: int, cores: int) -> list[FileLock] | None:
    """``wanted`` free slots, all or none (under the allocation lock)."""
    allocation = FileLock(directory / "allocation.lock")
    _acquire(allocation)
    try:
        held: list[FileLock] = []
        for core in range(cores):
            slot = FileLock(directory / f"core-{core}.lock", blocking=False)
            if _acquire(slot):
                held.append(slot)
                if len(held) == wanted:
                    return held
        for slot in held:
            slot.release()
        return None
    finally:
        allocation.release()


def busy_slots(cores: int | None = None) -> int:
    """How many core slots fambench runs hold now."""
    directory = slots_dir()
    return sum(
        is_locked(directory / f"core-{core}.lock") for core in range(cores or usable_cores())
    )


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
        for slot in held:
            slot.release()
