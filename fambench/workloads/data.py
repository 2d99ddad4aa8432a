"""A preset's data, ready for training: training features memory-mapped from the feature cache
(normalised as read), targets, prebuilt evaluation batches."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from fambench.data.batching import (
    Batch,
    LengthBucketBatcher,
    collate,
    drop_infeasible,
    padded_length,
)
from fambench.data.features import (
    FeatureCache,
    FeatureSettings,
    NormalisedFeatures,
    SpecAugment,
    apply_cmvn,
    compute_cmvn,
)
from fambench.data.librispeech import load_manifest
from fambench.data.synth import SynthSettings, ensure_corpus
from fambench.data.tokenizer import Tokenizer, build_tokenizer
from fambench.errors import ConfigError, DataError
from fambench.model import ConformerCTC
from fambench.workloads.presets import DataSpec, Preset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """An evaluation subset with its batches prebuilt (references in batch order)."""

    name: str
    batches: list[Batch]
    references: list[str]
    seconds: float

    @property
    def utterances(self) -> int:
        return len(self.references)


@dataclass
class WorkloadData:
    """Everything the trainer needs from the data side, computed once per run."""

    root: Path
    tokenizer: Tokenizer
    n_mels: int
    hop_s: float
    train_feats: NormalisedFeatures
    train_targets: list[list[int]]
    train_ids: list[str]
    dev: Split
    test: Split | None
    specaugment: SpecAugment | None
    info: dict[str, Any]
    bucket_frames: int = 0  # batches are padded to a multiple of this (the preset's)

    def train_batcher(self, max_frames: int, seed: int) -> LengthBucketBatcher:
        """Length-bucketed training batches, shuffled per epoch from seed."""
        lengths = self.train_feats.lengths
        return LengthBucketBatcher(
            lengths,
            max_frames=max_frames,
            seed=seed,
            shuffle=True,
            bucket_frames=self.bucket_frames,
        )

    def train_batch(
        self, indices: list[int], generator: torch.Generator, share: list[int] | None = None
    ) -> Batch:
        """Collate training utterances, SpecAugment drawn from generator (never the global RNG).

        ``share``: the utterances of the batch this data-parallel rank trains on (default: all).
        SpecAugment is drawn for every utterance of the batch and the share is padded to the
        batch's longest, so a rank's input is its rows of what one process would train on.
        """
        share = indices if share is None else share
        kept = set(share)
        feats = {i: self.train_feats[i] for i in share}
        if self.specaugment is not None:
            for i in indices:
                spans = self.specaugment.draw(self.train_feats.frames(i), self.n_mels, generator)
                if i in kept:
                    feats[i] = self.specaugment.apply(feats[i], spans)
        return collate(
            [feats[i] for i in share],
            [self.train_targets[i] for i in share],
            [self.train_ids[i] for i in share],
            pad_to=self.padded_length(indices),
        )

    def clean_batches(self, max_frames: int, count: int, seed: int) -> list[Batch]:
        """The first ``count`` training batches of epoch 0 of a batcher seeded ``seed``, without
        SpecAugment: a fixed sample of the training data that draws no random numbers and
        leaves every run's own data position alone."""
        chosen = self.train_batcher(max_frames, seed).batches(0)[:count]
        return [
            collate(
                [self.train_feats[i] for i in indices],
                [self.train_targets[i] for i in indices],
                [self.train_ids[i] for i in indices],
                pad_to=self.padded_length(indices),
            )
            for indices in chosen
        ]

    def padded_length(self, indices: list[int]) -> int:
        """The frames the batch of training utterances `indices` is padded to."""
        longest = max(self.train_feats.frames(i) for i in indices)
        return padded_length(longest, self.bucket_frames)

    def frames_and_tokens(self, indices: list[int]) -> tuple[int, int]:
        """Feature frames and target tokens of the training utterances `indices`, summed."""
        return (
            sum(self.train_feats.frames(i) for i in indices),
            sum(len(self.train_targets[i]) for i in indices),
        )

    def describe(self) -> dict[str, Any]:
        """What config.json records about the data."""
        return dict(self.info)


def synth_settings(spec: DataSpec) -> SynthSettings:
    """The corpus settings of a synth preset."""
    return SynthSettings(
        hours=spec.synth_hours,
        dev_utterances=spec.synth_dev_utterances,
        test_utterances=spec.synth_test_utterances,
        seed=spec.synth_seed,
        text=spec.synth_text,
        min_words=spec.synth_words[0],
        max_words=spec.synth_words[1],
        vocabulary=spec.synth_vocabulary,
        train_speakers=spec.synth_train_speakers,
        snr_db=spec.synth_snr_db,
        rate_wpm=spec.synth_rate_wpm,
    )


def synth_corpus_dir(cache_dir: Path, settings: SynthSettings) -> Path:
    """Where a synth corpus lives in the cache: ``<cache>/synth-<hash of its settings>``."""
    text = json.dumps(settings.to_json(), sort_keys=True)
    return Path(cache_dir) / f"synth-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def resolve_data_root(preset: Preset, data_root: Path | None) -> Path | None:
    """Check --data before anything is written; returns the LibriSpeech root or None (synth).

    ROOT may be the LibriSpeech directory itself or its parent. A synth preset accepts a root
    holding an already generated corpus (its synth subsets).
    """
    spec = preset.data
    if data_root is None:
        if spec.kind == "librispeech":
            raise ConfigError(
                f"preset {preset.name} reads LibriSpeech: give its root with --data ROOT "
                f"(holding {spec.train_subset} and {spec.dev_subset})"
            )
        return None
    root = Path(data_root).expanduser()
    if not root.exists():
        raise DataError(f"--data {root}: no such directory")
    if not root.is_dir():
        raise DataError(f"--data {root}: not a directory")
    if (root / "LibriSpeech").is_dir():
        root = root / "LibriSpeech"
    for subset in (spec.train_subset, spec.dev_subset, spec.test_subset):
        for part in subset_parts(subset):
            if not (root / part).is_dir():
                raise DataError(
                    f"--data {root}: subset {part} not found (expected the directory {root / part})"
                )
    return root.resolve()


def subset_parts(subset: str | None) -> list[str]:
    """``"train-clean-100+train-clean-360"`` → its LibriSpeech subsets ([] for None)."""
    return [part for part in (subset or "").split("+") if part]


def _evenly_spaced(n_total: int, n_keep: int | None) -> list[int]:
    if n_keep is None or n_keep >= n_total:
        return list(range(n_total))
    return sorted({round(i * (n_total - 1) / max(n_keep - 1, 1)) for i in range(n_keep)})


def _eval_split(
    name: str,
    feats: list[torch.Tensor],
    texts: list[str],
    ids: list[str],
    tokenizer: Tokenizer,
    max_frames: int,
    hop_s: float,
    bucket_frames: int,
) -> Split:
    lengths = [int(f.shape[0]) for f in feats]
    longest = padded_length(max(lengths), bucket_frames)
    batcher = LengthBucketBatcher(
        lengths, max_frames=max(max_frames, longest), shuffle=False, bucket_frames=bucket_frames
    )
    batches, references = [], []
    for indices in batcher.batches(0):
        batches.append(
            collate(
                [feats[i] for i in indices],
                [tokenizer.encode(texts[i]) for i in indices],
                [ids[i] for i in indices],
                pad_to=padded_length(max(lengths[i] for i in indices), bucket_frames),
            )
        )
        references.extend(texts[i] for i in indices)
    return Split(name, batches, references, seconds=sum(lengths) * hop_s)


def _corpus_root(
    preset: Preset, cache_dir: Path, data_root: Path | None, say: Callable[[str], None]
) -> tuple[Path, dict[str, Any]]:
    """The LibriSpeech-layout root to read (the synth corpus generated on first use)."""
    spec = preset.data
    info: dict[str, Any] = {"kind": spec.kind}
    if data_root is None:
        if spec.kind != "synth":
            raise ConfigError(f"preset {preset.name} needs --data ROOT")
        settings = synth_settings(spec)
        corpus_dir = synth_corpus_dir(cache_dir, settings)
        if not (corpus_dir / "LibriSpeech").is_dir():
            say(
                f"generating the synthetic corpus ({spec.synth_hours:g} h) in {corpus_dir} "
                "(first use only)"
            )
        root = ensure_corpus(corpus_dir, settings)
        info["synth"] = settings.to_json()
    else:
        root = Path(data_root)
    info["root"] = str(root)
    return root, info


def _manifests(spec: DataSpec, root: Path) -> dict[str, Any]:
    """Manifest per role (train, dev, test when the preset has one); dev thinned if asked."""
    subsets = {"train": spec.train_subset, "dev": spec.dev_subset, "test": spec.test_subset}
    manifests = {
        role: pd.concat(
            [
                load_manifest(root, part, skip_bad=(role == "train"))
                for part in subset_parts(subset)
            ],
            ignore_index=True,
        )
        for role, subset in subsets.items()
        if subset is not None
    }
    if spec.max_dev_utterances is not None:
        dev = manifests["dev"]
        manifests["dev"] = dev.iloc[_evenly_spaced(len(dev), spec.max_dev_utterances)]
    return manifests


def _specaugment(preset: Preset) -> SpecAugment | None:
    aug = preset.specaugment
    if aug is None:
        return None
    return SpecAugment(aug.freq_masks, aug.freq_width, aug.time_masks, aug.time_width_ratio)


def _feasible(
    feats: NormalisedFeatures, targets: list[list[int]], where: Path
) -> tuple[list[int], int]:
    """Indices of the training utterances CTC can align, and how many were dropped."""
    kept, dropped = drop_infeasible(
        feats.lengths.tolist(), [len(t) for t in targets], ConformerCTC.subsampled_length
    )
    if dropped:
        log.warning(
            "dropped %d of %d training utterances too short for their transcripts",
            dropped,
            len(feats),
        )
    if not kept:
        raise DataError(f"{where}: no training utterance is usable by CTC")
    return kept, dropped


def load_workload_data(
    preset: Preset,
    cache_dir: Path,
    data_root: Path | None = None,
    log_message: Callable[[str], None] | None = None,
) -> WorkloadData:
    """Materialise a preset's data: corpus (generated on first use), manifests, tokenizer,
    CMVN-normalised features in memory, feasible training utterances, dev/test batches.

    Generated corpora and feature caches live under cache_dir; nothing is written elsewhere
    (except the manifest cache the LibriSpeech reader keeps beside each subset).
    """
    say = log_message or log.info
    spec = preset.data
    cache_dir = Path(cache_dir)
    root, info = _corpus_root(preset, cache_dir, data_root, say)
    manifests = _manifests(spec, root)

    feature_settings = FeatureSettings(n_mels=preset.model.n_mels)
    hop_s = feature_settings.hop_ms / 1000.0
    cache = FeatureCache(cache_dir / "features", feature_settings)
    say("loading features (computed once, then cached)")
    feats = {role: cache.load(manifest) for role, manifest in manifests.items()}

    train = manifests["train"]
    train_texts = train["transcript"].tolist()
    tokenizer = build_tokenizer(spec.tokenizer, train_texts, spec.vocab_size or 256)
    mean, std = compute_cmvn(feats["train"][u] for u in train["utt_id"])

    def normalised(role: str) -> list[torch.Tensor]:
        return [apply_cmvn(feats[role][u], mean, std) for u in manifests[role]["utt_id"]]

    # The stores hold the manifests' utterances in manifest order.
    train_feats = NormalisedFeatures(feats["train"], range(len(train)), mean, std)
    train_targets = [tokenizer.encode(t) for t in train_texts]
    kept, dropped = _feasible(train_feats, train_targets, root / spec.train_subset)
    train_ids = train["utt_id"].tolist()
    eval_splits = {
        role: _eval_split(
            getattr(spec, f"{role}_subset"),
            normalised(role),
            manifests[role]["transcript"].tolist(),
            manifests[role]["utt_id"].tolist(),
            tokenizer,
            preset.eval_batch_frames,
            hop_s,
            preset.length_bucket_frames,
        )
        for role in ("dev", "test")
        if role in manifests
    }
    train_seconds = sum(train_feats.frames(i) for i in kept) * hop_s
    info.update(
        {
            "train_subset": spec.train_subset,
            "dev_subset": spec.dev_subset,
            "test_subset": spec.test_subset,
            "train_utterances": len(kept),
            "train_dropped": dropped,
            "train_hours": round(train_seconds / 3600, 4),
            "dev_utterances": eval_splits["dev"].utterances,
            "dev_hours": round(eval_splits["dev"].seconds / 3600, 4),
            "test_utterances": eval_splits["test"].utterances if "test" in eval_splits else None,
            "tokenizer": tokenizer.to_json(),
            "features": dataclasses.asdict(feature_settings),
        }
    )
    return WorkloadData(
        root=root,
        tokenizer=tokenizer,
        n_mels=feature_settings.n_mels,
        hop_s=hop_s,
        train_feats=train_feats.subset(kept),
        train_targets=[train_targets[i] for i in kept],
        train_ids=[train_ids[i] for i in kept],
        dev=eval_splits["dev"],
        test=eval_splits.get("test"),
        specaugment=_specaugment(preset),
        info=info,
        bucket_frames=preset.length_bucket_frames,
    )
