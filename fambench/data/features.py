"""Log-mel features, their on-disk cache, global CMVN and SpecAugment.

Features are 80-bin log-mel filterbanks (25 ms Hann window, 10 ms hop, 512-point FFT, no
centring, natural log with a floor) from `torchaudio.transforms.MelSpectrogram`. A subset's
features are computed once and stored as a single ``feats-<key>.f16`` file in the cache
directory (float16 frames back to back, then an index; read memory-mapped, `FeatureStore`);
the key hashes the manifest (ids, paths, sample counts, file sizes and mtimes) and every
feature setting, so a changed corpus or setting never reads a stale file. Values are
stored as float16 (half the disk; the rounding, under 0.01 on log-mel values, is far below
their spread) and returned as float32. There is one feature path: `FeatureCache.load` always
returns the stored (float16-rounded) values, also on the run that computes them, so the first
run on a corpus trains on exactly the inputs of every later run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fambench.data.librispeech import read_audio
from fambench.errors import DataError
from fambench.fileio import atomic_write, sweep_temporaries

log = logging.getLogger(__name__)

# Bump when the computation or the file format changes, so old caches are not read.
FEATURE_VERSION = 2


@dataclass(frozen=True)
class FeatureSettings:
    """How log-mel features are computed (all of it goes into the cache key)."""

    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    sample_rate: int = 16_000
    log_floor: float = 1e-6

    @property
    def win_length(self) -> int:
        return round(self.sample_rate * self.win_ms / 1000.0)

    @property
    def hop_length(self) -> int:
        return round(self.sample_rate * self.hop_ms / 1000.0)

    @property
    def n_fft(self) -> int:
        return 1 << (self.win_length - 1).bit_length()

    def num_frames(self, num_samples: int) -> int:
        """Frames `LogMel` yields for this many samples (no centring; each frame spans n_fft)."""
        if num_samples < self.n_fft:
            return 0
        return 1 + (num_samples - self.n_fft) // self.hop_length


class LogMel:
    """Callable turning a mono waveform (samples,) into log-mel features (frames, n_mels)."""

    def __init__(self, settings: FeatureSettings) -> None:
        import torchaudio

        self.settings = settings
        self._mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=settings.sample_rate,
            n_fft=settings.n_fft,
            win_length=settings.win_length,
            hop_length=settings.hop_length,
            n_mels=settings.n_mels,
            center=False,
            power=2.0,
        )

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.shape[-1] < self.settings.n_fft:
            return torch.zeros(0, self.settings.n_mels)
        with torch.no_grad():
            mel = self._mel(waveform.float())
        return mel.clamp_min(self.settings.log_floor).log().transpose(-1, -2).contiguous()


def feature_key(manifest: pd.DataFrame, settings: FeatureSettings) -> str:
    """Hash of what cached features depend on: the settings and each utterance's id, path,
    sample count, file size and mtime (a regenerated corpus with equal lengths still misses)."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps({"version": FEATURE_VERSION, **asdict(settings)}, sort_keys=True).encode()
    )
    samples = (
        manifest["num_samples"]
        if "num_samples" in manifest
        else (manifest["duration"] * settings.sample_rate).round().astype("int64")
    )
    for utt_id, path, n in zip(manifest["utt_id"], manifest["path"], samples, strict=True):
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise DataError(f"{path}: cannot read audio ({exc.strerror or exc})") from exc
        digest.update(f"{utt_id}\0{path}\0{int(n)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


class FeatureStore(Mapping[str, torch.Tensor]):
    """A subset's cached features, memory-mapped: utt_id -> float32 (frames, n_mels) tensor,
    in stored (manifest) order. Reading an utterance copies only its rows off the page cache,
    so a process's resident memory does not grow with the corpus, and every process reading
    the same file (data-parallel ranks) shares one copy in the page cache."""

    def __init__(self, ids: list[str], lengths: np.ndarray, data: np.ndarray) -> None:
        self.ids = ids
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        self.data = data  # float16 (total frames, n_mels); a np.memmap when read from disk
        self._position = {utt_id: i for i, utt_id in enumerate(ids)}

    @property
    def n_mels(self) -> int:
        return int(self.data.shape[1])

    def row(self, i: int) -> torch.Tensor:
        """The features of the i-th stored utterance (float32, a fresh tensor)."""
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return torch.from_numpy(np.array(self.data[start:end], dtype=np.float32))

    def __getitem__(self, utt_id: str) -> torch.Tensor:
        return self.row(self._position[utt_id])

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def open(cls, path: Path) -> FeatureStore:
        """Map a cache file written by `FeatureCache` (ValueError if it is not one)."""
        size = path.stat().st_size
        with open(path, "rb") as handle:
            if size < _TRAILER.size:
                raise ValueError("too short for a feature file")
            handle.seek(size - _TRAILER.size)
            index_bytes, magic = _TRAILER.unpack(handle.read(_TRAILER.size))
            if magic != _MAGIC:
                raise ValueError("not a fambench feature file")
            handle.seek(size - _TRAILER.size - index_bytes)
            index = json.loads(handle.read(index_bytes))
        ids, lengths, n_mels = (
            index["ids"],
            np.asarray(index["lengths"], dtype=np.int64),
            index["n_mels"],
        )
        frames = int(lengths.sum())
        if frames * n_mels * 2 != size - _TRAILER.size - index_bytes or len(ids) != len(lengths):
            raise ValueError("its index does not match its size")
        data = (
            np.memmap(path, dtype=np.float16, mode="r", shape=(frames, n_mels))
            if frames
            else np.zeros((0, n_mels), dtype=np.float16)
        )
        return cls(ids, lengths, data)


class NormalisedFeatures(Sequence[torch.Tensor]):
    """The store's utterances at `positions`, CMVN-normalised as they are read (nothing is
    held in memory but the lengths)."""

    def __init__(
        self, store: FeatureStore, positions: Sequence[int], mean: torch.Tensor, std: torch.Tensor
    ) -> None:
        self.store = store
        self.positions = np.asarray(positions, dtype=np.int64)
        self.lengths = store.lengths[self.positions] if len(self.positions) else np.zeros(0, int)
        self.mean, self.std = mean, std

    def __getitem__(self, i: int) -> torch.Tensor:
        return apply_cmvn(self.store.row(int(self.positions[i])), self.mean, self.std)

    def __len__(self) -> int:
        return len(self.positions)

    def frames(self, i: int) -> int:
        return int(self.lengths[i])

    def subset(self, kept: Sequence[int]) -> NormalisedFeatures:
        """Only the utterances `kept` (indices into this sequence)."""
        return NormalisedFeatures(self.store, self.positions[list(kept)], self.mean, self.std)


# A feature file: float16 frames of every utterance back to back, then a JSON index (ids,
# lengths, n_mels), then the index's size in bytes and a magic tag. The frames start at byte 0,
# so the file maps as one (frames, n_mels) array; the index comes last so that extraction can
# stream each chunk of utterances to disk without knowing every length first.
_TRAILER = struct.Struct("<Q8s")
_MAGIC = b"FBFEATS1"
_CHUNK_UTTERANCES = 256  # extracted (and held in memory) at a time


class FeatureCache:
    """Computes a manifest's features once and keeps them under `cache_dir`."""

    def __init__(
        self, cache_dir: Path, settings: FeatureSettings = FeatureSettings(), workers: int = 2
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.settings = settings
        self.workers = max(1, workers)

    def path_for(self, manifest: pd.DataFrame) -> Path:
        """The cache file that holds (or will hold) this manifest's features."""
        return self.cache_dir / f"feats-{feature_key(manifest, self.settings)}.f16"

    def load(self, manifest: pd.DataFrame) -> FeatureStore:
        """The manifest's features (utt_id -> float32 (frames, n_mels)), memory-mapped from
        the cache file, which is computed on first use.

        Always exactly what the cache file holds: freshly computed features go through the
        stored float16 form too, so a cold and a warm load return bitwise-equal tensors.
        """
        path = self.path_for(manifest)
        if path.exists():
            try:
                return FeatureStore.open(path)
            except (OSError, KeyError, ValueError, TypeError) as exc:
                log.warning("ignoring unreadable feature cache %s (%s); recomputing", path, exc)
        if self.cache_dir.is_dir():
            sweep_temporaries(self.cache_dir)  # what writers killed mid-write left behind
        started = time.perf_counter()
        atomic_write(path, lambda tmp: self._write(tmp, manifest))
        log.info(
            "extracted features of %d utterances in %.1f s",
            len(manifest),
            time.perf_counter() - started,
        )
        return FeatureStore.open(path)

    def compute(self, manifest: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Extract features without touching the cache (decoding in a small thread pool)."""
        extract = LogMel(self.settings)

        def one(path: str) -> torch.Tensor:
            return extract(torch.from_numpy(read_audio(path)))

        threads = torch.get_num_threads()
        # Threads share the work; one intra-op thread each avoids oversubscribing the cores.
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                results = list(pool.map(one, manifest["path"]))
        finally:
            torch.set_num_threads(threads)
        return dict(zip(manifest["utt_id"], results, strict=True))

    def _write(self, tmp: Path, manifest: pd.DataFrame) -> None:
        """Extract and write the feature file chunk by chunk (memory: one chunk at a time)."""
        chunks = (
            self.compute(manifest.iloc[start : start + _CHUNK_UTTERANCES])
            for start in range(0, len(manifest), _CHUNK_UTTERANCES)
        )
        write_feature_file(
            tmp, (item for chunk in chunks for item in chunk.items()), self.settings.n_mels
        )


def write_feature_file(path: Path, items: Iterable[tuple[str, torch.Tensor]], n_mels: int) -> None:
    """Write (utt_id, (frames, n_mels) features) items, in order, as a feature file that
    `FeatureStore.open` maps (values rounded to float16). Streams: holds no item longer than
    it takes to write it. (`FeatureCache` calls it on a temporary that it then renames.)"""
    ids, lengths = [], []
    with open(path, "wb") as handle:
        for utt_id, feats in items:
            handle.write(feats.numpy().astype(np.float16).tobytes())
            ids.append(utt_id)
            lengths.append(int(feats.shape[0]))
        index = json.dumps({"ids": ids, "lengths": lengths, "n_mels": n_mels}).encode()
        handle.write(index)
        handle.write(_TRAILER.pack(len(index), _MAGIC))


def compute_cmvn(feats: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Global per-bin mean and standard deviation over all frames (float64 accumulation)."""
    total = None
    squares = None
    count = 0
    for feat in feats:
        f = feat.double()
        total = f.sum(0) if total is None else total + f.sum(0)
        squares = (f * f).sum(0) if squares is None else squares + (f * f).sum(0)
        count += f.shape[0]
    if total is None or count == 0:
        raise DataError("cannot compute CMVN statistics: no feature frames")
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(1e-10).sqrt()
    return mean.float(), std.float().clamp_min(1e-5)


def apply_cmvn(feat: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalise features with statistics from `compute_cmvn`."""
    return (feat - mean) / std


class SpecAugment:
    """Frequency and time masking for training (apply to CMVN-normalised features).

    The masks are drawn from the caller's `torch.Generator`, never the global RNG, so a run's
    augmentation is reproducible from its seed and never disturbs other randomness.
    torchaudio's masking transforms cannot take a generator, hence this small implementation.
    Time-mask width adapts to the utterance: at most `time_width_ratio` of its frames.
    """

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 15,
        time_masks: int = 2,
        time_width_ratio: float = 0.05,
        mask_value: float = 0.0,
    ) -> None:
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_width_ratio = time_width_ratio
        self.mask_value = mask_value

    def _spans(self, n_masks: int, max_width: int, size: int, gen: torch.Generator):
        for _ in range(n_masks):
            limit = min(max_width, size)
            if limit <= 0:
                continue
            width = int(torch.randint(0, limit + 1, (1,), generator=gen))
            start = int(torch.randint(0, size - width + 1, (1,), generator=gen))
            yield start, width

    def draw(
        self, frames: int, bins: int, generator: torch.Generator
    ) -> list[tuple[str, int, int]]:
        """The masks for an utterance of (frames, bins): (axis, start, width) each."""
        spans = [
            ("freq", start, width)
            for start, width in self._spans(self.freq_masks, self.freq_width, bins, generator)
        ]
        max_time = int(self.time_width_ratio * frames)
        spans += [
            ("time", start, width)
            for start, width in self._spans(self.time_masks, max_time, frames, generator)
        ]
        return spans

    def apply(self, feats: torch.Tensor, spans: list[tuple[str, int, int]]) -> torch.Tensor:
        """Masked copy of `feats` (frames, bins)."""
        out = feats.clone()
        for axis, start, width in spans:
            if axis == "freq":
                out[:, start : start + width] = self.mask_value
            else:
                out[start : start + width, :] = self.mask_value
        return out

    def __call__(self, feats: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Masked copy of `feats` (frames, bins)."""
        return self.apply(feats, self.draw(*feats.shape, generator))
