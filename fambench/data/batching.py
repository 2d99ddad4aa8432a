"""Length-bucketed batches capped by padded frames, CTC feasibility filtering and collation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fambench.errors import ConfigError


def drop_infeasible(
    frames: Sequence[int], token_counts: Sequence[int], subsampled: Callable[[int], int]
) -> tuple[list[int], int]:
    """Indices of utterances CTC can align, and how many were dropped.

    An utterance is infeasible when the model's output length, ``subsampled(frames)``, is below
    its token count (the CTC loss would be infinite), or when it has no tokens at all.
    """
    if len(frames) != len(token_counts):
        raise ValueError(f"{len(frames)} frame counts but {len(token_counts)} token counts")
    kept = [
        i
        for i, (f, n) in enumerate(zip(frames, token_counts, strict=True))
        if n > 0 and subsampled(int(f)) >= n
    ]
    return kept, len(frames) - len(kept)


def padded_length(frames: int, bucket_frames: int) -> int:
    """``frames`` rounded up to a multiple of ``bucket_frames`` (unchanged for 0)."""
    if bucket_frames <= 0:
        return int(frames)
    return -(-int(frames) // bucket_frames) * bucket_frames


class LengthBucketBatcher:
    """Groups utterances of similar length into batches of at most `max_frames` padded frames.

    Each epoch's batches come from a generator seeded by (seed, epoch): lengths are sorted with
    a small random jitter (so batch membership varies between epochs) and the batch order is
    shuffled. With ``shuffle=False`` the batches are the plain sorted packing, for evaluation.
    A batch is padded to its longest utterance rounded up to a multiple of ``bucket_frames``
    (`padded_length`), and every batch satisfies ``padded length * len(batch) <= max_frames``.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_frames: int,
        seed: int = 0,
        shuffle: bool = True,
        jitter: float = 0.1,
        bucket_frames: int = 0,
    ) -> None:
        if bucket_frames < 0:
            raise ConfigError(f"length_bucket_frames must be >= 0, got {bucket_frames}")
        self.bucket_frames = int(bucket_frames)
        raw = np.asarray(lengths, dtype=np.int64)
        if raw.ndim != 1 or raw.size == 0:
            raise ConfigError("cannot batch an empty set of utterances")
        self.lengths = raw
        self.padded = -(-raw // self.bucket_frames) * self.bucket_frames if bucket_frames else raw
        longest = int(self.padded.max())
        if max_frames < longest:
            raise ConfigError(
                f"max_frames={max_frames} is below the longest utterance ({longest} frames"
                f"{', padded' if self.bucket_frames else ''}); "
                "raise the frame budget or drop long utterances"
            )
        self.max_frames = int(max_frames)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.jitter = float(jitter)

    def __len__(self) -> int:
        """Batches in an unshuffled epoch (shuffled epochs differ by a few at most)."""
        return len(self._pack(np.argsort(self.lengths, kind="stable")))

    def _pack(self, order: np.ndarray) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for index in order.tolist():
            length = int(self.padded[index])
            if current and max(longest, length) * (len(current) + 1) > self.max_frames:
                batches.append(current)
                current, longest = [], 0
            current.append(index)
            longest = max(longest, length)
        if current:
            batches.append(current)
        return batches

    def batches(self, epoch: int = 0) -> list[list[int]]:
        """The batches (lists of utterance indices) for `epoch`; deterministic per (seed, epoch)."""
        if not self.shuffle:
            return self._pack(np.argsort(self.lengths, kind="stable"))
        rng = np.random.default_rng([self.seed, int(epoch)])
        noisy = self.lengths * (1.0 + rng.uniform(-self.jitter, self.jitter, self.lengths.size))
        batches = self._pack(np.argsort(noisy, kind="stable"))
        return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class Batch:
    """A padded batch: features (B, T, F), targets (B, L) padded with 0 (the blank id)."""

    feats: torch.Tensor
    feat_lens: torch.Tensor
    targets: torch.Tensor
    target_lens: torch.Tensor
    utt_ids: list[str]
    audio_frames: int = 0  # sum of feat_lens, known on the host without reading a tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch on `device`."""
        return Batch(
            self.feats.to(device, non_blocking=non_blocking),
            self.feat_lens.to(device, non_blocking=non_blocking),
            self.targets.to(device, non_blocking=non_blocking),
            self.target_lens.to(device, non_blocking=non_blocking),
            self.utt_ids,
            self.audio_frames,
        )

    def pin_memory(self) -> Batch:
        """The batch in page-locked host memory (a copy to a GPU from it need not wait)."""
        return Batch(
            self.feats.pin_memory(),
            self.feat_lens.pin_memory(),
            self.targets.pin_memory(),
            self.target_lens.pin_memory(),
            self.utt_ids,
            self.audio_frames,
        )

    def __len__(self) -> int:
        return len(self.utt_ids)


def collate(
    feats: Sequence[torch.Tensor],
    targets: Sequence[Sequence[int]],
    ids: Sequence[str],
    pad_to: int = 0,
) -> Batch:
    """Pad a list of (T, F) features and token lists into a `Batch` of at least `pad_to`
    frames (a data-parallel rank pads its share to the whole batch's longest utterance)."""
    if not (len(feats) == len(targets) == len(ids)) or not feats:
        raise ValueError(
            f"collate needs equal, non-zero numbers of features ({len(feats)}), "
            f"targets ({len(targets)}) and ids ({len(ids)})"
        )
    frames = [int(f.shape[0]) for f in feats]
    lengths = [len(t) for t in targets]
    feat_lens = torch.tensor(frames, dtype=torch.int64)
    target_lens = torch.tensor(lengths, dtype=torch.int64)
    n_bins = feats[0].shape[1]
    padded = torch.zeros(len(feats), max(max(frames), pad_to), n_bins, dtype=torch.float32)
    for i, f in enumerate(feats):
        padded[i, : f.shape[0]] = f
    tokens = torch.zeros(len(targets), max(1, max(lengths)), dtype=torch.int64)
    for i, t in enumerate(targets):
        if len(t):
            tokens[i, : len(t)] = torch.as_tensor(list(t), dtype=torch.int64)
    return Batch(padded, feat_lens, tokens, target_lens, list(ids), sum(frames))
