"""The one way fambench writes a file: to a temporary name beside it, then renamed into place.

A reader never sees half a file, a failed write leaves nothing behind, and every failure is a
FileWriteError naming the path. The file and then its directory are fsynced, so a machine
crash (not only a process crash) leaves the old file or the new one, never an empty one; a
temporary left by a killed process is swept by `sweep_temporaries`. Run directories, data
caches, the tokenizer, tables, plots and reports all write through `atomic_write` (or the small
wrappers below, built on it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fambench.errors import FileWriteError

PathLike = str | os.PathLike[str]


def atomic_write(path: PathLike, writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp)`` to create a temporary file, then rename it onto ``path``.

    The writer creates the file itself, so it gets the usual permissions (0666 minus umask).
    Raises FileWriteError naming ``path`` when the directory or the file cannot be written.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as exc:
        raise FileWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        # Best effort: when the parent is not a directory, unlink itself fails (ENOTDIR), and
        # that must not replace the FileWriteError above.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TEMPORARY_GLOB = ".*.tmp"  # what atomic_write names its temporaries: .<name>.<pid>-<hex>.tmp


def _writer_alive(tmp: Path) -> bool:
    """Whether the process that created temporary ``tmp`` (its pid is in the name) still runs."""
    pid_text = tmp.name.rsplit(".", 2)[-2].split("-")[0]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temporaries(directory: PathLike) -> list[Path]:
    """Remove the temporaries that killed writers left in ``directory``; returns them.

    A temporary whose writer (same host) is still alive is left alone.
    """
    removed = []
    for tmp in Path(directory).glob(TEMPORARY_GLOB):
        if tmp.is_file() and not _writer_alive(tmp):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def move_into(entries: list[Path], directory: PathLike) -> None:
    """Move files or whole directories into ``directory`` (same filesystem), replacing what
    is there under the same names; the directory is fsynced after. The one other way, beside
    atomic_write, that fambench puts things in place: a corpus moved out of its staging
    directory, a run's results set aside by --force and put back."""
    directory = Path(directory)
    for entry in entries:
        target = directory / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    _fsync(directory)


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write bytes atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def json_safe(value: Any) -> Any:
    """Plain JSON data: NaN/inf become null, paths strings, tuples lists, keys strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: PathLike, data: Any, *, sort_keys: bool = False) -> Path:
    """Write JSON atomically (indented, NaN/inf as null, trailing newline)."""
    text = json.dumps(json_safe(data), indent=2, sort_keys=sort_keys, allow_nan=False)
    return write_text(path, text + "\n")
