"""bf16 autocast: chosen per run, refused on a GPU without it, recorded, resumable."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from runs import comparable, interrupt_at

import fambench.workloads.precision as precision_module
from fambench.errors import ConfigError
from fambench.model import ConformerCTC
from fambench.rundir import load_run
from fambench.training import plan_run, run_training
from fambench.training.plan import run_identity
from fambench.workloads import get_preset, load_workload_data
from fambench.workloads.precision import autocast, resolve_precision
from fambench.workloads.recognition import build_model, ctc_loss_sum, evaluate

CPU = torch.device("cpu")
# The bf16 tests run on any CPU: natively, or emulated (fambench.workloads.bf16_products).
NATIVE_BF16 = precision_module.has_bf16_dot_products(CPU)


def _native(monkeypatch, value: bool) -> None:
    monkeypatch.setattr(precision_module, "cpu_has_bf16_dot_products", lambda: value)


def test_the_preset_default_applies_only_where_the_cpu_multiplies_bf16(monkeypatch):
    _native(monkeypatch, True)
    assert resolve_precision(None, True, CPU) == "bf16"
    assert resolve_precision(None, False, CPU) == "fp32"
    assert resolve_precision("fp32", True, CPU) == "fp32"
    _native(monkeypatch, False)
    assert resolve_precision(None, True, CPU) == "fp32"
    assert resolve_precision("bf16", False, CPU) == "bf16"  # asked for: emulated
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    with pytest.raises(ConfigError, match="--precision bf16: this CUDA has no bf16 support"):
        resolve_precision("bf16", False, torch.device("cuda"))
    with pytest.raises(ConfigError, match="--precision must be one of fp32, bf16, got 'fp16'"):
        resolve_precision("fp16", False, CPU)


def test_fp32_adds_nothing_to_the_identity_and_bf16_changes_the_run_id(smoke, monkeypatch):
    _native(monkeypatch, True)
    fp32 = plan_run(smoke("adamw"))
    assert fp32.precision == "fp32"
    identity = run_identity(fp32.preset, "adamw", fp32.hyperparameters, fp32.request, 30, None)
    assert "precision" not in identity
    assert plan_run(smoke("adamw", precision="fp32")).run_id == fp32.run_id
    bf16 = plan_run(smoke("adamw", precision="bf16"))
    assert bf16.precision == "bf16" and bf16.run_id != fp32.run_id


def test_under_bf16_the_products_are_bf16_and_the_outputs_and_loss_fp32():
    torch.manual_seed(0)
    model = ConformerCTC(get_preset("smoke").model.replace(vocab_size=12))
    feats, lens = torch.randn(2, 60, 80), torch.tensor([60, 44])
    seen: list[torch.dtype] = []
    handle = model.head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    with autocast("bf16", CPU):
        log_probs, out_lens = model(feats, lens)
    handle.remove()
    assert seen == [torch.bfloat16]
    assert log_probs.dtype == torch.float32
    targets, target_lens = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    assert ctc_loss_sum(log_probs, out_lens, targets, target_lens).dtype == torch.float32
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and all(m.running_mean.dtype == torch.float32 for m in norms)


def test_a_bf16_run_records_its_precision_and_trains_other_numbers_than_fp32(smoke, tmp_path):
    fp32 = run_training(smoke("adamw", steps=10, out_dir=tmp_path / "a"))
    bf16 = run_training(smoke("adamw", steps=10, precision="bf16", out_dir=tmp_path / "b"))
    a, b = load_run(fp32.run_dir), load_run(bf16.run_dir)
    assert (a.summary.precision, b.summary.precision) == ("fp32", "bf16")
    assert b.config.training["precision"] == "bf16"
    assert a.config.training["bf16_native"] is b.config.training["bf16_native"] is NATIVE_BF16
    losses_a, losses_b = a.metrics["train_loss"].dropna(), b.metrics["train_loss"].dropna()
    assert len(losses_a) == len(losses_b) == 10
    assert not losses_a.equals(losses_b)
    assert (losses_a - losses_b).abs().max() < 0.1  # the same training, rounded otherwise


def test_a_bf16_run_resumes_bitwise(smoke, tmp_path):
    whole = run_training(smoke("adamw", precision="bf16", out_dir=tmp_path / "whole"))
    request = smoke("adamw", precision="bf16", out_dir=tmp_path / "split")
    assert run_training(request, progress=interrupt_at(20)).status == "interrupted"
    resumed = run_training(request)
    assert resumed.resumed and resumed.run_id == whole.run_id
    a, b = load_run(whole.run_dir), load_run(resumed.run_dir)
    pd.testing.assert_frame_equal(comparable(a.metrics), comparable(b.metrics))
    assert a.summary.final_dev_wer == b.summary.final_dev_wer


def test_a_preset_without_buckets_keeps_its_identity():
    smoke = get_preset("smoke")
    assert "length_bucket_frames" not in smoke.identity()
    bucketed = dataclasses.replace(smoke, length_bucket_frames=64)
    assert bucketed.identity()["length_bucket_frames"] == 64


def test_length_buckets_pad_batches_without_changing_what_evaluation_scores(
    synth_corpus, smoke_cache
):
    smoke = get_preset("smoke")
    plain = load_workload_data(smoke, smoke_cache, synth_corpus)
    bucketed = load_workload_data(
        dataclasses.replace(smoke, length_bucket_frames=64), smoke_cache, synth_corpus
    )
    assert all(b.feats.shape[1] % 64 == 0 for b in bucketed.dev.batches)
    assert any(b.feats.shape[1] % 64 for b in plain.dev.batches)
    torch.manual_seed(0)
    model = build_model(smoke, plain)
    a = evaluate(model, plain.dev, plain, "fp32", CPU)
    b = evaluate(model, bucketed.dev, bucketed, "fp32", CPU)
    assert (a["wer"], a["cer"]) == (b["wer"], b["cer"])
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    indices = bucketed.train_batcher(smoke.batch_frames, seed=0).batches(0)[0]
    batch = bucketed.train_batch(indices, torch.Generator().manual_seed(0))
    assert batch.feats.shape[1] == bucketed.padded_length(indices)
    assert batch.feats.shape[1] % 64 == 0


def test_a_bucketed_run_records_its_padding(smoke, tmp_path):
    plain = run_training(smoke("sgd", steps=8, out_dir=tmp_path))
    bucketed = run_training(smoke("sgd", steps=8, length_bucket_frames=64, out_dir=tmp_path))
    assert bucketed.run_id != plain.run_id
    a, b = load_run(plain.run_dir), load_run(bucketed.run_dir)
    assert b.config.training["length_bucket_frames"] == 64
    assert 0 < a.summary.padded_share < b.summary.padded_share < 0.5
    with pytest.raises(ConfigError, match="--length-bucket must be >= 0"):
        plan_run(smoke("sgd", length_bucket_frames=-1))
