"""The embedded eSpeak NG corpus: layout, content, determinism, completion handling."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from fambench.data.librispeech import check_root, load_manifest
from fambench.data.synth import (
    LOCK_NAME,
    MARKER_NAME,
    SUBSETS,
    SynthSettingError,
    SynthSettings,
    corpus_status,
    ensure_corpus,
    generate_corpus,
    plan_chapters,
    plan_speakers,
    read_marker,
    sentence_stream,
)
from fambench.data.wordlist import WORDS
from fambench.errors import ConfigError, DataError

TINY = SynthSettings(hours=0.005, dev_utterances=3, test_utterances=3, seed=7)


def _cli():
    import fambench.cli.commands_data  # noqa: F401  (registers `fambench data`)
    from fambench.cli import app

    return app


def _corpus_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (p.suffix == ".flac" or p.name.endswith(".trans.txt"))
    }


def test_cli_synth_writes_a_valid_corpus_that_check_reports(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        _cli(),
        [
            "data",
            "synth",
            "--out",
            str(tmp_path),
            "--hours",
            "0.05",
            "--dev-utterances",
            "30",
            "--test-utterances",
            "30",
        ],
    )
    assert result.exit_code == 0, result.output
    root = tmp_path / "LibriSpeech"
    for subset in SUBSETS:
        flacs = sorted((root / subset).glob("*/*/*.flac"))
        assert flacs, subset
        for flac in flacs[:5]:
            speaker, chapter, _ = flac.stem.split("-")
            assert flac.parent == root / subset / speaker / chapter
            assert (flac.parent / f"{speaker}-{chapter}.trans.txt").is_file()
            info = sf.info(str(flac))
            assert (info.samplerate, info.channels, info.format, info.subtype) == (
                16000,
                1,
                "FLAC",
                "PCM_16",
            )
    report = check_root(root)
    assert report.ok, [str(p) for p in report.problems]
    by_name = {s.name: s for s in report.subsets}
    assert by_name["dev-synth"].utterances == 30 and by_name["test-synth"].utterances == 30
    assert 0.05 <= by_name["train-synth"].hours < 0.06  # stops just past the target

    check = runner.invoke(_cli(), ["data", "check", str(root)])
    assert check.exit_code == 0, check.output
    assert "train-synth" in check.output and "no problems found" in check.output


def test_the_marker_is_sorted_indented_json_and_no_temp_file_is_left(synth_corpus):
    marker = read_marker(synth_corpus)
    assert marker["format_version"] == 1 and set(marker["subsets"]) == set(SUBSETS)
    text = (synth_corpus / MARKER_NAME).read_text()
    assert text == json.dumps(marker, indent=2, sort_keys=True) + "\n"
    assert not list(synth_corpus.parent.rglob("*.tmp"))


def test_transcripts_read_back_exactly_as_generated(synth_corpus, synth_settings):
    plans = {(p.subset, str(p.chapter_id)): p for p in plan_chapters(synth_settings)}
    for subset in SUBSETS:
        manifest = load_manifest(synth_corpus, subset)
        for chapter, rows in manifest.groupby("chapter", sort=True):
            plan = plans[(subset, chapter)]
            stream = sentence_stream(synth_settings, subset, plan.chapter_index)
            expected = [next(stream) for _ in range(len(rows))]
            assert rows.sort_values("utt_id")["transcript"].tolist() == expected
            assert rows["utt_id"].tolist() == [
                f"{plan.speaker.speaker_id}-{plan.chapter_id}-{i:04d}" for i in range(len(rows))
            ]


def test_transcripts_use_the_librispeech_alphabet_and_our_vocabulary(synth_corpus):
    vocab = set(WORDS)
    texts = load_manifest(synth_corpus, "train-synth")["transcript"]
    for text in texts:
        assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", text)
        words = text.split()
        assert 4 <= len(words) <= 20
        assert set(words) <= vocab


def test_speaking_rate_stays_far_below_the_model_frame_rate(synth_corpus):
    for subset in SUBSETS:
        manifest = load_manifest(synth_corpus, subset)
        chars_per_s = manifest["transcript"].str.len() / manifest["duration"]
        assert chars_per_s.max() < 20.0  # the model emits 25 frames per second
        assert chars_per_s.median() > 8.0  # and it is real speech, not mostly silence


def test_subsets_are_speaker_disjoint(synth_corpus):
    speakers = {s: set(load_manifest(synth_corpus, s)["speaker"]) for s in SUBSETS}
    assert speakers["train-synth"].isdisjoint(speakers["dev-synth"])
    assert speakers["train-synth"].isdisjoint(speakers["test-synth"])
    assert speakers["dev-synth"].isdisjoint(speakers["test-synth"])
    # Voices too, not just ids.
    plan = plan_speakers(SynthSettings())
    voices = {s: {sp.voice for sp in plan[s]} for s in SUBSETS}
    assert not voices["train-synth"] & (voices["dev-synth"] | voices["test-synth"])


def test_default_settings_have_many_distinct_voices():
    speakers = [sp for group in plan_speakers(SynthSettings()).values() for sp in group]
    assert len({sp.voice.name for sp in speakers}) >= 12
    assert len({sp.speaker_id for sp in speakers}) == len(speakers)
    assert all(115 <= sp.voice.rate <= 150 for sp in speakers)


def test_wordlist_is_large_unique_and_has_apostrophes():
    assert len(WORDS) >= 2000
    assert len(set(WORDS)) == len(WORDS)
    assert {"DON'T", "IT'S", "THE"} <= set(WORDS)
    assert all(re.fullmatch(r"[A-Z]+('[A-Z]+)?", w) for w in WORDS)


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(
    synth_corpus, synth_settings, tmp_path
):
    again = generate_corpus(tmp_path, synth_settings, workers=1)
    original = _corpus_files(synth_corpus)
    assert len(original) > 60
    assert _corpus_files(again) == original


def test_a_different_seed_gives_different_text_and_voices(synth_settings, tmp_path):
    other = replace(synth_settings, seed=1)
    assert plan_speakers(other) != plan_speakers(synth_settings)
    for subset in SUBSETS:
        assert next(sentence_stream(other, subset, 0)) != next(
            sentence_stream(synth_settings, subset, 0)
        )


def test_partial_or_mismatching_corpus_is_regenerated_never_used(tmp_path, caplog):
    root = ensure_corpus(tmp_path, TINY)
    files = _corpus_files(root)
    assert corpus_status(root, TINY) is None
    # A different corpus in the same root is left alone.
    (root / "dev-clean-2" / "1" / "2").mkdir(parents=True)
    (root / "dev-clean-2" / "1" / "2" / "1-2.trans.txt").write_text("")

    victim = sorted((root / "train-synth").glob("*/*/*.flac"))[0]
    victim.unlink()
    assert "FLAC" in corpus_status(root, TINY)
    with caplog.at_level(logging.WARNING, logger="fambench.data.synth"):
        ensure_corpus(tmp_path, TINY)
    assert "regenerating" in caplog.text and "train-synth holds" in caplog.text
    assert (root / "dev-clean-2" / "1" / "2" / "1-2.trans.txt").exists()
    shutil.rmtree(root / "dev-clean-2")
    assert _corpus_files(root) == files

    (root / MARKER_NAME).unlink()
    assert "no completion marker" in corpus_status(root, TINY)

    other = replace(TINY, hours=0.006)
    (root / MARKER_NAME).write_text("{}")
    assert corpus_status(root, other) is not None
    generate_corpus(tmp_path, TINY)
    reason = corpus_status(root, other)
    assert reason.startswith("its settings differ") and "hours: 0.005 -> 0.006" in reason
    assert read_marker(root)["settings"]["hours"] == 0.005


def test_a_second_generator_waits_for_the_first_and_reuses_its_corpus(tmp_path, monkeypatch):
    import fambench.data.synth as synth

    generated = []
    real_generate = synth._generate_locked
    monkeypatch.setattr(
        synth, "_generate_locked", lambda *a: generated.append(1) or real_generate(*a)
    )
    first = open(tmp_path / LOCK_NAME, "a")  # stands for another process mid-generation
    fcntl.flock(first, fcntl.LOCK_EX)
    result = {}
    waiter = threading.Thread(target=lambda: result.update(root=ensure_corpus(tmp_path, TINY)))
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive(), "ensure_corpus must wait while another generator holds the lock"
    assert not (tmp_path / ".fambench-synth-staging").exists()
    generate_corpus_inline = real_generate(tmp_path, TINY, 1)  # the "other process" finishes
    fcntl.flock(first, fcntl.LOCK_UN)
    first.close()
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    assert result["root"] == generate_corpus_inline
    assert generated == [], "the waiter found the finished corpus and did not regenerate it"
    assert check_root(result["root"]).ok


def test_interrupted_staging_is_cleaned_and_not_used(tmp_path):
    staging = tmp_path / ".fambench-synth-staging" / "train-synth"
    staging.mkdir(parents=True)
    (staging / "junk.flac").write_bytes(b"not audio")
    root = ensure_corpus(tmp_path, TINY)
    assert not (tmp_path / ".fambench-synth-staging").exists()
    assert check_root(root).ok


def test_cli_synth_reuses_a_complete_corpus(tmp_path):
    runner = CliRunner()
    args = [
        "data",
        "synth",
        "--out",
        str(tmp_path),
        "--hours",
        "0.005",
        "--dev-utterances",
        "3",
        "--test-utterances",
        "3",
        "--seed",
        "3",
    ]
    first = runner.invoke(_cli(), args)
    assert first.exit_code == 0, first.output
    marker_mtime = (tmp_path / "LibriSpeech" / MARKER_NAME).stat().st_mtime_ns
    second = runner.invoke(_cli(), args)
    assert second.exit_code == 0 and "reused" in second.output
    assert (tmp_path / "LibriSpeech" / MARKER_NAME).stat().st_mtime_ns == marker_mtime


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"hours": 0}, "hours"),
        ({"dev_utterances": 0}, "dev_utterances"),
        ({"min_words": 5, "max_words": 4}, "min_words"),
        ({"rate_wpm": (300, 400)}, "rate_wpm"),
        ({"seed": -1}, "seed must be an integer with 0 <= seed < 2\\*\\*32, got -1"),
        ({"seed": 2**32}, "seed must be"),
        ({"seed": 1.5}, "seed must be"),
        ({"hours": float("inf")}, "hours must be a finite number > 0, got inf"),
        ({"hours": float("nan")}, "hours must be a finite number > 0, got nan"),
        ({"test_utterances": 2.5}, "test_utterances must be an integer >= 1"),
    ],
)
def test_invalid_settings_are_refused(changes, words):
    with pytest.raises(ConfigError, match=words):
        SynthSettings(**changes)


def test_generated_audio_is_speech_level_not_silence_or_clipping(synth_corpus):
    manifest = load_manifest(synth_corpus, "dev-synth")
    for path in manifest["path"][:10]:
        audio, rate = sf.read(path, dtype="float32")
        peak = float(abs(audio).max())
        assert rate == 16000 and 0.05 < peak <= 0.99


def test_corpus_copy_is_readable_elsewhere(synth_corpus, tmp_path):
    # The layout carries no absolute paths: a moved corpus still reads and checks clean.
    moved = tmp_path / "LibriSpeech"
    shutil.copytree(synth_corpus, moved)
    assert load_manifest(moved, "test-synth")["path"].str.startswith(str(moved)).all()
    assert check_root(moved, ["test-synth"]).ok


SYNTH_ARGS = ["--hours", "0.005", "--dev-utterances", "3", "--test-utterances", "3"]


@pytest.fixture()
def no_generation(monkeypatch):
    """Fail loudly (instead of writing, or hanging) if generation is started at all."""
    import fambench.data.synth as synth

    def refuse(out_dir):
        raise AssertionError(f"generation started in {out_dir}")

    monkeypatch.setattr(synth, "_generation_lock", refuse)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "-1"], "--seed must be an integer with 0 <= seed < 2**32, got -1"),
        (
            ["--seed", "4294967296"],
            "--seed must be an integer with 0 <= seed < 2**32, got 4294967296",
        ),
        (["--workers", "-3"], "--workers must be an integer >= 1 (or 0: one per core), got -3"),
        (["--hours", "0"], "--hours must be a finite number > 0, got 0.0"),
        (["--hours", "-1"], "--hours must be a finite number > 0, got -1.0"),
        (["--hours", "inf"], "--hours must be a finite number > 0, got inf"),
        (["--hours", "nan"], "--hours must be a finite number > 0, got nan"),
        (["--dev-utterances", "0"], "--dev-utterances must be an integer >= 1, got 0"),
        (["--test-utterances", "-5"], "--test-utterances must be an integer >= 1, got -5"),
    ],
)
def test_cli_synth_refuses_each_bad_option_before_writing_anything(
    tmp_path, no_generation, args, message
):
    out = tmp_path / "corpus"
    result = CliRunner().invoke(_cli(), ["data", "synth", "--out", str(out), *SYNTH_ARGS, *args])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {message}\n"
    assert result.stdout == ""
    assert not out.exists() and os.listdir(tmp_path) == []


def test_cli_synth_with_an_unwritable_out_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "corpus"
    result = CliRunner().invoke(_cli(), ["data", "synth", "--out", str(out), *SYNTH_ARGS])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: cannot create corpus directory {out}: Not a directory\n"
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.parametrize("workers", [-3, -1, 1.5])
def test_generate_and_ensure_refuse_a_bad_worker_count_before_writing(
    tmp_path, no_generation, workers
):
    for call in (generate_corpus, ensure_corpus):
        with pytest.raises(SynthSettingError) as caught:
            call(tmp_path / "corpus", TINY, workers=workers)
        assert caught.value.field == "workers"
        assert str(caught.value) == (
            "invalid synth settings: workers must be an integer >= 1 (or 0: one per core), "
            f"got {workers!r}"
        )
    assert os.listdir(tmp_path) == []


def _poison_last_chapter(monkeypatch):
    """Make the last chapter's worker fail: its staging root is a regular file."""
    import fambench.data.synth as synth

    real = synth._run_chapters
    poisoned = []

    def run_chapters(tasks, workers, results_dir):
        blocker = results_dir / "blocker"
        blocker.write_text("not a directory")
        poisoned.append(tasks[-1].plan)
        tasks = [*tasks[:-1], replace(tasks[-1], staging_root=str(blocker))]
        return real(tasks, workers, results_dir)

    monkeypatch.setattr(synth, "_run_chapters", run_chapters)
    return poisoned


def test_a_generation_failing_midway_leaves_no_staging_and_no_root(tmp_path, monkeypatch):
    poisoned = _poison_last_chapter(monkeypatch)
    out = tmp_path / "corpus"
    result = CliRunner().invoke(
        _cli(), ["data", "synth", "--out", str(out), *SYNTH_ARGS, "--workers", "2"]
    )
    assert result.exit_code == 2, result.output
    (plan,) = poisoned
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"error: generating {plan.subset} chapter {plan.chapter_id} failed: "
        "NotADirectoryError: [Errno 20] Not a directory: "
    )
    # No staging directory, no empty LibriSpeech root: only the (reusable) lock file.
    assert os.listdir(out) == [LOCK_NAME]


def test_a_failed_regeneration_leaves_the_previous_corpus_intact(tmp_path, monkeypatch):
    root = ensure_corpus(tmp_path, TINY)
    files = _corpus_files(root)
    marker = (root / MARKER_NAME).read_text()
    _poison_last_chapter(monkeypatch)
    with pytest.raises(DataError, match="failed: NotADirectoryError"):
        generate_corpus(tmp_path, replace(TINY, seed=8))
    assert not (tmp_path / ".fambench-synth-staging").exists()
    assert sorted(os.listdir(tmp_path)) == [LOCK_NAME, "LibriSpeech"]
    assert _corpus_files(root) == files and (root / MARKER_NAME).read_text() == marker
    assert corpus_status(root, TINY) is None


def test_an_interrupt_during_generation_removes_the_staging_directory(tmp_path, monkeypatch):
    import fambench.data.synth as synth

    seen = []

    def interrupted(tasks, workers, results_dir):
        staging = results_dir.parent
        (staging / "train-synth").mkdir()
        (staging / "train-synth" / "partial.flac").write_bytes(b"half")
        seen.append(staging)
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_run_chapters", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(tmp_path, TINY, workers=1)
    assert seen == [tmp_path / ".fambench-synth-staging"]
    assert os.listdir(tmp_path) == [LOCK_NAME]


def test_the_low_entropy_texts_say_what_their_settings_ask():
    import itertools

    from fambench.data.grammar import DIGITS

    digits = SynthSettings(text="digits", min_words=3, max_words=5)
    for text in itertools.islice(sentence_stream(digits, "train-synth", 0), 200):
        words = text.split()
        assert 3 <= len(words) <= 5 and set(words) <= set(DIGITS)
    commands = SynthSettings(text="commands")
    said = list(itertools.islice(sentence_stream(commands, "train-synth", 0), 3000))
    vocabulary = {w for text in said for w in text.split()}
    assert 150 <= len(vocabulary) <= 200
    assert all(re.fullmatch(r"[A-Z' ]+", text) for text in said)
    assert said == list(itertools.islice(sentence_stream(commands, "train-synth", 0), 3000))
    top = SynthSettings(vocabulary=50)
    words = {
        w for t in itertools.islice(sentence_stream(top, "train-synth", 0), 500) for w in t.split()
    }
    assert words <= set(WORDS[:50])
    with pytest.raises(ConfigError, match="text must be one of words, digits, commands"):
        SynthSettings(text="poems")
    with pytest.raises(ConfigError, match="vocabulary must lie within"):
        SynthSettings(vocabulary=-1)
