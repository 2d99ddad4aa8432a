"""The one way fambench writes a file: to a temporary name beside it, then renamed into place.

A reader never sees half a file, a failed write leaves nothing behind, and every failure is a
FileWriteError naming the path. Run directories, data caches, the tokenizer, tables, plots and
reports all write through `atomic_write` (or the small wrappers below, built on it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
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
        os.replace(tmp, path)
    except OSError as exc:
        raise FileWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        # Best effort: when the parent is not a directory, unlink itself fails (ENOTDIR), and
        # that must not replace the FileWriteError above.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


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
