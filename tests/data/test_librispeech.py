"""The LibriSpeech-layout reader, manifest cache and `fambench data check`, on real audio."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from typer.testing import CliRunner

from fambench.data.librispeech import CACHE_NAME, check_root, list_subsets, load_manifest
from fambench.errors import DataError


def _cli():
    import fambench.cli.commands_data  # noqa: F401  (registers `fambench data`)
    from fambench.cli import app

    return app


def build_subset(
    synth_root: Path,
    root: Path,
    name: str,
    chapters=(("19", "198"), ("26", "495")),
    per_chapter: int = 3,
) -> dict[str, str]:
    """Lay synthesized utterances out as a real-LibriSpeech-named subset; returns id -> text."""
    source = load_manifest(synth_root, "dev-synth")
    written: dict[str, str] = {}
    rows = iter(source.itertuples())
    for speaker, chapter in chapters:
        chapter_dir = root / name / speaker / chapter
        chapter_dir.mkdir(parents=True)
        lines = []
        for n in range(per_chapter):
            row = next(rows)
            utt_id = f"{speaker}-{chapter}-{n:04d}"
            shutil.copyfile(row.path, chapter_dir / f"{utt_id}.flac")
            lines.append(f"{utt_id} {row.transcript}\n")
            written[utt_id] = row.transcript
        (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    return written


@pytest.fixture()
def mini(synth_corpus, tmp_path) -> Path:
    """A root holding a clean Mini-LibriSpeech-named subset `dev-clean-2` (6 utterances)."""
    root = tmp_path / "LibriSpeech"
    build_subset(synth_corpus, root, "dev-clean-2")
    return root


@pytest.mark.parametrize("name", ["dev-clean-2", "train-clean-100", "train-clean-5"])
def test_reads_hand_built_librispeech_subsets(synth_corpus, tmp_path, name):
    root = tmp_path / "LibriSpeech"
    written = build_subset(synth_corpus, root, name)
    manifest = load_manifest(root, name)
    assert list(manifest.columns[:6]) == [
        "utt_id",
        "path",
        "duration",
        "transcript",
        "speaker",
        "chapter",
    ]
    assert manifest["utt_id"].tolist() == sorted(written)
    assert dict(zip(manifest["utt_id"], manifest["transcript"], strict=True)) == written
    assert set(manifest["speaker"]) == {"19", "26"} and set(manifest["chapter"]) == {"198", "495"}
    for row in manifest.itertuples():
        info = sf.info(row.path)
        assert row.duration == pytest.approx(info.frames / 16000)
        assert row.num_samples == info.frames
    assert list_subsets(root) == [name]


def test_manifest_is_cached_and_rebuilt_when_the_directory_changes(mini):
    subset_dir = mini / "dev-clean-2"
    first = load_manifest(mini, "dev-clean-2")
    cache = subset_dir / CACHE_NAME
    assert cache.exists()
    stamp = cache.stat().st_mtime_ns
    again = load_manifest(mini, "dev-clean-2")
    assert again.equals(first) and cache.stat().st_mtime_ns == stamp  # served from the cache

    # Drop one utterance (audio and transcript line): the manifest must follow.
    trans = subset_dir / "19" / "198" / "19-198.trans.txt"
    lines = trans.read_text().splitlines(keepends=True)
    trans.write_text("".join(lines[:-1]))
    (subset_dir / "19" / "198" / "19-198-0002.flac").unlink()
    changed = load_manifest(mini, "dev-clean-2")
    assert len(changed) == len(first) - 1 and "19-198-0002" not in set(changed["utt_id"])

    # Same names and sizes, new content (mtime changes): rebuilt, durations re-read.
    target = subset_dir / "26" / "495" / "26-495-0000.flac"
    audio, rate = sf.read(target, dtype="int16")
    sf.write(target, audio[: len(audio) // 2], rate, format="FLAC", subtype="PCM_16")
    halved = load_manifest(mini, "dev-clean-2").set_index("utt_id")
    assert halved.loc["26-495-0000", "num_samples"] == len(audio) // 2


def test_a_manifest_cache_that_cannot_be_written_is_skipped_not_fatal(mini, caplog):
    subset_dir = mini / "dev-clean-2"
    cache = subset_dir / CACHE_NAME
    cache.mkdir()  # the cache's name is taken by a directory: the rename onto it fails
    with caplog.at_level(logging.DEBUG, logger="fambench.data.librispeech"):
        first = load_manifest(mini, "dev-clean-2")
        second = load_manifest(mini, "dev-clean-2")
    assert len(first) == 6 and second.equals(first)
    assert caplog.text.count(f"not caching the manifest of {subset_dir}: cannot write {cache}") == 2
    assert cache.is_dir() and list(cache.iterdir()) == []
    assert not list(mini.rglob("*.tmp"))


def test_cached_manifest_follows_a_moved_corpus(mini, tmp_path):
    load_manifest(mini, "dev-clean-2")
    moved = tmp_path / "moved"
    shutil.move(mini, moved)
    manifest = load_manifest(moved, "dev-clean-2")
    assert all(Path(p).is_file() and str(p).startswith(str(moved)) for p in manifest["path"])


# --- bad inputs: each one a clear line naming the path, a non-zero exit, nothing written ---


def _break_missing_audio(subset_dir: Path) -> tuple[Path, str]:
    victim = subset_dir / "19" / "198" / "19-198-0001.flac"
    victim.unlink()
    return victim, "audio file is missing"


def _break_orphan_audio(subset_dir: Path) -> tuple[Path, str]:
    trans = subset_dir / "26" / "495" / "26-495.trans.txt"
    lines = trans.read_text().splitlines(keepends=True)
    trans.write_text("".join(line for line in lines if not line.startswith("26-495-0002")))
    return subset_dir / "26" / "495" / "26-495-0002.flac", "audio file has no transcript line"


def _break_truncated_flac(subset_dir: Path) -> tuple[Path, str]:
    victim = subset_dir / "19" / "198" / "19-198-0000.flac"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    return victim, "unreadable or corrupt audio"


def _break_not_flac(subset_dir: Path) -> tuple[Path, str]:
    victim = subset_dir / "26" / "495" / "26-495-0001.flac"
    victim.write_bytes(b"this is not a FLAC file\n")
    return victim, "unreadable or corrupt audio"


def _break_sample_rate(subset_dir: Path) -> tuple[Path, str]:
    victim = subset_dir / "19" / "198" / "19-198-0002.flac"
    audio, _ = sf.read(victim, dtype="float32")
    low = torchaudio.functional.resample(torch.from_numpy(audio), 16000, 8000).numpy()
    sf.write(victim, low, 8000, format="FLAC", subtype="PCM_16")
    return victim, "sample rate 8000 Hz, expected 16000 Hz"


def _break_stereo(subset_dir: Path) -> tuple[Path, str]:
    victim = subset_dir / "19" / "198" / "19-198-0002.flac"
    audio, rate = sf.read(victim, dtype="float32")
    sf.write(victim, np.stack([audio, audio], axis=1), rate, format="FLAC", subtype="PCM_16")
    return victim, "2 channels, expected mono"


def _break_empty_transcript(subset_dir: Path) -> tuple[Path, str]:
    trans = subset_dir / "26" / "495" / "26-495.trans.txt"
    lines = trans.read_text().splitlines()
    lines[1] = "26-495-0001"
    trans.write_text("\n".join(lines) + "\n")
    return Path(f"{trans}:2"), "empty transcript for 26-495-0001"


def _break_lowercase_transcript(subset_dir: Path) -> tuple[Path, str]:
    trans = subset_dir / "26" / "495" / "26-495.trans.txt"
    lines = trans.read_text().splitlines()
    lines[0] = "26-495-0000 hello THERE"
    trans.write_text("\n".join(lines) + "\n")
    return Path(f"{trans}:1"), "characters outside A-Z"


def _break_duplicate_audio(subset_dir: Path) -> tuple[Path, str]:
    victim = subset_dir / "26" / "495" / "19-198-0000.flac"  # a second file for one utterance
    shutil.copyfile(subset_dir / "19" / "198" / "19-198-0000.flac", victim)
    return victim, f"duplicate audio file for 19-198-0000 (also {subset_dir / '19' / '198'}"


def _break_empty_subset(subset_dir: Path) -> tuple[Path, str]:
    shutil.rmtree(subset_dir)
    subset_dir.mkdir()
    return subset_dir, "subset holds no utterances"


BREAKERS = [
    _break_missing_audio,
    _break_orphan_audio,
    _break_truncated_flac,
    _break_not_flac,
    _break_sample_rate,
    _break_stereo,
    _break_empty_transcript,
    _break_lowercase_transcript,
    _break_duplicate_audio,
    _break_empty_subset,
]


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda b: b.__name__[len("_break_") :])
def test_bad_input_is_reported_by_check_and_refused_by_the_reader(mini, breaker):
    subset_dir = mini / "dev-clean-2"
    path, message = breaker(subset_dir)
    before = _snapshot(mini)

    result = CliRunner().invoke(_cli(), ["data", "check", str(mini)])
    assert result.exit_code == 1, result.output
    problem_lines = [line for line in result.output.splitlines() if line.startswith("problem:")]
    assert len(problem_lines) == 1, result.output
    assert str(path) in problem_lines[0] and message in problem_lines[0]

    with pytest.raises(DataError) as caught:
        load_manifest(mini, "dev-clean-2")
    text = str(caught.value)
    assert "\n" not in text and str(path) in text and message in text
    assert _snapshot(mini) == before  # nothing written, not even a manifest cache


def test_missing_directories_are_one_line_errors(tmp_path, mini):
    with pytest.raises(DataError, match=f"LibriSpeech root not found: {tmp_path / 'nope'}"):
        load_manifest(tmp_path / "nope", "dev-clean-2")
    with pytest.raises(DataError, match="subset directory not found: .*dev-clean-9.*dev-clean-2"):
        load_manifest(mini, "dev-clean-9")
    with pytest.raises(DataError, match="LibriSpeech root not found"):
        check_root(tmp_path / "nope")


def _fambench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "fambench", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.subprocess
def test_cli_exit_codes_and_messages_end_to_end(mini, tmp_path):
    missing = tmp_path / "nope"
    run = _fambench("data", "check", str(missing))
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: LibriSpeech root not found: {missing}"

    run = _fambench("data", "check", str(mini), "--subset", "dev-clean-9")
    assert run.returncode == 2
    assert f"subset directory not found: {mini / 'dev-clean-9'}" in run.stderr

    victim, message = _break_truncated_flac(mini / "dev-clean-2")
    run = _fambench("data", "check", str(mini))
    assert run.returncode == 1
    assert f"problem: {victim}: {message}" in run.stdout
    assert "error: 1 problem(s) found" in run.stderr


def test_check_lists_every_problem_and_counts(mini):
    subset_dir = mini / "dev-clean-2"
    _break_missing_audio(subset_dir)
    _break_orphan_audio(subset_dir)
    report = check_root(mini)
    assert not report.ok and len(report.problems) == 2
    (subset,) = report.subsets
    assert (subset.utterances, subset.speakers) == (4, 2)  # 6 - missing - orphan
    assert subset.hours > 0


def test_skip_bad_warns_with_the_count_and_refuses_above_the_threshold(mini, caplog):
    subset_dir = mini / "dev-clean-2"
    _break_truncated_flac(subset_dir)
    with caplog.at_level(logging.WARNING, logger="fambench.data.librispeech"):
        manifest = load_manifest(mini, "dev-clean-2", skip_bad=True, max_bad_fraction=0.2)
    assert len(manifest) == 5 and "19-198-0000" not in set(manifest["utt_id"])
    assert "skipping 1 bad utterance(s) of 6" in caplog.text
    assert not (subset_dir / CACHE_NAME).exists()

    _break_not_flac(subset_dir)
    with pytest.raises(DataError, match=r"2 of 6 utterances in .*dev-clean-2 are bad, more than"):
        load_manifest(mini, "dev-clean-2", skip_bad=True, max_bad_fraction=0.2)
    with pytest.raises(DataError, match="unreadable or corrupt audio"):
        load_manifest(mini, "dev-clean-2")


def test_check_of_the_synthetic_corpus_reports_all_subsets(synth_corpus):
    report = check_root(synth_corpus)
    assert report.ok
    assert [s.name for s in report.subsets] == ["dev-synth", "test-synth", "train-synth"]
    assert [s.utterances for s in report.subsets][:2] == [20, 20]


def _mixed_subset(synth_corpus: Path, root: Path) -> Path:
    """Subset `mixed` of root: every dev-synth and test-synth chapter (a copy)."""
    for source in ("dev-synth", "test-synth"):
        for chapter in sorted((synth_corpus / source).glob("*/*")):
            shutil.copytree(chapter, root / "mixed" / chapter.parent.name / chapter.name)
    return root / "mixed"


def test_skip_bad_counts_the_utterances_of_non_utf8_transcripts_once(
    synth_corpus, tmp_path, caplog
):
    root = tmp_path / "LibriSpeech"
    subset_dir = _mixed_subset(synth_corpus, root)
    transcripts = sorted(subset_dir.glob("*/*/*.trans.txt"))
    assert len(transcripts) == 4
    first, second = transcripts[0], transcripts[2]
    # One stray Latin-1 byte on line 3 of one file; a broken UTF-8 sequence on line 1 of another.
    lines = first.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b" ", b" \xe9", 1)
    first.write_bytes(b"\n".join(lines))
    second.write_bytes(second.read_bytes().replace(b" ", b" \xff", 1))
    spoiled = {
        line.split(maxsplit=1)[0].decode()
        for trans in (first, second)
        for line in trans.read_bytes().splitlines()
    }
    total = len(list(subset_dir.glob("*/*/*.flac")))
    assert (len(spoiled), total) == (20, 40)
    first_problem = (
        f"{first}: unreadable transcript file: not UTF-8 "
        "(line 3, byte 0xe9: invalid continuation byte)"
    )
    before = _snapshot(root)

    with pytest.raises(DataError) as caught:
        load_manifest(root, "mixed", skip_bad=True)
    assert str(caught.value) == (
        f"20 of 40 utterances in {subset_dir} are bad, more than the 1.0% that may be "
        f"skipped; first: {first_problem}"
    )
    with caplog.at_level(logging.WARNING, logger="fambench.data.librispeech"):
        manifest = load_manifest(root, "mixed", skip_bad=True, max_bad_fraction=0.5)
    assert caplog.messages == [
        f"skipping 20 bad utterance(s) of 40 in {subset_dir}; first: {first_problem}"
    ]
    assert len(manifest) == 20 and not spoiled & set(manifest["utt_id"])
    with pytest.raises(DataError) as caught:
        load_manifest(root, "mixed")
    assert str(caught.value) == (
        f"{first_problem} (and 21 more problems; run `fambench data check {root} --subset mixed`)"
    )
    assert _snapshot(root) == before  # nothing written, not even a manifest cache

    result = CliRunner().invoke(_cli(), ["data", "check", str(root)])
    assert result.exit_code == 1
    problems = [line for line in result.output.splitlines() if line.startswith("problem:")]
    assert problems[:2] == [
        f"problem: {first_problem}",
        f"problem: {second}: unreadable transcript file: not UTF-8 "
        "(line 1, byte 0xff: invalid start byte)",
    ]
    assert len(problems) == 22  # the two files and each of their 20 audio files
    assert result.stderr.strip() == f"error: 22 problem(s) found under {root}"
    (report,) = check_root(root).subsets
    assert report.utterances == 20


@pytest.mark.parametrize(
    "args, message",
    [
        (["--subset", ""], "invalid subset name ''"),
        (["--subset", ".."], "invalid subset name '..'"),
        (["--subset", "../LibriSpeech/dev-clean-2"], "invalid subset name '../LibriSpeech/"),
        (["--subset", "dev-clean-9"], "subset directory not found"),
    ],
)
def test_check_refuses_bad_subset_names_in_one_line(mini, args, message):
    before = _snapshot(mini)
    result = CliRunner().invoke(_cli(), ["data", "check", str(mini), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert result.stdout == ""
    assert _snapshot(mini) == before


def test_check_of_a_missing_or_non_directory_root_is_one_line_exit_2(tmp_path):
    missing, blocker = tmp_path / "nope", tmp_path / "file"
    blocker.write_text("x")
    for root, what in ((missing, "not found"), (blocker, "is not a directory")):
        result = CliRunner().invoke(_cli(), ["data", "check", str(root)])
        assert result.exit_code == 2
        assert result.stderr == f"error: LibriSpeech root {what}: {root}\n"
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_a_subset_named_twice_is_checked_once(mini):
    result = CliRunner().invoke(
        _cli(), ["data", "check", str(mini), "-s", "dev-clean-2", "-s", "dev-clean-2"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("dev-clean-2") == 1
