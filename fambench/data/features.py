"""Log-mel features, their on-disk cache, global CMVN and SpecAugment.

Features are 80-bin log-mel filterbanks (25 ms Hann window, 10 ms hop, 512-point FFT, no
centring, natural log with a floor) from `torchaudio.transforms.MelSpectrogram`. A subset's
features are computed once and stored as a single ``feats-<key>.pt`` file in the cache
directory; the key hashes the manifest (ids, paths, sample counts, file sizes and mtimes) and
every feature setting, so a changed corpus or setting never reads a stale file. Values are
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
import time
from collections.abc import Iterable
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

# Bump when the computation changes, so old caches are not read.
FEATURE_VERSION = 1


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
        return self.cache_dir / f"feats-{feature_key(manifest, self.settings)}.pt"

    def load(self, manifest: pd.DataFrame) -> dict[str, torch.Tensor]:
        """utt_id -> float32 (frames, n_mels) features, computed and cached on first use.

        Always exactly what the cache file holds: freshly computed features go through the
        stored float16 form too, so a cold and a warm load return bitwise-equal tensors.
        """
        path = self.path_for(manifest)
        if path.exists():
            try:
                return _unpack(torch.load(path, map_location="cpu", weights_only=True))
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                log.warning("ignoring unreadable feature cache %s (%s); recomputing", path, exc)
        if self.cache_dir.is_dir():
            sweep_temporaries(self.cache_dir)  # what writers killed mid-write left behind
        started = time.perf_counter()
        feats = self.compute(manifest)
        log.info(
            "extracted features of %d utterances in %.1f s",
            len(feats),
            time.perf_counter() - started,
        )
        blob = _pack(feats)
        self._save(path, blob)
        return _unpack(blob)

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

    def _save(self, path: Path, blob: dict) -> None:
        """Write packed features (`_pack`) to the cache file; FileWriteError naming `path` if
        that fails (a full disk too), leaving no temporary file."""

        def writer(tmp: Path) -> None:
            # torch.save to a Python file, not a path: given a path, torch's C++ writer reports
            # a full disk only as "RuntimeError: unexpected pos ...". Through a file the OSError
            # (ENOSPC, EIO, ...) is raised, though torch may then mask it with that same
            # RuntimeError while finishing the archive; unmask it so that atomic_write turns
            # it into a FileWriteError naming the path.
            with open(tmp, "wb") as handle:
                try:
                    torch.save(blob, handle)
                except RuntimeError as exc:
                    io_error = _os_error_in_context(exc)
                    if io_error is None:
                        raise
                    raise io_error from exc

        atomic_write(path, writer)


def _os_error_in_context(exc: BaseException) -> OSError | None:
    """The OSError that `exc` was raised while handling, if any (a short context chain)."""
    seen = exc.__context__
    for _ in range(4):
        if seen is None or isinstance(seen, OSError):
            return seen
        seen = seen.__context__
    return None


# Packing goes through numpy: single-threaded copies stay fast on a busy machine, where
# OpenMP-parallel torch.cat over thousands of small tensors can stall for seconds.
def _pack(feats: dict[str, torch.Tensor]) -> dict:
    ids = list(feats)
    lengths = [int(feats[i].shape[0]) for i in ids]
    n_bins = next(iter(feats.values())).shape[1] if ids else 0
    data = np.zeros((sum(lengths), n_bins), dtype=np.float16)
    offset = 0
    for utt_id, length in zip(ids, lengths, strict=True):
        data[offset : offset + length] = feats[utt_id].numpy()
        offset += length
    return {
        "ids": ids,
        "lengths": torch.tensor(lengths, dtype=torch.int64),
        "data": torch.from_numpy(data),
    }


def _unpack(blob: dict) -> dict[str, torch.Tensor]:
    """The features of `_pack`'s blob as float32 (frames, n_mels) tensors, in stored order."""
    if not blob["ids"]:
        return {}
    data = blob["data"].float()
    return dict(zip(blob["ids"], torch.split(data, blob["lengths"].tolist()), strict=True))


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

    def __call__(self, feats: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Masked copy of `feats` (frames, bins)."""
        out = feats.clone()
        frames, bins = out.shape
        for start, width in self._spans(self.freq_masks, self.freq_width, bins, generator):
            out[:, start : start + width] = self.mask_value
        max_time = int(self.time_width_ratio * frames)
        for start, width in self._spans(self.time_masks, max_time, frames, generator):
            out[start : start + width, :] = self.mask_value
        return out
