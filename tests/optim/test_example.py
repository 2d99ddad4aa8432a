"""The specification's usage example runs verbatim, with a torchaudio Conformer, silently."""

from __future__ import annotations

import logging

import pytest
import torch
import torchaudio


def test_usage_example_runs_verbatim_and_prints_nothing(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)  # debug=True writes under ./fam_debug
    caplog.set_level(logging.INFO)
    torch.manual_seed(0)
    model = torchaudio.models.Conformer(
        input_dim=32, num_heads=4, ffn_dim=64, num_layers=2, depthwise_conv_kernel_size=31
    )
    from fambench.optim import FAMOptimizer, FAMScheduler2, get_parameter_groups

    # --- verbatim from the specification -------------------------------------------------
    param_groups = get_parameter_groups(model=model, lr=0.001, weight_decay=1e-6)

    optimizer = FAMOptimizer(
        params=param_groups,
        beta=0.99,
        n_bands=10,
        fam_start_step=100,
        layer_boost=True,
        min_size=128,
        debug=True,
        weight_decay=0.0025,
        lr=0.001,
    )

    scheduler = FAMScheduler2(
        optimizer=optimizer, warmup_steps=100, total_steps=10000, decay_start_step=100
    )
    # ---------------------------------------------------------------------------------------

    features = torch.randn(2, 40, 32)
    lengths = torch.tensor([40, 31])
    for _ in range(3):
        optimizer.zero_grad()
        output, _ = model(features, lengths)
        output.pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
    optimizer.close()

    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]
    # Groups keep their own weight decay; the constructor's fills only what groups lack.
    assert {g["weight_decay"] for g in optimizer.param_groups} == {1e-6, 0.0}
    assert {g["min_size"] for g in optimizer.param_groups} == {128}
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001 * 3 / 100 + 1e-6 * 97 / 100)
