"""Log-mel features, the feature cache, CMVN and SpecAugment on the synthetic corpus."""

from __future__ import annotations

import os

import pytest
import torch

from fambench.data.features import (
    FeatureCache,
    FeatureSettings,
    LogMel,
    SpecAugment,
    apply_cmvn,
    compute_cmvn,
    feature_key,
)
from fambench.data.librispeech import load_manifest, read_audio


@pytest.fixture(scope="module")
def dev(synth_corpus):
    return load_manifest(synth_corpus, "dev-synth")


def test_features_have_the_documented_shape(dev):
    settings = FeatureSettings()
    extract = LogMel(settings)
    for row in dev.head(5).itertuples():
        feats = extract(torch.from_numpy(read_audio(row.path)))
        assert feats.dtype == torch.float32
        assert feats.shape == (settings.num_frames(row.num_samples), 80)
        # 10 ms hop: about 100 frames per second of audio.
        assert row.duration * 100 - 4 < feats.shape[0] <= row.duration * 100
        assert torch.isfinite(feats).all()
        assert feats.min() >= torch.log(torch.tensor(settings.log_floor)) - 1e-4


def test_cache_computes_once_and_matches_direct_extraction(dev, tmp_path):
    cache = FeatureCache(tmp_path, FeatureSettings())
    first = cache.load(dev)
    path = cache.path_for(dev)
    assert path.is_file() and sorted(os.listdir(tmp_path)) == [path.name]
    stamp = path.stat().st_mtime_ns
    second = FeatureCache(tmp_path, FeatureSettings()).load(dev)
    assert path.stat().st_mtime_ns == stamp
    assert list(first) == list(second) == dev["utt_id"].tolist()
    direct = cache.compute(dev.head(3))
    for utt_id, feats in direct.items():
        assert second[utt_id].dtype == torch.float32
        assert second[utt_id].shape == feats.shape
        # float16 storage: error well under the features' spread (std ~3).
        assert (second[utt_id] - feats).abs().max() < 0.02


def test_a_changed_setting_or_manifest_never_reads_a_stale_cache(dev, tmp_path):
    base = FeatureCache(tmp_path, FeatureSettings())
    base.load(dev.head(4))
    narrow = FeatureCache(tmp_path, FeatureSettings(n_mels=40))
    assert narrow.path_for(dev.head(4)) != base.path_for(dev.head(4))
    feats = narrow.load(dev.head(4))
    assert next(iter(feats.values())).shape[1] == 40
    assert base.path_for(dev.head(3)) != base.path_for(dev.head(4))
    assert feature_key(dev.head(4), FeatureSettings(hop_ms=20.0)) != feature_key(
        dev.head(4), FeatureSettings()
    )
    assert len(list(tmp_path.glob("feats-*.pt"))) == 2


def test_rewritten_audio_changes_the_key(dev, tmp_path):
    import shutil

    row = dev.iloc[0]
    copy = tmp_path / "a.flac"
    shutil.copyfile(row["path"], copy)
    manifest = dev.head(1).assign(path=[str(copy)])
    key = feature_key(manifest, FeatureSettings())
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 1_000_000_000))
    assert feature_key(manifest, FeatureSettings()) != key


def test_cmvn_normalises_training_features(synth_corpus, tmp_path):
    train = load_manifest(synth_corpus, "train-synth")
    feats = FeatureCache(tmp_path).load(train)
    mean, std = compute_cmvn(feats.values())
    assert mean.shape == std.shape == (80,) and (std > 0).all()
    stacked = torch.cat([apply_cmvn(f, mean, std) for f in feats.values()])
    assert stacked.mean(0).abs().max() < 1e-3
    assert (stacked.std(0) - 1).abs().max() < 1e-2


def test_specaugment_is_reproducible_masks_and_leaves_the_global_rng_alone(dev, tmp_path):
    feats = FeatureCache(tmp_path).load(dev.head(2))
    x = next(iter(feats.values())) + 5.0  # no zeros before masking
    augment = SpecAugment(freq_masks=2, freq_width=15, time_masks=2, time_width_ratio=0.05)
    global_state = torch.get_rng_state()
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    c = augment(x, torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x) and (x != 0).all()  # input untouched
    masked_bins = (a == 0).all(0).sum()
    masked_frames = (a == 0).all(1).sum()
    assert 0 < masked_bins <= 30
    assert masked_frames <= 2 * int(0.05 * x.shape[0])
    kept = a != 0
    assert torch.equal(a[kept], x[kept])


def test_specaugment_across_many_draws_masks_at_the_configured_widths():
    x = torch.ones(400, 80)
    augment = SpecAugment(freq_masks=1, freq_width=10, time_masks=0)
    gen = torch.Generator().manual_seed(0)
    widths = {int((augment(x, gen) == 0).all(0).sum()) for _ in range(200)}
    assert widths == set(range(11))
