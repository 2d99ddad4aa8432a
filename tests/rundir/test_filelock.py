"""FileLock: the one lock, held across processes and let go when its holder dies."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fambench.filelock import FileLock, is_locked

HOLD = """
import sys, time
from fambench.filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.subprocess
def test_a_lock_another_process_holds_is_refused_then_free_once_it_dies(tmp_path):
    path = tmp_path / "x.lock"
    proc = _holder(path)
    try:
        assert is_locked(path)
        lock = FileLock(path, blocking=False)
        assert lock.acquire() is False and not lock.held
    finally:
        proc.kill()
        proc.wait()
    assert not is_locked(path)  # the kernel let go with the process: nothing stale remains
    with FileLock(path, blocking=False) as lock:
        assert lock.held and is_locked(path)
    assert not lock.held and not is_locked(path)


@pytest.mark.subprocess
def test_a_blocking_lock_waits_for_its_holder(tmp_path):
    path = tmp_path / "x.lock"
    proc = _holder(path)
    started = time.monotonic()
    subprocess.Popen(["sh", "-c", f"sleep 1; kill {proc.pid}"])
    with FileLock(path) as lock:
        assert lock.held and time.monotonic() - started >= 0.9
    proc.wait()


def test_owner_record_and_removal_on_release(tmp_path):
    path = tmp_path / "run.lock"
    lock = FileLock(path, blocking=False, record_owner=True, remove_on_release=True)
    assert lock.acquire()
    host, pid = path.read_text().split()
    assert int(pid) == os.getpid() and lock.owner() == f"{host} {pid}"
    lock.release()
    assert not path.exists() and lock.owner() == "unknown owner"
    assert not is_locked(path)
