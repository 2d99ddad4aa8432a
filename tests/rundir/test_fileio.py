"""fambench.fileio: atomic writes, their failures (FileWriteError naming the path), JSON safety."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import pytest

from fambench.errors import FambenchError, FileWriteError
from fambench.fileio import atomic_write, json_safe, write_bytes, write_json, write_text


def _leftovers(directory: Path) -> list[str]:
    """Temporary files left anywhere under `directory`."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*.tmp"))


def test_write_bytes_and_text_write_the_content_and_leave_no_temp_file(tmp_path):
    data = bytes(range(256)) * 3
    assert write_bytes(tmp_path / "a.bin", data) == tmp_path / "a.bin"
    assert (tmp_path / "a.bin").read_bytes() == data
    text = "naïve café — ünïcode\nsecond line\n"
    write_text(str(tmp_path / "b.txt"), text)  # a str path works too
    assert (tmp_path / "b.txt").read_bytes() == text.encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt"]


def test_a_missing_parent_directory_is_created(tmp_path):
    target = tmp_path / "x" / "y" / "z.txt"
    write_text(target, "deep")
    assert target.read_text() == "deep"
    assert _leftovers(tmp_path) == []


def test_overwriting_replaces_the_whole_file(tmp_path):
    target = tmp_path / "f.txt"
    write_text(target, "a much longer first version\n")
    write_text(target, "short\n")
    assert target.read_text() == "short\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_the_writer_gets_a_temporary_path_beside_the_target(tmp_path):
    seen: list[Path] = []

    def writer(tmp: Path) -> None:
        seen.append(tmp)
        assert not tmp.exists()
        tmp.write_text("x")

    atomic_write(tmp_path / "out.dat", writer)
    assert len(seen) == 1 and isinstance(seen[0], Path)
    assert seen[0].parent == tmp_path and seen[0].name.endswith(".tmp")
    assert seen[0] != tmp_path / "out.dat" and not seen[0].exists()
    assert (tmp_path / "out.dat").read_text() == "x"


def test_a_parent_that_is_a_file_raises_file_write_error_naming_the_path(tmp_path):
    # Unlike a chmod'ed directory, this fails for root too.
    blocker = tmp_path / "blocker"
    blocker.write_text("I am a file")
    target = blocker / "sub" / "out.json"
    with pytest.raises(FileWriteError) as caught:
        write_json(target, {"a": 1})
    message = str(caught.value)
    assert str(target) in message and "\n" not in message
    assert isinstance(caught.value, FambenchError)  # the CLI reports it as one line
    assert isinstance(caught.value.__cause__, OSError)
    assert blocker.read_text() == "I am a file"
    assert _leftovers(tmp_path) == []


def test_a_failed_rename_removes_the_written_temp_file(tmp_path):
    # The target is a directory: the temp file is written, then os.replace fails.
    target = tmp_path / "taken"
    target.mkdir()
    with pytest.raises(FileWriteError, match=f"cannot write {target}"):
        write_text(target, "content")
    assert target.is_dir() and list(target.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_a_writer_failing_midway_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "data.bin"
    write_bytes(target, b"old content")

    def full_disk(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"half of the new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(FileWriteError) as caught:
        atomic_write(target, full_disk)
    assert str(target) in str(caught.value)
    assert os.strerror(errno.ENOSPC) in str(caught.value)
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_a_non_os_error_from_the_writer_propagates_and_leaves_no_temp_file(tmp_path):
    def broken(tmp: Path) -> None:
        tmp.write_text("partial")
        raise ValueError("bug in the writer")

    with pytest.raises(ValueError, match="bug in the writer"):
        atomic_write(tmp_path / "out.txt", broken)
    assert list(tmp_path.iterdir()) == []


def test_write_json_turns_nan_and_inf_into_null(tmp_path):
    data = {"nan": float("nan"), "inf": math.inf, "ninf": -math.inf, "ok": 1.5}
    write_json(tmp_path / "m.json", data)
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": None, "ninf": None, "ok": 1.5}
    assert text == '{\n  "nan": null,\n  "inf": null,\n  "ninf": null,\n  "ok": 1.5\n}\n'


def test_write_json_format_and_key_order(tmp_path):
    data = {"b": [1, 2], "a": {"y": "x", "c": None}}
    write_json(tmp_path / "insertion.json", data)
    write_json(tmp_path / "sorted.json", data, sort_keys=True)
    assert (tmp_path / "insertion.json").read_text() == json.dumps(data, indent=2) + "\n"
    assert (tmp_path / "sorted.json").read_text() == (
        json.dumps(data, indent=2, sort_keys=True) + "\n"
    )
    assert list(json.loads((tmp_path / "sorted.json").read_text())) == ["a", "b"]


def test_json_safe_converts_to_plain_json_data():
    value = {
        1: (float("nan"), Path("/x/y"), [math.inf, 2.0]),
        "nested": {"t": (1, 2)},
        "s": "text",
        "n": None,
        "b": True,
    }
    assert json_safe(value) == {
        "1": [None, "/x/y", [None, 2.0]],
        "nested": {"t": [1, 2]},
        "s": "text",
        "n": None,
        "b": True,
    }
    assert json_safe(3) == 3 and json_safe(float("nan")) is None
