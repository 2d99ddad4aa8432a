"""The one lock fambench takes: an `fcntl.flock` on a file.

The kernel releases an flock when its holder dies, however it dies, so there is no stale lock
to detect or take over, and no check-then-create race between processes that want it at once.
Run directories, grid claims, tuning studies, core slots and corpus generation all lock through
`FileLock`.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

PathLike = str | os.PathLike[str]


class FileLock:
    """An exclusive flock on ``path`` (created if missing).

    ``blocking``: wait for the lock, or give up at once when another process holds it
    (`acquire` then returns False). ``record_owner`` writes "<hostname> <pid>" into the file for
    people to read. ``remove_on_release`` deletes the file when the lock is let go; a process
    that locked a file its previous holder had just removed notices and locks the new one.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        blocking: bool = True,
        record_owner: bool = False,
        remove_on_release: bool = False,
    ) -> None:
        self.path = Path(path)
        self.blocking = blocking
        self.record_owner = record_owner
        self.remove_on_release = remove_on_release
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock; False when not blocking and another process holds it. OSError when
        the file cannot be opened."""
        flags = fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError:
                os.close(fd)
                return False
            if not self.remove_on_release or _same_file(fd, self.path):
                break
            os.close(fd)  # its previous holder removed it while we waited: lock the new one
        if self.record_owner:
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        if self.remove_on_release:
            self.path.unlink(missing_ok=True)  # before unlocking: see acquire()
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def owner(self) -> str:
        """What the holder recorded (with ``record_owner``), for messages."""
        try:
            return self.path.read_text().strip() or "unknown owner"
        except OSError:
            return "unknown owner"

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(path: PathLike) -> bool:
    """Whether a live process holds an flock on ``path`` (never blocks, never keeps it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock if it was taken
    return False


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
