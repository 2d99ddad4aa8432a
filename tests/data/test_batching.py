"""Frame-budget length buckets, seeded shuffling, CTC feasibility and collation."""

from __future__ import annotations

import pytest
import torch

from fambench.data.batching import (
    Batch,
    LengthBucketBatcher,
    collate,
    drop_infeasible,
    padded_length,
)
from fambench.data.features import FeatureCache
from fambench.data.librispeech import load_manifest
from fambench.data.tokenizer import CharTokenizer
from fambench.errors import ConfigError

LENGTHS = [((i * 37) % 500) + 50 for i in range(300)]


def quarter(frames: int) -> int:
    return frames // 4


def test_drop_infeasible_keeps_what_ctc_can_align():
    frames = [400, 100, 40, 41, 0, 200]
    tokens = [30, 25, 11, 10, 1, 0]  # 100/4=25 fits exactly; 40/4=10 < 11; no tokens: dropped
    kept, dropped = drop_infeasible(frames, tokens, quarter)
    assert kept == [0, 1, 3] and dropped == 3
    with pytest.raises(ValueError):
        drop_infeasible([1, 2], [1], quarter)


def test_batches_cover_every_utterance_once_within_the_frame_budget():
    batcher = LengthBucketBatcher(LENGTHS, max_frames=2000, seed=1)
    for epoch in range(3):
        batches = batcher.batches(epoch)
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(len(LENGTHS)))
        for batch in batches:
            assert max(LENGTHS[i] for i in batch) * len(batch) <= 2000
        # Bucketing keeps padding low: padded frames within 25% of real frames overall.
        padded = sum(max(LENGTHS[i] for i in b) * len(b) for b in batches)
        assert padded < 1.25 * sum(LENGTHS)


def test_shuffle_is_deterministic_per_seed_and_epoch():
    a = LengthBucketBatcher(LENGTHS, max_frames=2000, seed=1)
    b = LengthBucketBatcher(LENGTHS, max_frames=2000, seed=1)
    assert a.batches(0) == b.batches(0) and a.batches(5) == b.batches(5)
    assert a.batches(0) != a.batches(1)
    assert a.batches(0) != LengthBucketBatcher(LENGTHS, max_frames=2000, seed=2).batches(0)
    state = torch.get_rng_state()
    a.batches(7)
    assert torch.equal(state, torch.get_rng_state())


def test_unshuffled_batches_are_sorted_and_stable():
    batcher = LengthBucketBatcher(LENGTHS, max_frames=2000, seed=1, shuffle=False)
    batches = batcher.batches(0)
    assert batches == batcher.batches(3) and len(batcher) == len(batches)
    order = [LENGTHS[i] for b in batches for i in b]
    assert order == sorted(order)


def test_length_buckets_pad_to_few_shapes_within_the_budget():
    plain = LengthBucketBatcher(LENGTHS, max_frames=2000, seed=1)
    bucketed = LengthBucketBatcher(LENGTHS, max_frames=2000, seed=1, bucket_frames=64)
    assert LengthBucketBatcher(LENGTHS, 2000, seed=1, bucket_frames=0).batches(2) == plain.batches(
        2
    )
    batches = bucketed.batches(0)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    shapes = set()
    for batch in batches:
        padded = padded_length(max(LENGTHS[i] for i in batch), 64)
        assert padded % 64 == 0 and padded * len(batch) <= 2000
        shapes.add((len(batch), padded))
    exact = {(len(b), max(LENGTHS[i] for i in b)) for b in plain.batches(0)}
    assert len(shapes) < len(exact)
    assert [padded_length(n, 64) for n in (1, 64, 65, 128)] == [64, 64, 128, 128]
    assert padded_length(77, 0) == 77


def test_an_utterance_longer_than_the_budget_is_a_clear_error():
    with pytest.raises(ConfigError, match="max_frames=100 is below the longest utterance"):
        LengthBucketBatcher([50, 120], max_frames=100, seed=0)


def test_collate_pads_real_features_and_targets(synth_corpus, tmp_path):
    manifest = load_manifest(synth_corpus, "dev-synth").head(4)
    feats = FeatureCache(tmp_path).load(manifest)
    tok = CharTokenizer()
    ids = manifest["utt_id"].tolist()
    targets = [tok.encode(t) for t in manifest["transcript"]]
    batch = collate([feats[i] for i in ids], targets, ids)
    assert isinstance(batch, Batch) and len(batch) == 4
    longest = max(f.shape[0] for f in feats.values())
    assert batch.feats.shape == (4, longest, 80) and batch.feats.dtype == torch.float32
    assert batch.feat_lens.dtype == batch.targets.dtype == batch.target_lens.dtype == torch.int64
    assert batch.target_lens.tolist() == [len(t) for t in targets]
    for row, utt_id in enumerate(ids):
        n = feats[utt_id].shape[0]
        assert torch.equal(batch.feats[row, :n], feats[utt_id])
        assert (batch.feats[row, n:] == 0).all()
        length = batch.target_lens[row]
        assert tok.decode(batch.targets[row, :length].tolist()) == manifest["transcript"].iloc[row]
        assert (batch.targets[row, length:] == 0).all()
    assert batch.utt_ids == ids
    assert batch.to("cpu").feats.data_ptr() == batch.feats.data_ptr()
