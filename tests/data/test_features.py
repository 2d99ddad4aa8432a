"""Log-mel features, the feature cache, CMVN and SpecAugment on the synthetic corpus."""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fambench.data.features import (
    FeatureCache,
    FeatureSettings,
    FeatureStore,
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


def test_a_cold_and_a_warm_load_return_bitwise_equal_features(dev, tmp_path):
    """One feature path: the run that computes the cache gets exactly what later runs read."""
    settings = FeatureSettings()
    cache = FeatureCache(tmp_path, settings)
    cold = cache.load(dev)  # computes and writes the cache
    path = cache.path_for(dev)
    assert os.listdir(tmp_path) == [path.name]
    warm = FeatureCache(tmp_path, settings).load(dev)  # reads it back
    assert list(cold) == list(warm) == dev["utt_id"].tolist()
    direct = cache.compute(dev)
    for row in dev.itertuples():
        c, w = cold[row.utt_id], warm[row.utt_id]
        assert c.dtype == w.dtype == torch.float32
        assert c.shape == w.shape == (settings.num_frames(row.num_samples), 80)
        assert torch.equal(c, w)
        # The stored float16 values (not the float32 computation), on the cold load too.
        assert torch.equal(c, direct[row.utt_id].half().float())
        assert not torch.equal(c, direct[row.utt_id])
    store = FeatureStore.open(path)  # float16 frames back to back, memory-mapped
    assert isinstance(store.data, np.memmap) and store.data.dtype == np.float16
    assert store.ids == dev["utt_id"].tolist()
    assert store.lengths.tolist() == [cold[u].shape[0] for u in store.ids]
    assert torch.equal(
        torch.cat([cold[u] for u in store.ids]), torch.from_numpy(np.array(store.data)).float()
    )
    assert path.stat().st_size > store.data.nbytes  # + the index and its trailer


def test_a_truncated_or_foreign_feature_file_is_recomputed(dev, tmp_path):
    cache = FeatureCache(tmp_path, FeatureSettings())
    good = cache.load(dev.head(3))
    path = cache.path_for(dev.head(3))
    for damage in (path.read_bytes()[:-5], b"not features at all"):
        path.write_bytes(damage)
        again = FeatureCache(tmp_path, FeatureSettings()).load(dev.head(3))
        assert all(torch.equal(again[u], good[u]) for u in good)
        assert FeatureStore.open(path).ids == list(good)


def test_an_empty_manifest_loads_as_no_features_cold_and_warm(dev, tmp_path):
    empty = dev.head(0)
    assert FeatureCache(tmp_path).load(empty) == {}
    assert os.listdir(tmp_path) == [FeatureCache(tmp_path).path_for(empty).name]
    assert FeatureCache(tmp_path).load(empty) == {}


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
    assert len(list(tmp_path.glob("feats-*.f16"))) == 2


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


class FullDisk:
    """A file that takes `room` bytes, then fails like a full disk (ENOSPC)."""

    def __init__(self, path, mode, room):
        self._file = builtins.open(path, mode)
        self.written = 0
        self.room = room

    def write(self, data):
        size = memoryview(data).nbytes
        if self.written + size > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += size
        return self._file.write(data)

    def flush(self):
        self._file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._file.close()


def _fill_disk(monkeypatch, room: int) -> list[Path]:
    """Make the feature cache's file writes fail after `room` bytes; returns the files opened."""
    import fambench.data.features as features_module

    opened = []

    def full_disk_open(path, mode="r", *args, **kwargs):
        opened.append(Path(path))
        return FullDisk(path, mode, room)

    monkeypatch.setattr(features_module, "open", full_disk_open, raising=False)
    return opened


def test_a_full_disk_while_saving_raises_and_leaves_no_partial_file(dev, tmp_path, monkeypatch):
    opened = _fill_disk(monkeypatch, 1000)
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
    assert all(torch.equal(reread[k], feats[k]) for k in feats)


@pytest.mark.parametrize("room", [0, 1000, 20_000])
def test_after_a_full_disk_no_temporary_is_left_and_the_next_load_is_a_fresh_computation(
    dev, tmp_path, monkeypatch, room
):
    manifest = dev.head(6)
    cache_dir = tmp_path / "cache"
    opened = _fill_disk(monkeypatch, room)
    path = FeatureCache(cache_dir).path_for(manifest)
    with pytest.raises(FileWriteError) as caught:
        FeatureCache(cache_dir).load(manifest)
    assert str(caught.value) == f"cannot write {path}: {os.strerror(errno.ENOSPC)}"
    (tmp,) = opened
    assert tmp.parent == cache_dir and tmp.name.startswith(f".{path.name}.")
    assert tmp.name.endswith(".tmp")
    assert os.listdir(cache_dir) == []  # no partial feats file, no hidden temporary

    monkeypatch.undo()  # space again
    later = FeatureCache(cache_dir).load(manifest)
    assert os.listdir(cache_dir) == [path.name]
    fresh = FeatureCache(tmp_path / "fresh").load(manifest)  # a cold load elsewhere
    direct = FeatureCache(cache_dir).compute(manifest)
    assert list(later) == list(fresh) == manifest["utt_id"].tolist()
    for utt_id, feats in later.items():
        assert torch.equal(feats, fresh[utt_id])
        assert torch.equal(feats, direct[utt_id].half().float())  # the stored float16 values
    assert path.read_bytes() == FeatureCache(tmp_path / "fresh").path_for(manifest).read_bytes()


def test_a_real_write_limit_while_saving_is_a_file_write_error_and_leaves_nothing(dev, tmp_path):
    """The kernel refuses the write (RLIMIT_FSIZE: EFBIG), through the real writer."""
    import resource
    import signal

    manifest = dev.head(4)
    cache = FeatureCache(tmp_path, FeatureSettings())
    path = cache.path_for(manifest)
    feats = cache.compute(manifest)  # before the limit: the extraction's own files stay free
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, old_limit[1]))
    try:
        with pytest.raises(FileWriteError) as caught:
            cache.load(manifest)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert str(caught.value) == f"cannot write {path}: {os.strerror(errno.EFBIG)}"
    assert os.listdir(tmp_path) == []
    loaded = cache.load(manifest)
    assert all(torch.equal(loaded[k], feats[k].half().float()) for k in feats)


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
    x = next(iter(feats.values())).abs() + 1.0  # no zeros before masking
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
