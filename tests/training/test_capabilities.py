"""The trainer honours what an optimizer declares or has, for built-ins and plug-ins alike:
evaluation modes switched around every evaluation, batch-norm statistics re-estimated at the
evaluation weights without touching the run's data or random numbers, the schedule it wants."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest
import torch
from runs import comparable, interrupt_at

from fambench.rundir import RunFiles, load_run
from fambench.training import run_training

_PLUGINS = textwrap.dedent(
    """
    import torch

    CALLS = []

    class Moded(torch.optim.SGD):
        \"\"\"SGD with train/eval modes that record when the trainer calls them.\"\"\"

        def __init__(self, params, lr=0.05):
            super().__init__(params, lr=lr, momentum=0.9)
            self.mode = "eval"

        def train(self):
            CALLS.append(("train", id(self)))
            self.mode = "train"

        def eval(self):
            CALLS.append(("eval", id(self)))
            self.mode = "eval"

        def step(self, closure=None):
            assert self.mode == "train", "stepped outside training mode"
            CALLS.append(("step", id(self)))
            return super().step(closure)

    class Renormed(torch.optim.SGD):
        \"\"\"Plain SGD that asks for batch-norm statistics at its (unchanged) weights.\"\"\"

        fambench_capabilities = {"norm_batches": 3}

        def __init__(self, params, lr=0.05, momentum=0.9):
            super().__init__(params, lr=lr, momentum=momentum)

    class Plain(torch.optim.SGD):
        def __init__(self, params, lr=0.05, momentum=0.9):
            super().__init__(params, lr=lr, momentum=momentum)
    """
)


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "capability_plugins.py").write_text(_PLUGINS)
    monkeypatch.syspath_prepend(str(folder))
    import importlib

    import capability_plugins

    importlib.reload(capability_plugins)
    return capability_plugins


def _train_rows(run_dir) -> pd.DataFrame:
    metrics = load_run(run_dir).metrics
    return metrics[metrics["train_loss"].notna()].reset_index(drop=True)


def test_an_optimizer_with_modes_is_switched_around_every_evaluation(smoke, plugins):
    outcome = run_training(smoke("capability_plugins:Moded"))
    assert outcome.status == "completed"
    stepped = {who for what, who in plugins.CALLS if what == "step"}
    (trained,) = [who for who in stepped if sum(c == ("step", who) for c in plugins.CALLS) == 30]
    calls = [what for what, who in plugins.CALLS if who == trained]
    steps = ["step"] * 15
    # train() before the first step; eval() ... train() around the evaluations at steps 15 and
    # 30 and the test set's.
    assert calls == ["train", *steps, "eval", "train", *steps, "eval", "train", "eval", "train"]


def test_norm_statistics_are_re_estimated_without_touching_training(smoke, plugins):
    plain = run_training(smoke("capability_plugins:Plain"))
    renormed = run_training(smoke("capability_plugins:Renormed"))
    assert plain.status == renormed.status == "completed"
    # Training is bitwise the same: no data position, SpecAugment or dropout draw was taken.
    a, b = _train_rows(plain.run_dir), _train_rows(renormed.run_dir)
    pd.testing.assert_frame_equal(
        a[["step", "train_loss", "lr", "grad_norm"]], b[["step", "train_loss", "lr", "grad_norm"]]
    )
    # Evaluated at other batch-norm statistics: other dev losses.
    dev = [load_run(r.run_dir).metrics["dev_loss"].dropna().tolist() for r in (plain, renormed)]
    assert len(dev[0]) == len(dev[1]) == 2 and dev[0] != dev[1]
    # The checkpoint continues from the training state; the evaluated one is kept beside it.
    ca = torch.load(RunFiles(plain.run_dir).checkpoint, weights_only=False)
    cb = torch.load(RunFiles(renormed.run_dir).checkpoint, weights_only=False)
    assert "evaluation_model" not in ca
    for name, tensor in ca["model"].items():
        assert torch.equal(tensor, cb["model"][name]), name
    means = [k for k in cb["evaluation_model"] if k.endswith("running_mean")]
    assert means and all(not torch.equal(cb["evaluation_model"][k], cb["model"][k]) for k in means)
    weights = [k for k in cb["model"] if k.endswith("weight")]
    assert all(torch.equal(cb["evaluation_model"][k], cb["model"][k]) for k in weights)
    config = load_run(renormed.run_dir).config
    assert config.optimizer_capabilities == {"schedule": "warmup-hold-cosine", "norm_batches": 3}


def test_schedule_free_adamw_trains_warmup_only_and_keeps_its_evaluation_weights(smoke):
    outcome = run_training(smoke("sfadamw"))
    assert outcome.status == "completed"
    run = load_run(outcome.run_dir)
    rows = _train_rows(outcome.run_dir)
    lrs = rows["lr"].to_numpy()
    warmup = run.config.schedule["warmup_steps"]
    assert lrs[0] < lrs[warmup] and (lrs[warmup:] == lrs.max()).all()  # no decay
    assert run.config.schedule["shape"] == "warmup-only"
    assert run.config.schedule["final_factor"] == 1.0
    assert run.config.provenance["optimizer_source"].startswith("schedulefree ")
    assert rows["train_loss"].iloc[-5:].mean() < rows["train_loss"].iloc[:5].mean() - 0.3
    checkpoint = torch.load(RunFiles(outcome.run_dir).checkpoint, weights_only=False)
    assert all(g["train_mode"] for g in checkpoint["optimizer"]["param_groups"])
    evaluated, trained = checkpoint["evaluation_model"], checkpoint["model"]
    moved = [
        k for k in trained if k.endswith("weight") and not torch.equal(evaluated[k], trained[k])
    ]
    assert moved  # evaluated at the average, not at the point it trains at


@pytest.mark.parametrize("optimizer", ["sfadamw", "muon"])
def test_a_baseline_resumed_after_an_interruption_equals_an_uninterrupted_run(
    smoke, tmp_path, optimizer
):
    whole = run_training(smoke(optimizer, out_dir=tmp_path / "whole"))
    request = smoke(optimizer, out_dir=tmp_path / "split")
    first = run_training(request, progress=interrupt_at(22))  # after the step-15 evaluation
    assert first.status == "interrupted"
    second = run_training(request)
    assert second.status == "completed" and second.resumed
    a, b = load_run(whole.run_dir), load_run(second.run_dir)
    pd.testing.assert_frame_equal(comparable(a.metrics), comparable(b.metrics))
    ca = torch.load(RunFiles(whole.run_dir).checkpoint, weights_only=False)
    cb = torch.load(RunFiles(second.run_dir).checkpoint, weights_only=False)
    for part in ("model", "evaluation_model"):
        for name, tensor in ca.get(part, {}).items():
            assert torch.equal(tensor, cb[part][name]), (part, name)


def _evaluated_by_hand(run_dir, optimizer: str, synth_corpus, smoke_cache) -> dict[str, float]:
    """The dev set scored from the run's last checkpoint, by hand: the optimizer's eval(),
    batch-norm statistics re-estimated as declared, then the workload's evaluation."""
    from fambench.optim import build_optimizer, has_evaluation_modes
    from fambench.workloads import get_preset, load_workload_data
    from fambench.workloads.recognition import (
        build_model,
        evaluate,
        reestimate_norm_statistics,
    )

    run = load_run(run_dir)
    preset = get_preset("smoke")
    data = load_workload_data(preset, smoke_cache, synth_corpus)
    model = build_model(preset, data)
    built = build_optimizer(optimizer, model, **run.config.optimizer_hparams)
    assert has_evaluation_modes(built)
    built.train()
    checkpoint = torch.load(RunFiles(run_dir).checkpoint, weights_only=False)
    model.load_state_dict(checkpoint["model"])
    built.load_state_dict(checkpoint["optimizer"])
    built.eval()
    batches = run.config.optimizer_capabilities["norm_batches"]
    assert batches == 50
    clean = data.clean_batches(preset.batch_frames, batches, run.config.seed)
    reestimate_norm_statistics(model, clean, "fp32", torch.device("cpu"))
    return evaluate(model, data.dev, data, "fp32", torch.device("cpu"))


@pytest.mark.parametrize("optimizer", ["sfadamw", "schedulefree:AdamWScheduleFree"])
def test_an_optimizer_with_modes_is_scored_at_its_evaluation_weights(
    smoke, synth_corpus, smoke_cache, optimizer
):
    outcome = run_training(smoke(optimizer))
    assert outcome.status == "completed"
    recorded = load_run(outcome.run_dir).metrics.dropna(subset=["dev_loss"]).iloc[-1]
    assert recorded["step"] == 30
    by_hand = _evaluated_by_hand(outcome.run_dir, optimizer, synth_corpus, smoke_cache)
    assert by_hand["loss"] == recorded["dev_loss"]
    assert (by_hand["wer"], by_hand["cer"]) == (recorded["dev_wer"], recorded["dev_cer"])


@pytest.mark.parametrize("optimizer", ["sgd", "sfadamw", "schedulefree:AdamWScheduleFree"])
def test_evaluating_does_not_steer_training(smoke, tmp_path, monkeypatch, optimizer):
    import dataclasses

    from fambench.workloads import presets

    smoke_preset = presets._PRESETS["smoke"]
    rows = {}
    for every in (10, 30):  # evaluations at 10, 20 and 30, or only at the end
        monkeypatch.setitem(
            presets._PRESETS, "smoke", dataclasses.replace(smoke_preset, eval_every=every)
        )
        outcome = run_training(smoke(optimizer, out_dir=tmp_path / str(every)))
        assert outcome.status == "completed"
        evals = load_run(outcome.run_dir).metrics["dev_loss"].dropna()
        assert len(evals) == 30 // every
        rows[every] = _train_rows(outcome.run_dir)[["step", "train_loss", "lr", "grad_norm"]]
    # Bitwise, with modes too: training goes on from its exact weights after every evaluation.
    pd.testing.assert_frame_equal(rows[10], rows[30])
