"""Read corpora in the LibriSpeech on-disk layout; build, cache and validate manifests.

Layout: ``<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac`` plus one
``<speaker>-<chapter>.trans.txt`` per chapter holding ``<utt-id> TRANSCRIPT`` lines. Any subset
name works (``train-clean-100``, Mini LibriSpeech's ``dev-clean-2``, our ``train-synth``).
Audio is read with soundfile, never ``torchaudio.load`` (which needs FFmpeg).

Sample-rate policy: **refuse**. Every file must be 16 kHz mono; anything else is reported as a
problem naming the file (real LibriSpeech is 16 kHz throughout, so a different rate means the
data is not what it claims to be, and silently resampling would hide that).

Validation decodes every file completely (a truncated FLAC has a valid header), in a thread
pool since libsndfile releases the GIL. The manifest of a clean subset is cached as
``<subset>/.fambench-manifest.parquet`` keyed by a hash of every audio/transcript file's
relative path, size and mtime, so any change to the directory rebuilds it. Subsets with
problems are never cached.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fambench.errors import DataError, FileWriteError
from fambench.fileio import atomic_write
from fambench.machine import usable_cores

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MANIFEST_COLUMNS = ("utt_id", "path", "duration", "transcript", "speaker", "chapter", "num_samples")
CACHE_NAME = ".fambench-manifest.parquet"
# Bump when the manifest's content or validation rules change.
_READER_VERSION = "1"
_TEXT_RE = re.compile(r"[A-Z']+( [A-Z']+)*")
_UTT_RE = re.compile(r"(?P<speaker>[^-\s]+)-(?P<chapter>[^-\s]+)-(?P<n>\d+)")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the corpus; `utt_id` is set when it spoils a specific utterance."""

    path: Path
    message: str
    utt_id: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class SubsetReport:
    """What `check_root` found in one subset."""

    name: str
    path: Path
    utterances: int = 0
    seconds: float = 0.0
    speakers: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


@dataclass
class CheckReport:
    """Per-subset counts and every problem found under a LibriSpeech root."""

    root: Path
    subsets: list[SubsetReport]

    @property
    def problems(self) -> list[Problem]:
        return [p for s in self.subsets for p in s.problems]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Scan:
    rows: list[dict]
    problems: list[Problem]


def _decode(path: Path | str) -> tuple[np.ndarray | None, str | None]:
    """(float32 samples, None) for a good 16 kHz mono file, else (None, what is wrong)."""
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as handle:
            if handle.samplerate != SAMPLE_RATE:
                return None, (
                    f"sample rate {handle.samplerate} Hz, expected {SAMPLE_RATE} Hz "
                    "(other rates are refused; resample the corpus to 16 kHz)"
                )
            if handle.channels != 1:
                return None, f"{handle.channels} channels, expected mono"
            return handle.read(dtype="float32"), None
    except sf.LibsndfileError as exc:
        reason = str(exc).strip()
        if reason.startswith("Error"):
            reason = reason.rsplit(": ", 1)[-1]
        return None, f"unreadable or corrupt audio ({reason.rstrip('.').strip()})"
    except OSError as exc:
        return None, f"cannot read audio ({exc.strerror or exc})"


def read_audio(path: Path | str) -> np.ndarray:
    """Decode a 16 kHz mono file to float32 in [-1, 1]; any other input raises DataError."""
    audio, error = _decode(path)
    if error is not None:
        raise DataError(f"{path}: {error}")
    return audio


def _probe(path: Path) -> tuple[int | None, str | None]:
    audio, error = _decode(path)
    return (None, error) if audio is None else (int(audio.shape[0]), None)


def _list_files(subset_dir: Path) -> tuple[list[Path], list[Path]]:
    flacs, transcripts = [], []
    for speaker in sorted(subset_dir.iterdir()):
        if not speaker.is_dir() or speaker.name.startswith("."):
            continue
        for chapter in sorted(speaker.iterdir()):
            if not chapter.is_dir() or chapter.name.startswith("."):
                continue
            for item in sorted(chapter.iterdir()):
                if item.name.endswith(".flac"):
                    flacs.append(item)
                elif item.name.endswith(".trans.txt"):
                    transcripts.append(item)
    return flacs, transcripts


def directory_key(subset_dir: Path) -> str:
    """Hash of every audio and transcript file's relative path, size and mtime."""
    flacs, transcripts = _list_files(subset_dir)
    digest = hashlib.sha256(_READER_VERSION.encode())
    for path in sorted(flacs + transcripts):
        stat = path.stat()
        digest.update(
            f"{path.relative_to(subset_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()[:32]


def _parse_transcripts(transcripts: Iterable[Path], problems: list[Problem]) -> dict[str, tuple]:
    """utt_id -> (transcript, speaker, chapter, trans_path, line_no)."""
    entries: dict[str, tuple] = {}
    for trans in transcripts:
        speaker_dir, chapter_dir = trans.parent.parent.name, trans.parent.name
        try:
            data = trans.read_bytes()
            lines = data.decode("utf-8").splitlines()
        except OSError as exc:
            problems.append(Problem(trans, f"unreadable transcript file ({exc.strerror or exc})"))
            continue
        except UnicodeDecodeError as exc:
            # The whole file is refused; its audio files are then reported as lacking a line.
            line_no = data.count(b"\n", 0, exc.start) + 1
            problems.append(
                Problem(
                    trans,
                    f"unreadable transcript file: not UTF-8 "
                    f"(line {line_no}, byte 0x{data[exc.start]:02x}: {exc.reason})",
                )
            )
            continue
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            text = " ".join(text.split())
            where = Path(f"{trans}:{line_no}")
            match = _UTT_RE.fullmatch(utt_id)
            if match is None:
                problems.append(Problem(where, f"malformed utterance id {utt_id!r}"))
                continue
            if (match["speaker"], match["chapter"]) != (speaker_dir, chapter_dir):
                problems.append(
                    Problem(
                        where,
                        f"utterance {utt_id} does not belong in {speaker_dir}/{chapter_dir}",
                        utt_id,
                    )
                )
                continue
            if utt_id in entries:
                problems.append(Problem(where, f"duplicate utterance id {utt_id}", utt_id))
                continue
            if not text:
                problems.append(Problem(where, f"empty transcript for {utt_id}", utt_id))
            elif not _TEXT_RE.fullmatch(text):
                bad = "".join(sorted(set(text) - set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")))
                problems.append(
                    Problem(
                        where,
                        f"transcript of {utt_id} has characters outside "
                        f"A-Z, apostrophe and space: {bad!r}",
                        utt_id,
                    )
                )
            entries[utt_id] = (text, match["speaker"], match["chapter"], trans, line_no)
    return entries


def _workers() -> int:
    return min(8, usable_cores())


def _scan_subset(subset_dir: Path) -> _Scan:
    problems: list[Problem] = []
    flacs, transcripts = _list_files(subset_dir)
    entries = _parse_transcripts(transcripts, problems)
    audio_by_id: dict[str, Path] = {}
    for path in flacs:
        flac_id = path.name[: -len(".flac")]
        if flac_id in audio_by_id:
            # Which file is the utterance's audio is ambiguous: the utterance is bad.
            other = audio_by_id[flac_id]
            problems.append(
                Problem(path, f"duplicate audio file for {flac_id} (also {other})", flac_id)
            )
            continue
        audio_by_id[flac_id] = path
    for flac_id, path in audio_by_id.items():
        if flac_id not in entries:
            problems.append(Problem(path, "audio file has no transcript line", flac_id))
    bad_text = {p.utt_id for p in problems if p.utt_id}
    wanted = []
    for utt_id, (_text, _spk, _chap, trans, line_no) in entries.items():
        if utt_id not in audio_by_id:
            expected = trans.parent / f"{utt_id}.flac"
            problems.append(
                Problem(
                    expected,
                    f"audio file is missing (listed in {trans.name} line {line_no})",
                    utt_id,
                )
            )
        elif utt_id not in bad_text:
            wanted.append(utt_id)
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        probes = list(pool.map(_probe, [audio_by_id[u] for u in wanted]))
    rows = []
    for utt_id, (n_samples, error) in zip(wanted, probes, strict=True):
        path = audio_by_id[utt_id]
        if error is not None:
            problems.append(Problem(path, error, utt_id))
            continue
        if n_samples == 0:
            problems.append(Problem(path, "audio file holds no samples", utt_id))
            continue
        text, speaker, chapter, _, _ = entries[utt_id]
        rows.append(
            {
                "utt_id": utt_id,
                "path": str(path),
                "duration": n_samples / SAMPLE_RATE,
                "transcript": text,
                "speaker": speaker,
                "chapter": chapter,
                "num_samples": n_samples,
            }
        )
    if not entries and not flacs:
        problems.append(
            Problem(
                subset_dir,
                "subset holds no utterances (expected <speaker>/<chapter>/*.flac and *.trans.txt)",
            )
        )
    rows.sort(key=lambda r: r["utt_id"])
    return _Scan(rows, problems)


def _frame(rows: Sequence[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(MANIFEST_COLUMNS))
    return frame.astype({"duration": "float64", "num_samples": "int64"}).reset_index(drop=True)


def _read_cache(subset_dir: Path, key: str) -> pd.DataFrame | None:
    import pyarrow.parquet as pq

    path = subset_dir / CACHE_NAME
    try:
        table = pq.read_table(path)
    except (OSError, ValueError):
        return None
    meta = table.schema.metadata or {}
    if meta.get(b"fambench_key", b"").decode() != key:
        return None
    frame = table.to_pandas()
    # Paths are stored relative so a moved corpus keeps its cache valid.
    frame["path"] = [str(subset_dir / p) for p in frame["path"]]
    return frame


def _write_cache(subset_dir: Path, key: str, frame: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    stored = frame.copy()
    stored["path"] = [str(Path(p).relative_to(subset_dir)) for p in stored["path"]]
    table = pa.Table.from_pandas(stored, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"fambench_key": key.encode()}
    )
    try:
        atomic_write(subset_dir / CACHE_NAME, lambda tmp: pq.write_table(table, tmp))
    except FileWriteError as exc:  # a read-only corpus simply goes uncached
        log.debug("not caching the manifest of %s: %s", subset_dir, exc)


def _root_dir(librispeech_root: Path) -> Path:
    root = Path(librispeech_root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "not found"
        raise DataError(f"LibriSpeech root {what}: {root}")
    return root


def _subset_dir(librispeech_root: Path, subset: str) -> Path:
    root = _root_dir(librispeech_root)
    if not subset or subset in (".", "..") or "/" in subset:
        raise DataError(
            f"invalid subset name {subset!r}: expected the name of a directory directly under "
            f"{root}, such as dev-clean"
        )
    subset_dir = root / subset
    if not subset_dir.is_dir():
        available = ", ".join(list_subsets(root)) or "none"
        raise DataError(f"subset directory not found: {subset_dir} (subsets there: {available})")
    return subset_dir


def list_subsets(librispeech_root: Path) -> list[str]:
    """Names of the subset directories under a LibriSpeech root (hidden ones excluded)."""
    root = Path(librispeech_root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_manifest(
    librispeech_root: Path,
    subset: str,
    *,
    skip_bad: bool = False,
    max_bad_fraction: float = 0.01,
) -> pd.DataFrame:
    """The manifest of one subset, sorted by utt_id.

    Columns: utt_id, path (absolute), duration (seconds), transcript, speaker, chapter (strings,
    as in the directory names) and num_samples. Any problem raises DataError naming the path,
    unless `skip_bad`: then the bad utterances are left out with a warning giving their count,
    and DataError is still raised when more than `max_bad_fraction` of them are bad.
    """
    subset_dir = _subset_dir(librispeech_root, subset)
    key = directory_key(subset_dir)
    cached = _read_cache(subset_dir, key)
    if cached is not None:
        return cached
    scan = _scan_subset(subset_dir)
    if not scan.problems:
        frame = _frame(scan.rows)
        _write_cache(subset_dir, key, frame)
        return frame
    first = scan.problems[0]
    more = len(scan.problems) - 1
    hint = (
        f" (and {more} more problem{'s' if more != 1 else ''}; "
        f"run `fambench data check {Path(librispeech_root)} --subset {subset}`)"
        if more
        else ""
    )
    # Count utterances, not problems: a file-level problem (say an unreadable transcript
    # file) spoils no utterance by itself; the utterances it spoils carry their own problems.
    bad = {p.utt_id for p in scan.problems if p.utt_id is not None}
    total = len(scan.rows) + len(bad)
    if not skip_bad or not scan.rows:
        raise DataError(f"{first}{hint}")
    if len(bad) > max_bad_fraction * total:
        raise DataError(
            f"{len(bad)} of {total} utterances in {subset_dir} are bad, more than the "
            f"{max_bad_fraction:.1%} that may be skipped; first: {first}"
        )
    log.warning(
        "skipping %d bad utterance(s) of %d in %s; first: %s", len(bad), total, subset_dir, first
    )
    return _frame(scan.rows)


def check_subset(librispeech_root: Path, subset: str) -> SubsetReport:
    """Validate one subset completely (every file decoded); writes nothing."""
    subset_dir = _subset_dir(librispeech_root, subset)
    scan = _scan_subset(subset_dir)
    return SubsetReport(
        name=subset,
        path=subset_dir,
        utterances=len(scan.rows),
        seconds=float(sum(r["duration"] for r in scan.rows)),
        speakers=len({r["speaker"] for r in scan.rows}),
        problems=scan.problems,
    )


def check_root(librispeech_root: Path, subsets: Sequence[str] | None = None) -> CheckReport:
    """Validate the given subsets (default: every subset directory) of a LibriSpeech root."""
    root = _root_dir(librispeech_root)
    names = list(subsets) if subsets else list_subsets(root)
    if not names:
        raise DataError(f"no subset directories in {root} (expected e.g. {root}/dev-clean)")
    return CheckReport(root, [check_subset(root, name) for name in names])
