"""Workload presets and the data they materialise (on the session's tiny synthetic corpus)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from fambench.data.synth import SynthSettings
from fambench.errors import ConfigError, DataError
from fambench.model import ConformerCTC
from fambench.optim import build_optimizer, list_optimizers
from fambench.training import RunRequest, run_training
from fambench.training.plan import SCHEDULE_KEYS
from fambench.workloads import (
    DEFAULT_PRESET,
    get_preset,
    list_presets,
    load_tuned,
    load_workload_data,
    resolve_data_root,
    synth_corpus_dir,
)


def test_presets_are_listed_default_first_and_unknown_names_list_the_choices():
    names = [p.name for p in list_presets()]
    assert names[0] == DEFAULT_PRESET == "synth"
    assert {
        "smoke",
        "smoke-nodropout",
        "synth",
        "ci",
        "ci-subword",
        "ci-deep",
        "digits",
        "commands-deep",
        "commands-small",
        "mini-librispeech",
        "librispeech-100",
        "algoperf-conformer",
    } == set(names)
    with pytest.raises(ConfigError, match="choose one of: synth, smoke"):
        get_preset("tiny")


# The field's baselines are tuned on ci with the others' budget and their values transferred to
# the workloads that take ci's (benchmarks/tune_baselines.sh); elsewhere they run with their
# authors' defaults.
FIELD_BASELINES = {"nadamw", "sfadamw", "soap", "muon", "lion"}
TUNED_WITH_THE_FIELD = {"ci", "ci-deep", "ci-subword", "digits", "commands-deep", "commands-small"}


@pytest.mark.parametrize("preset", [p.name for p in list_presets()])
def test_every_preset_has_valid_tuned_values_for_every_builtin_optimizer(preset):
    p = get_preset(preset)
    tuned = load_tuned(preset)
    assert tuned.paths and tuned.source and Path(tuned.source).name.endswith(".md")
    builtin = {spec.name for spec in list_optimizers(include_plugins=False)}
    expected = builtin if preset in TUNED_WITH_THE_FIELD else builtin - FIELD_BASELINES
    assert expected <= set(tuned.optimizers)
    builtin &= set(tuned.optimizers)
    for name in builtin:
        values = tuned.for_optimizer(name)
        assert values["lr"] > 0
        schedule = {k: values.pop(k) for k in SCHEDULE_KEYS if k in values}
        assert all(0 <= v < 1 for v in schedule.values())
        build_optimizer(name, torch.nn.Linear(4, 4), **values)  # the optimizer's own checks
    assert p.eval_every <= p.steps and p.log_every <= p.eval_every
    assert p.model.d_model % p.model.n_heads == 0


def test_model_sizes_match_the_issue():
    def params(name):
        settings = get_preset(name).model.replace(vocab_size=29)
        return sum(t.numel() for t in ConformerCTC(settings).parameters())

    assert 2.0e6 < params("synth") < 2.6e6
    assert 8e6 < params("librispeech-100") < 12e6


def test_synth_corpus_directory_is_keyed_by_the_settings(tmp_path):
    a = synth_corpus_dir(tmp_path, SynthSettings(hours=0.02))
    assert a == synth_corpus_dir(tmp_path, SynthSettings(hours=0.02))
    assert a != synth_corpus_dir(tmp_path, SynthSettings(hours=0.03))
    assert a.parent == tmp_path and a.name.startswith("synth-")


def test_resolve_data_root_accepts_the_root_or_its_parent(synth_corpus, tmp_path):
    smoke = get_preset("smoke")
    assert resolve_data_root(smoke, None) is None
    assert resolve_data_root(smoke, synth_corpus) == synth_corpus.resolve()
    assert resolve_data_root(smoke, synth_corpus.parent) == synth_corpus.resolve()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        resolve_data_root(smoke, tmp_path / "file")
    with pytest.raises(ConfigError, match="--data ROOT"):
        resolve_data_root(get_preset("librispeech-100"), None)


def test_workload_data_is_normalised_feasible_and_batched(synth_corpus, tmp_path):
    preset = get_preset("smoke")
    data = load_workload_data(preset, tmp_path / "cache", synth_corpus)
    frames = torch.cat(list(data.train_feats))
    assert frames.mean().abs() < 0.05 and (frames.std() - 1).abs() < 0.1  # CMVN
    for feats, target in zip(data.train_feats, data.train_targets, strict=True):
        assert ConformerCTC.subsampled_length(feats.shape[0]) >= len(target) > 0
    assert data.info["train_utterances"] == len(data.train_feats)
    assert data.dev.utterances == 20 and data.test is not None and data.test.utterances == 20
    dev_ids = [u for b in data.dev.batches for u in b.utt_ids]
    assert len(set(dev_ids)) == 20
    assert all(
        b.feats.shape[0] * b.feats.shape[1] <= preset.eval_batch_frames for b in data.dev.batches
    )
    assert (
        data.tokenizer.decode(data.dev.batches[0].targets[0][: data.dev.batches[0].target_lens[0]])
        == (data.dev.references[0])
    )
    # SpecAugment draws from the given generator only: same generator state, same batch.
    batcher = data.train_batcher(preset.batch_frames, seed=0)
    indices = batcher.batches(0)[0]
    rng_before = torch.get_rng_state()
    a = data.train_batch(indices, torch.Generator().manual_seed(5))
    b = data.train_batch(indices, torch.Generator().manual_seed(5))
    assert torch.equal(a.feats, b.feats) and torch.equal(torch.get_rng_state(), rng_before)
    plain = torch.nn.utils.rnn.pad_sequence(
        [data.train_feats[i] for i in indices], batch_first=True
    )
    assert not torch.equal(a.feats, plain)  # masks were applied


def test_max_dev_utterances_takes_an_even_spread(synth_corpus, tmp_path):
    preset = get_preset("smoke")
    limited = dataclasses.replace(
        preset, data=dataclasses.replace(preset.data, max_dev_utterances=5)
    )
    data = load_workload_data(limited, tmp_path / "cache", synth_corpus)
    ids = sorted(u for b in data.dev.batches for u in b.utt_ids)
    assert len(ids) == 5 and ids[0].startswith("2")  # dev speakers are 2000+


def test_librispeech_preset_trains_on_a_librispeech_layout(synth_corpus, tmp_path):
    """mini-librispeech reads train-clean-5 and dev-clean-2 under --data (here: synthetic audio)."""
    root = tmp_path / "mini" / "LibriSpeech"
    root.mkdir(parents=True)
    (root / "train-clean-5").symlink_to(synth_corpus / "train-synth", target_is_directory=True)
    (root / "dev-clean-2").symlink_to(synth_corpus / "dev-synth", target_is_directory=True)
    outcome = run_training(
        RunRequest(
            optimizer="sgd",
            preset="mini-librispeech",
            data_root=tmp_path / "mini",
            steps=3,
            out_dir=tmp_path / "results",
            cache_dir=tmp_path / "cache",
            threads=1,
        )
    )
    assert outcome.status == "completed" and outcome.summary["test_wer"] is None
    assert outcome.summary["final_dev_wer"] is not None


def test_the_algoperf_preset_has_algoperfs_shape_and_targets(tmp_path):
    from fambench.workloads.data import subset_parts

    p = get_preset("algoperf-conformer")
    assert (p.model.d_model, p.model.n_layers, p.model.n_heads) == (512, 4, 8)
    assert (p.model.ffn_dim, p.model.conv_kernel, p.data.vocab_size) == (2048, 5, 1024)
    assert (p.target_wer, p.test_target_wer, p.steps) == (0.085884, 0.052981, 80_000)
    assert subset_parts(p.data.train_subset) == [
        "train-clean-100", "train-clean-360", "train-other-500",
    ]  # fmt: skip
    assert subset_parts(p.data.dev_subset) == ["dev-clean", "dev-other"]
    assert "test_target_wer" not in p.identity() and "target_wer" not in p.identity()
    (tmp_path / "LibriSpeech" / "train-clean-100").mkdir(parents=True)
    with pytest.raises(DataError, match="subset train-clean-360 not found"):
        resolve_data_root(p, tmp_path)


def test_joined_subsets_read_as_one(synth_corpus):
    from fambench.data.librispeech import load_manifest
    from fambench.workloads import DataSpec
    from fambench.workloads.data import _manifests

    spec = DataSpec(kind="librispeech", train_subset="dev-synth+test-synth", dev_subset="dev-synth")
    manifests = _manifests(spec, synth_corpus)
    dev, test = load_manifest(synth_corpus, "dev-synth"), load_manifest(synth_corpus, "test-synth")
    assert manifests["train"]["utt_id"].tolist() == dev["utt_id"].tolist() + test["utt_id"].tolist()
    assert manifests["train"].index.tolist() == list(range(len(dev) + len(test)))
