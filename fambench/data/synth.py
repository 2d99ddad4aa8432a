"""The embedded speech corpus: eSpeak NG speech written in the LibriSpeech on-disk layout.

`generate_corpus` writes ``<out>/LibriSpeech/{train-synth,dev-synth,test-synth}/<speaker>/
<chapter>/<speaker>-<chapter>-<utt:04d>.flac`` (16 kHz mono PCM_16 FLAC) and one
``<speaker>-<chapter>.trans.txt`` per chapter, so the same reader serves it and real LibriSpeech.

* Speakers: each is one eSpeak voice setting (English accent × voice variant × pitch × pitch
  range × speaking rate); train, dev and test draw from disjoint speaker sets.
* Text: 4–20 words drawn Zipf-like from our own 2,400-word vocabulary (`wordlist.WORDS`).
  Speaking rates of 115–150 words per minute keep speech near 13 characters per second
  (always under 20), far below the model's 25 output frames per second.
* Acoustics: random leading silence, white/pink/brown noise at a random SNR, random gain.
* Determinism: every random choice comes from a generator seeded by (seed, subset, chapter,
  utterance), and each chapter is synthesized in a fresh process (eSpeak keeps state between
  utterances), so the same settings give byte-identical files whatever the worker count.
* Completion: subsets are built in a staging directory, moved into place, and a marker
  (``.fambench-synth.json`` with the settings and file counts) is written last. `ensure_corpus`
  reuses a corpus only when that marker matches; anything else is removed and regenerated.
  Generators sharing an output directory take turns on an flock (``.fambench-synth.lock``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fambench.data.espeak import Voice
from fambench.data.grammar import command_sentence, digit_string
from fambench.data.wordlist import WORDS
from fambench.errors import ConfigError, DataError
from fambench.fileio import move_into, write_json
from fambench.filelock import FileLock
from fambench.machine import usable_cores

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
TEXTS = ("words", "digits", "commands")
SUBSETS = ("train-synth", "dev-synth", "test-synth")
MARKER_NAME = ".fambench-synth.json"
LOCK_NAME = ".fambench-synth.lock"
# Bump when the generator's output changes, so an old corpus is not mistaken for a current one.
GENERATOR_VERSION = 1

ACCENTS = (
    "en-us",
    "en",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "iven",
    "john",
    "linda",
    "steph",
    "max",
    "ed",
)
_SUBSET_CODES = {"train-synth": 1, "dev-synth": 2, "test-synth": 3}
_SPEAKER_ID_BASE = {"train-synth": 1000, "dev-synth": 2000, "test-synth": 3000}
# Aim for about this much train audio per chapter (LibriSpeech chapters hold minutes).
_TRAIN_CHAPTER_SECONDS = 60.0
_DEV_TEST_UTTS_PER_CHAPTER = 15


SEED_LIMIT = 2**32
SEED_RANGE = "an integer with 0 <= seed < 2**32"


class SynthSettingError(ConfigError):
    """An invalid `SynthSettings` value; `field` names the setting (the CLI option's name)."""

    def __init__(self, field: str, requirement: str, value: object) -> None:
        self.field = field
        self.detail = f"must be {requirement}, got {value!r}"
        super().__init__(f"invalid synth settings: {field} {self.detail}")


def _is_int(value: object, low: int, high: int | None = None) -> bool:
    """An int (not a bool) with low <= value (< high)."""
    return (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value < high)
    )


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_workers(workers: int | None) -> int:
    """The worker-process count to use: `workers`, or one per core for None or 0.

    Raises SynthSettingError for anything else (a negative count would start no worker and
    wait forever).
    """
    if workers is None or (_is_int(workers, 0) and workers == 0):
        return _default_workers()
    if not _is_int(workers, 1):
        raise SynthSettingError("workers", "an integer >= 1 (or 0: one per core)", workers)
    return int(workers)


@dataclass(frozen=True)
class SynthSettings:
    """Everything that determines the generated corpus (recorded in its completion marker).

    hours: train audio to generate (finite, > 0); dev_utterances, test_utterances: >= 1 each;
    seed: 0 <= seed < 2**32. Invalid values raise SynthSettingError (a ConfigError).
    """

    hours: float = 3.0
    dev_utterances: int = 300
    test_utterances: int = 300
    seed: int = 0
    train_speakers: int = 32
    dev_speakers: int = 6
    test_speakers: int = 6
    chapters_per_speaker: int = 2
    min_words: int = 4
    max_words: int = 20
    rate_wpm: tuple[int, int] = (115, 150)
    snr_db: tuple[float, float] = (15.0, 35.0)
    gain_db: tuple[float, float] = (-8.0, 0.0)
    zipf_exponent: float = 1.0
    # What the utterances say: "words" (min..max words drawn Zipf-like from the most frequent
    # `vocabulary` words of WORDS, all for 0), "digits" (min..max digits) or "commands" (one
    # to three commands of fambench.data.grammar's command grammar).
    text: str = "words"
    vocabulary: int = 0

    def __post_init__(self) -> None:
        # The options a user sets (`fambench data synth`) are checked one by one, so that the
        # error names the option; SynthSettingError.field says which.
        for name, ok, requirement in (
            ("hours", _is_real(self.hours) and 0 < self.hours < math.inf, "a finite number > 0"),
            ("dev_utterances", _is_int(self.dev_utterances, 1), "an integer >= 1"),
            ("test_utterances", _is_int(self.test_utterances, 1), "an integer >= 1"),
            ("seed", _is_int(self.seed, 0, SEED_LIMIT), SEED_RANGE),
        ):
            if not ok:
                raise SynthSettingError(name, requirement, getattr(self, name))
        checks = [
            (
                min(self.train_speakers, self.dev_speakers, self.test_speakers) >= 1,
                "every subset needs at least one speaker",
            ),
            (
                self.train_speakers + self.dev_speakers + self.test_speakers
                <= len(ACCENTS) * len(VARIANTS),
                f"at most {len(ACCENTS) * len(VARIANTS)} distinct speakers are available",
            ),
            (self.chapters_per_speaker >= 1, "chapters_per_speaker must be >= 1"),
            (
                1 <= self.min_words <= self.max_words,
                f"need 1 <= min_words <= max_words, got {self.min_words}..{self.max_words}",
            ),
            (
                80 <= self.rate_wpm[0] <= self.rate_wpm[1] <= 200,
                f"rate_wpm must lie within 80..200 words per minute, got {self.rate_wpm}",
            ),
            (self.snr_db[0] <= self.snr_db[1], f"snr_db range is reversed: {self.snr_db}"),
            (self.text in TEXTS, f"text must be one of {', '.join(TEXTS)}, got {self.text!r}"),
            (
                0 <= self.vocabulary <= len(WORDS),
                f"vocabulary must lie within 0..{len(WORDS)} words, got {self.vocabulary}",
            ),
            (
                self.gain_db[0] <= self.gain_db[1] <= 0,
                f"gain_db must be an increasing range <= 0 dB, got {self.gain_db}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid synth settings: {message}")

    def to_json(self) -> dict:
        """Plain JSON-able form (tuples become lists), as stored in the marker."""
        return json.loads(json.dumps(asdict(self)))


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: a LibriSpeech-style numeric id and an eSpeak voice setting."""

    speaker_id: int
    voice: Voice


@dataclass(frozen=True)
class ChapterPlan:
    """One chapter to generate: its speaker, ids and how much it should hold."""

    subset: str
    chapter_index: int  # position within the subset; seeds the chapter's text and noise
    speaker: Speaker
    chapter_id: int
    target_seconds: float  # train: generate until this much audio exists
    target_utterances: int  # dev/test: exactly this many (0 for train)


@dataclass(frozen=True)
class _ChapterTask:
    plan: ChapterPlan
    settings: SynthSettings
    staging_root: str


@dataclass
class _ChapterResult:
    subset: str
    speaker_id: int
    utterances: list[tuple[str, int, str]] = field(default_factory=list)  # id, samples, text


def plan_speakers(settings: SynthSettings) -> dict[str, list[Speaker]]:
    """Pick disjoint speakers for the three subsets, deterministically from the seed."""
    rng = np.random.default_rng([settings.seed, 0])
    combos = [(a, v) for a in ACCENTS for v in VARIANTS]
    counts = {
        "train-synth": settings.train_speakers,
        "dev-synth": settings.dev_speakers,
        "test-synth": settings.test_speakers,
    }
    picked = rng.permutation(len(combos))[: sum(counts.values())]
    speakers: dict[str, list[Speaker]] = {}
    start = 0
    for subset in SUBSETS:
        speakers[subset] = []
        for k, combo_index in enumerate(picked[start : start + counts[subset]]):
            accent, variant = combos[combo_index]
            voice = Voice(
                name=f"{accent}+{variant}",
                rate=int(rng.integers(settings.rate_wpm[0], settings.rate_wpm[1] + 1)),
                pitch=int(rng.integers(25, 76)),
                pitch_range=int(rng.integers(30, 81)),
            )
            speakers[subset].append(Speaker(_SPEAKER_ID_BASE[subset] + k, voice))
        start += counts[subset]
    return speakers


def plan_chapters(settings: SynthSettings) -> list[ChapterPlan]:
    """Every chapter of the corpus, subset by subset, speakers assigned round-robin.

    Train gets one chapter per ~minute of audio (at least 2, at most chapters_per_speaker per
    speaker); dev and test one per ~15 utterances, split as evenly as possible.
    """
    speakers = plan_speakers(settings)
    plans: list[ChapterPlan] = []
    for subset in SUBSETS:
        pool = speakers[subset]
        max_chapters = len(pool) * settings.chapters_per_speaker
        if subset == "train-synth":
            total = settings.hours * 3600.0
            n = min(max_chapters, max(2, round(total / _TRAIN_CHAPTER_SECONDS)))
            seconds, counts = [total / n] * n, [0] * n
        else:
            utts = settings.dev_utterances if subset == "dev-synth" else settings.test_utterances
            n = min(max_chapters, utts, max(2, math.ceil(utts / _DEV_TEST_UTTS_PER_CHAPTER)))
            seconds, counts = [0.0] * n, [utts // n + (1 if i < utts % n else 0) for i in range(n)]
        for i in range(n):
            speaker = pool[i % len(pool)]
            chapter_id = speaker.speaker_id * 10 + i // len(pool)
            plans.append(ChapterPlan(subset, i, speaker, chapter_id, seconds[i], counts[i]))
    return plans


def zipf_probabilities(n_words: int, exponent: float) -> np.ndarray:
    """Zipf–Mandelbrot weights over ranks 1..n (the offset flattens the very top ranks)."""
    ranks = np.arange(1, n_words + 1, dtype=np.float64)
    weights = 1.0 / (ranks + 2.7) ** exponent
    return weights / weights.sum()


def sentence_stream(settings: SynthSettings, subset: str, chapter_index: int) -> Iterator[str]:
    """The endless, seeded sequence of transcripts that a chapter's utterances speak, in order."""
    rng = np.random.default_rng([settings.seed, _SUBSET_CODES[subset], chapter_index, 0])
    if settings.text == "digits":
        while True:
            yield digit_string(rng, settings.min_words, settings.max_words)
    if settings.text == "commands":
        while True:
            yield command_sentence(rng)
    words = WORDS[: settings.vocabulary or len(WORDS)]
    probs = zipf_probabilities(len(words), settings.zipf_exponent)
    while True:
        n_words = int(rng.integers(settings.min_words, settings.max_words + 1))
        yield " ".join(words[i] for i in rng.choice(len(words), size=n_words, p=probs))


def _colored_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    color = int(rng.integers(0, 3))  # 0 white, 1 pink (1/f), 2 brown (1/f^2)
    if color == 0 or n < 2:
        return rng.standard_normal(n)
    size = 1 << (n - 1).bit_length()  # power-of-two FFTs are several times faster
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.arange(spectrum.shape[0], dtype=np.float64)
    freqs[0] = 1.0
    spectrum /= freqs ** (color / 2.0)
    return np.fft.irfft(spectrum, n=size)[:n]


def _degrade(clean: np.ndarray, rng: np.random.Generator, settings: SynthSettings) -> np.ndarray:
    """Pad, add noise at a random SNR, apply a random gain; float32 in, int16 out."""
    lead = int(rng.uniform(0.05, 0.30) * SAMPLE_RATE)
    tail = int(rng.uniform(0.05, 0.20) * SAMPLE_RATE)
    speech = np.concatenate([np.zeros(lead), clean.astype(np.float64), np.zeros(tail)])
    noise = _colored_noise(rng, speech.shape[0])
    snr_db = rng.uniform(*settings.snr_db)
    signal_power = float(np.mean(clean.astype(np.float64) ** 2)) or 1e-8
    noise *= math.sqrt(signal_power / (float(np.mean(noise**2)) + 1e-12) / 10 ** (snr_db / 10))
    mixed = (speech + noise) * 10 ** (rng.uniform(*settings.gain_db) / 20)
    peak = float(np.max(np.abs(mixed))) if mixed.size else 0.0
    if peak > 0.98:
        mixed *= 0.98 / peak
    return np.round(mixed * 32767.0).astype(np.int16)


def _generate_chapter(task: _ChapterTask) -> _ChapterResult:
    """Synthesize one chapter; runs in a fresh worker process (see module docstring)."""
    import soundfile as sf
    import torch
    import torchaudio

    from fambench.data.espeak import ESpeak

    torch.set_num_threads(1)
    engine = ESpeak.get()
    resample = torchaudio.transforms.Resample(engine.sample_rate, SAMPLE_RATE)
    plan, settings = task.plan, task.settings
    code = _SUBSET_CODES[plan.subset]
    texts = sentence_stream(settings, plan.subset, plan.chapter_index)
    speaker_id = plan.speaker.speaker_id
    chapter_dir = Path(task.staging_root) / plan.subset / str(speaker_id) / str(plan.chapter_id)
    chapter_dir.mkdir(parents=True, exist_ok=True)
    result = _ChapterResult(plan.subset, speaker_id)
    seconds = 0.0
    index = 0
    while (
        (seconds < plan.target_seconds)
        if plan.target_utterances == 0
        else (index < plan.target_utterances)
    ):
        text = next(texts)
        espeak_seed = int(
            np.random.default_rng([settings.seed, code, plan.chapter_index, 2, index]).integers(
                2**31
            )
        )
        # Lowercase: eSpeak may spell out words written in capitals.
        raw = engine.synthesize(text.lower(), plan.speaker.voice, seed=espeak_seed)
        wave = resample(torch.from_numpy(raw.astype(np.float32) / 32768.0)).numpy()
        noise_rng = np.random.default_rng([settings.seed, code, plan.chapter_index, 1, index])
        audio = _degrade(wave, noise_rng, settings)
        utt_id = f"{speaker_id}-{plan.chapter_id}-{index:04d}"
        sf.write(
            chapter_dir / f"{utt_id}.flac", audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16"
        )
        result.utterances.append((utt_id, int(audio.shape[0]), text))
        seconds += audio.shape[0] / SAMPLE_RATE
        index += 1
    lines = "".join(f"{utt_id} {text}\n" for utt_id, _, text in result.utterances)
    (chapter_dir / f"{speaker_id}-{plan.chapter_id}.trans.txt").write_text(lines)
    return result


def _chapter_worker(task: _ChapterTask, result_path: str) -> None:
    """Process entry point: generate one chapter, report the result (or error) as JSON."""
    try:
        result = _generate_chapter(task)
        payload = {
            "subset": result.subset,
            "speaker_id": result.speaker_id,
            "utterances": result.utterances,
        }
        code = 0
    except Exception as exc:  # reported by the parent as one line
        payload = {"error": f"{type(exc).__name__}: {exc}"}
        code = 1
    Path(result_path).write_text(json.dumps(payload))
    raise SystemExit(code)


def _run_chapters(
    tasks: list[_ChapterTask], workers: int, results_dir: Path
) -> list[_ChapterResult]:
    """Run each chapter in its own fresh process, at most `workers` at a time."""
    from multiprocessing.connection import wait

    ctx = _mp_context()
    pending = list(enumerate(tasks))
    running: dict = {}
    results: list[_ChapterResult] = []
    try:
        while pending or running:
            while pending and len(running) < workers:
                index, task = pending.pop(0)
                result_path = results_dir / f"{index}.json"
                proc = ctx.Process(
                    target=_chapter_worker, args=(task, str(result_path)), daemon=True
                )
                proc.start()
                running[proc.sentinel] = (proc, task, result_path)
            for sentinel in wait(list(running)):
                proc, task, result_path = running.pop(sentinel)
                proc.join()
                try:
                    payload = json.loads(result_path.read_text())
                except (OSError, ValueError):
                    payload = {"error": f"worker died with exit code {proc.exitcode}"}
                if "error" in payload:
                    plan = task.plan
                    raise DataError(
                        f"generating {plan.subset} chapter {plan.chapter_id} "
                        f"failed: {payload['error']}"
                    )
                results.append(
                    _ChapterResult(
                        payload["subset"],
                        payload["speaker_id"],
                        [tuple(u) for u in payload["utterances"]],
                    )
                )
    finally:
        for proc, _, _ in running.values():
            proc.terminate()
            proc.join()
    return results


def _default_workers() -> int:
    return usable_cores()


def _mp_context():
    # Each chapter runs in a freshly forked process, so eSpeak always starts from the pristine
    # state of a parent that never loaded it. A parent that did synthesize in-process would
    # pass its state on, so then (and off Linux) workers are spawned instead, which needs the
    # usual `if __name__ == "__main__":` guard in the calling script.
    from fambench.data.espeak import ESpeak

    if not ESpeak.loaded() and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    log.warning(
        "eSpeak is already loaded in this process (or fork is unavailable): spawning "
        "one fresh process per chapter, which is slower"
    )
    return multiprocessing.get_context("spawn")


def read_marker(librispeech_root: Path) -> dict | None:
    """The completion marker of a generated corpus, or None when absent or unreadable."""
    try:
        return json.loads((Path(librispeech_root) / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _count_files(subset_dir: Path) -> tuple[int, int]:
    """(FLAC files, transcript files) in a subset."""
    return (
        sum(1 for _ in subset_dir.glob("*/*/*.flac")),
        sum(1 for _ in subset_dir.glob("*/*/*.trans.txt")),
    )


def corpus_status(librispeech_root: Path, settings: SynthSettings) -> str | None:
    """Why the corpus at `librispeech_root` cannot be reused, or None when it is complete."""
    librispeech_root = Path(librispeech_root)
    marker = read_marker(librispeech_root)
    if marker is None:
        if any((librispeech_root / s).exists() for s in SUBSETS):
            return "it has no completion marker (an interrupted generation)"
        return "it does not exist"
    if marker.get("generator_version") != GENERATOR_VERSION:
        return f"it was made by generator version {marker.get('generator_version')}"
    if marker.get("settings") != settings.to_json():
        old = marker.get("settings") or {}
        diffs = [
            f"{k}: {old.get(k)} -> {v}" for k, v in settings.to_json().items() if old.get(k) != v
        ]
        return "its settings differ (" + ", ".join(diffs) + ")"
    for subset in SUBSETS:
        info = marker.get("subsets", {}).get(subset, {})
        expected = (info.get("utterances"), info.get("chapters"))
        found = _count_files(librispeech_root / subset)
        if found != expected:
            return (
                f"{subset} holds {found[0]} FLAC and {found[1]} transcript files, "
                f"the marker records {expected[0]} and {expected[1]}"
            )
    return None


@contextlib.contextmanager
def _generation_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out_dir` while a corpus is generated there.

    Two processes (say two `fambench run` started together on a fresh cache) would otherwise
    share one staging directory and delete each other's files. flock is released by the
    kernel when its holder dies, so a killed generator never leaves the lock behind.
    """
    lock = FileLock(out_dir / LOCK_NAME, blocking=False)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not lock.acquire():
            log.warning("another process is generating the corpus in %s; waiting", out_dir)
            lock = FileLock(out_dir / LOCK_NAME)
            lock.acquire()
    except OSError as exc:
        raise DataError(f"cannot create corpus directory {out_dir}: {exc.strerror}") from exc
    try:
        yield
    finally:
        lock.release()


def generate_corpus(out_dir: Path, settings: SynthSettings, workers: int | None = None) -> Path:
    """Generate the corpus under `out_dir` (replacing any synthetic subsets there).

    Returns the LibriSpeech root (``out_dir / "LibriSpeech"``). Other subsets in that root,
    such as a real LibriSpeech download, are left alone. `workers`: None or 0 for one per core,
    else >= 1; an invalid count raises SynthSettingError before anything is written.
    """
    workers = check_workers(workers)
    with _generation_lock(Path(out_dir)):
        return _generate_locked(Path(out_dir), settings, workers)


def _generate_locked(out_dir: Path, settings: SynthSettings, workers: int | None) -> Path:
    """Generate into a staging directory, then swap the subsets in (the lock is held).

    However generation ends, the staging directory is gone afterwards; a LibriSpeech root that
    this call created is removed again if it is still empty.
    """
    root = out_dir / "LibriSpeech"
    workers = check_workers(workers)
    plans = plan_chapters(settings)
    made_root = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create corpus directory {root}: {exc.strerror}") from exc
    staging = out_dir / ".fambench-synth-staging"
    try:
        return _generate_in_staging(root, staging, plans, settings, workers)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made_root:
            with contextlib.suppress(OSError):
                root.rmdir()  # only succeeds when nothing was moved into it


def _generate_in_staging(
    root: Path, staging: Path, plans: list[ChapterPlan], settings: SynthSettings, workers: int
) -> Path:
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise DataError(f"cannot create staging directory {staging}: {exc.strerror}") from exc
    # Longest chapters first keeps all workers busy until the end.
    plans.sort(key=lambda p: -(p.target_seconds + 5.0 * p.target_utterances))
    tasks = [_ChapterTask(p, settings, str(staging)) for p in plans]
    # Import the heavy modules here, once: forked workers then inherit them instead of each
    # paying the import.
    import soundfile  # noqa: F401
    import torch  # noqa: F401
    import torchaudio  # noqa: F401

    started = time.perf_counter()
    log.info("generating %d chapters with %d workers into %s", len(tasks), workers, root)
    results_dir = staging / "results"
    results_dir.mkdir()
    results = _run_chapters(tasks, workers, results_dir)
    summary: dict[str, dict] = {}
    for subset in SUBSETS:
        rows = [u for r in results if r.subset == subset for u in r.utterances]
        summary[subset] = {
            "utterances": len(rows),
            "chapters": sum(1 for r in results if r.subset == subset),
            "seconds": round(sum(n for _, n, _ in rows) / SAMPLE_RATE, 3),
            "speakers": sorted({r.speaker_id for r in results if r.subset == subset}),
        }
    (root / MARKER_NAME).unlink(missing_ok=True)
    move_into([staging / subset for subset in SUBSETS], root)
    shutil.rmtree(staging, ignore_errors=True)
    marker = {
        "format_version": 1,
        "generator_version": GENERATOR_VERSION,
        "settings": settings.to_json(),
        "subsets": summary,
    }
    write_json(root / MARKER_NAME, marker, sort_keys=True)
    log.info("generated %s in %.1f s", root, time.perf_counter() - started)
    return root


def ensure_corpus(out_dir: Path, settings: SynthSettings, workers: int | None = None) -> Path:
    """Return the LibriSpeech root of a complete corpus for `settings`, generating if needed.

    A missing, partial or mismatching corpus is never used: it is logged and regenerated.
    """
    workers = check_workers(workers)
    out_dir = Path(out_dir)
    root = out_dir / "LibriSpeech"
    if corpus_status(root, settings) is None:
        return root
    with _generation_lock(out_dir):
        # Another process may have finished generating it while this one waited.
        reason = corpus_status(root, settings)
        if reason is None:
            return root
        if reason != "it does not exist":
            log.warning("regenerating the synthetic corpus at %s: %s", root, reason)
        return _generate_locked(out_dir, settings, workers)
