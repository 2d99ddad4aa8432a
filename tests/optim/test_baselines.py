"""The field's baselines in the registry (nadamw, sfadamw, soap, muon, lion): each builds the
library's own optimizer as its authors intend, takes steps, reloads its state exactly, records
its source; capabilities are declared, never inferred from a name; schedules keep group ratios."""

from __future__ import annotations

import copy
import textwrap

import pytest
import pytorch_optimizer
import schedulefree
import torch
from torch import nn

from fambench.model import ConformerCTC, ModelSettings
from fambench.optim import (
    Capabilities,
    OptimizerConfigError,
    WarmupHoldCosine,
    build_optimizer,
    get_optimizer_spec,
    has_evaluation_modes,
    optimizer_source,
    resolve_search_space,
)
from fambench.optim.capabilities import parse_capabilities
from fambench.optim.groups import muon_parameter_groups

BASELINES = {
    "nadamw": torch.optim.NAdam,
    "sfadamw": schedulefree.AdamWScheduleFree,
    "soap": pytorch_optimizer.SOAP,
    "muon": pytorch_optimizer.Muon,
    "lion": pytorch_optimizer.Lion,
}


def _conformer() -> ConformerCTC:
    torch.manual_seed(0)
    settings = ModelSettings(
        n_mels=20, d_model=16, n_layers=2, n_heads=2, ffn_dim=32, conv_kernel=3,
        frontend_channels=4, vocab_size=6, dropout=0.0,
    )  # fmt: skip
    return ConformerCTC(settings)


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        feats = torch.randn(2, 40, 20, generator=generator)
        log_probs, _ = model(feats, torch.tensor([40, 33]))
        optimizer.zero_grad(set_to_none=True)
        log_probs.mean().neg().backward()
        optimizer.step()


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_each_baseline_is_its_library_s_optimizer_and_resumes_exactly(name):
    model = _conformer()
    optimizer = build_optimizer(name, model)
    assert isinstance(optimizer, BASELINES[name])
    if has_evaluation_modes(optimizer):
        optimizer.train()
    before = copy.deepcopy(model.state_dict())
    _train(model, optimizer, 3, seed=1)
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.endswith("weight") for k in moved)  # it trained

    # A copy rebuilt from the state dicts takes bitwise the same next steps.
    twin = _conformer()
    twin.load_state_dict(model.state_dict())
    twin_optimizer = build_optimizer(name, twin)
    if has_evaluation_modes(twin_optimizer):
        twin_optimizer.train()
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    _train(model, optimizer, 4, seed=2)
    _train(twin, twin_optimizer, 4, seed=2)
    for key, value in model.state_dict().items():
        assert torch.equal(value, twin.state_dict()[key]), key


def test_sources_name_the_distribution_and_its_version():
    from importlib import metadata

    assert optimizer_source(get_optimizer_spec("sfadamw")) == (
        f"schedulefree {metadata.version('schedulefree')}"
    )
    for name in ("soap", "muon", "lion"):
        assert optimizer_source(get_optimizer_spec(name)) == (
            f"pytorch-optimizer {metadata.version('pytorch-optimizer')}"
        )
    assert optimizer_source(get_optimizer_spec("nadamw")) == f"torch {metadata.version('torch')}"
    # A dotted path: the distribution that installs the module.
    plugin = get_optimizer_spec("schedulefree:SGDScheduleFree")
    assert optimizer_source(plugin).startswith("schedulefree ")


def test_the_listing_shows_each_baseline_s_code_and_needs():
    from typer.testing import CliRunner

    import fambench.cli as cli

    cli._register_commands()
    result = CliRunner().invoke(cli.app, ["optimizers"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    for name in BASELINES:
        assert f" {name} " in text, name
    assert "code: schedulefree 1.4.1" in text and "code: torch " in text
    assert text.count("code: pytorch-optimizer 4.1.0") == 3
    assert "schedule: warmup-only" in text


def test_baselines_are_built_as_their_authors_intend():
    model = _conformer()
    nadamw = build_optimizer("nadamw", model).param_groups[0]
    assert nadamw["decoupled_weight_decay"] is True and nadamw["momentum_decay"] == 1000.0
    # mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay)) is beta1 from the first step.
    assert 0.9327 * (1 - 0.5 * 0.96 ** (1 * 1000.0)) == 0.9327
    sf = build_optimizer("sfadamw", model).param_groups[0]
    assert sf["warmup_steps"] == 0  # the trainer's warmup: the schedule it declares
    assert get_optimizer_spec("sfadamw").capabilities == Capabilities("warmup-only", 50)
    soap = build_optimizer("soap", model).param_groups[0]
    assert (soap["lr"], soap["betas"], soap["precondition_frequency"]) == (3e-3, (0.95, 0.95), 10)
    lion = build_optimizer("lion", model).param_groups[0]
    assert (lion["lr"], lion["betas"], lion["weight_decay"]) == (1e-4, (0.9, 0.99), 0.1)
    for name in ("nadamw", "soap", "muon", "lion"):
        assert get_optimizer_spec(name).capabilities == Capabilities()
        assert "lr" in resolve_search_space(name) and "warmup_fraction" in resolve_search_space(
            name
        )


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = _conformer()
    optimizer = build_optimizer("muon", model, lr=0.03, adamw_lr=1e-3)
    muon, adamw = optimizer.param_groups
    assert (muon["use_muon"], muon["lr"], adamw["use_muon"], adamw["lr"]) == (
        True, 0.03, False, 1e-3
    )  # fmt: skip
    assert set(muon["names"]) == {
        "frontend.conv.2.weight",  # the second (hidden) subsampling conv, flattened
        "frontend.proj.weight",
        *(
            f"encoder.conformer_layers.{i}.{name}"
            for i in range(2)
            for name in (
                "ffn1.sequential.1.weight",
                "ffn1.sequential.4.weight",
                "ffn2.sequential.1.weight",
                "ffn2.sequential.4.weight",
                "self_attn.in_proj_weight",
                "self_attn.out_proj.weight",
                "conv_module.sequential.0.weight",  # the pointwise convs (k = 1)
                "conv_module.sequential.5.weight",
            )
        ),
    }
    every = {name for name, _ in model.named_parameters()}
    assert set(adamw["names"]) == every - set(muon["names"])
    assert "frontend.conv.0.weight" in adamw["names"] and "head.weight" in adamw["names"]
    depthwise = "encoder.conformer_layers.0.conv_module.sequential.2.weight"
    assert depthwise in adamw["names"]  # a grouped kernel maps each channel alone
    assert all(p.ndim >= 2 for p in muon["params"])


def test_muon_split_leaves_out_empty_groups_and_frozen_parameters():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    groups = muon_parameter_groups(model, {"lr": 0.1}, {"lr": 0.01})
    assert [g["use_muon"] for g in groups] == [True, False]
    assert groups[0]["names"] == ["1.weight"]
    assert "0.weight" not in groups[1]["names"]
    only_vectors = muon_parameter_groups(nn.LayerNorm(3), {"lr": 0.1}, {"lr": 0.01})
    assert [g["use_muon"] for g in only_vectors] == [False]


def test_schedule_factors_apply_to_each_group_s_own_rate():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    optimizer = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[1].parameters(), "lr": 1e-3},
        ]
    )
    scheduler = WarmupHoldCosine(
        optimizer, warmup_steps=2, total_steps=10, decay_start_step=4,
        warmup_start_factor=0.01, final_factor=0.01,
    )  # fmt: skip
    seen = []
    for _ in range(12):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx([1e-3, 1e-5])
    assert seen[3] == [0.1, 1e-3]
    assert seen[-1] == pytest.approx([1e-3, 1e-5])
    for fast, slow in seen:
        assert fast / slow == pytest.approx(100.0)
    # final_factor 1: warmup, then the base rate to the end.
    constant = WarmupHoldCosine(
        torch.optim.SGD(model.parameters(), lr=0.5), warmup_steps=2, total_steps=10,
        warmup_start_factor=0.1, final_factor=1.0,
    )  # fmt: skip
    assert [constant.lr_at(t, 0.5) for t in (0, 1, 2, 5, 9, 20)] == pytest.approx(
        [0.05, 0.275, 0.5, 0.5, 0.5, 0.5]
    )


@pytest.mark.parametrize(
    "data,message",
    [
        ({"schedule": "cosine"}, "schedule must be one of warmup-hold-cosine, warmup-only"),
        ({"norm_batches": -1}, "norm_batches must be >= 0"),
        ({"norm_batches": 2.5}, "norm_batches must be an integer"),
        ({"evaluation": True}, "unknown capability 'evaluation'"),
        (["warmup-only"], "capabilities must be a dict"),
    ],
)
def test_bad_capabilities_are_one_clear_line(data, message):
    with pytest.raises(ValueError, match=message):
        parse_capabilities(data)


def test_batch_norm_re_estimation_defaults_to_on_for_an_optimizer_with_modes():
    assert Capabilities().resolved(evaluation_modes=True).norm_batches == 50
    assert Capabilities().resolved(evaluation_modes=False).norm_batches == 0
    declared = Capabilities(schedule="warmup-only", norm_batches=0)
    assert declared.resolved(evaluation_modes=True) == declared


def test_a_plugin_declares_capabilities_by_attribute(tmp_path, monkeypatch):
    (tmp_path / "averaging_plugin.py").write_text(
        textwrap.dedent(
            """
            import torch

            class Averaging(torch.optim.SGD):
                fambench_capabilities = {"schedule": "warmup-only", "norm_batches": 3}

                def __init__(self, params, lr=0.1):
                    super().__init__(params, lr=lr)

            class Broken(torch.optim.SGD):
                fambench_capabilities = {"schedule": "sometimes"}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = get_optimizer_spec("averaging_plugin:Averaging")
    assert spec.capabilities == Capabilities(schedule="warmup-only", norm_batches=3)
    assert spec.package == ""  # a module no distribution installs
    with pytest.raises(OptimizerConfigError, match="'averaging_plugin:Broken': capabilities"):
        get_optimizer_spec("averaging_plugin:Broken")


def test_evaluation_modes_are_detected_by_what_an_optimizer_has():
    model = nn.Linear(2, 2)
    assert has_evaluation_modes(schedulefree.SGDScheduleFree(model.parameters(), lr=0.1))
    assert not has_evaluation_modes(torch.optim.AdamW(model.parameters()))
    assert not has_evaluation_modes(build_optimizer("fam", model))
