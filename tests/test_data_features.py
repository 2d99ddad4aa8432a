"""Log-mel features, the feature cache, CMVN and SpecAugment on the synthetic corpus."""

from __future__ import annotations

import builtins
import errno
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
from fambench.errors import FileWriteError


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


def test_an_unwritable_cache_directory_is_a_file_write_error_naming_the_file(dev, tmp_path):
    # A regular file where the cache directory should be: mkdir fails, even for root.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    cache = FeatureCache(blocker / "cache", FeatureSettings())
    with pytest.raises(FileWriteError) as caught:
        cache.load(dev.head(2))
    message = str(caught.value)
    assert message.startswith(f"cannot write {cache.path_for(dev.head(2))}:")
    assert "\n" not in message
    assert sorted(os.listdir(tmp_path)) == ["blocker"]


def test_a_full_disk_while_saving_raises_and_leaves_no_partial_file(dev, tmp_path, monkeypatch):
    import fambench.data.features as features_module

    class FullDisk:
        """A file that takes 1000 bytes, then fails like a full disk (ENOSPC)."""

        def __init__(self, path, mode):
            self._file = builtins.open(path, mode)
            self.written = 0

        def write(self, data):
            size = memoryview(data).nbytes
            if self.written + size > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += size
            return self._file.write(data)

        def flush(self):
            self._file.flush()

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self._file.close()

    opened = []

    def full_disk_open(path, mode="r", *args, **kwargs):
        opened.append(path)
        return FullDisk(path, mode)

    monkeypatch.setattr(features_module, "open", full_disk_open, raising=False)
    cache = FeatureCache(tmp_path, FeatureSettings())
    path = cache.path_for(dev.head(2))
    with pytest.raises(FileWriteError) as caught:
        cache.load(dev.head(2))
    assert str(caught.value) == f"cannot write {path}: {os.strerror(errno.ENOSPC)}"
    assert len(opened) == 1 and opened[0].name.endswith(".tmp")  # it did write a partial file
    assert os.listdir(tmp_path) == []  # ... and removed it

    monkeypatch.undo()  # disk space again: the next load writes a complete, readable cache
    feats = FeatureCache(tmp_path, FeatureSettings()).load(dev.head(2))
    assert os.listdir(tmp_path) == [path.name]
    reread = FeatureCache(tmp_path, FeatureSettings()).load(dev.head(2))
    assert list(reread) == list(feats) == dev.head(2)["utt_id"].tolist()
    assert all((reread[k] - feats[k]).abs().max() < 0.02 for k in feats)  # float16 storage


def test_a_failed_rename_leaves_no_temp_file(dev, tmp_path):
    cache = FeatureCache(tmp_path, FeatureSettings())
    path = cache.path_for(dev.head(2))
    path.mkdir()  # the cache file's name is taken by a directory: the rename fails
    with pytest.raises(FileWriteError, match=f"cannot write {path}"):
        cache.load(dev.head(2))
    assert os.listdir(tmp_path) == [path.name] and path.is_dir()
    assert os.listdir(path) == []


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
