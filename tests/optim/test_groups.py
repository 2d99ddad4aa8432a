"""get_parameter_groups: classification by module type, per-group settings."""

from __future__ import annotations

import pytest
import torch
import torchaudio
from torch import nn

from fambench.optim import get_parameter_groups


def _by_kind(groups):
    kinds = {"conv": "conv", "attention": "attention", "embedding": "embedding"}
    result = {}
    for group in groups:
        if group["handler"] in kinds:
            kind = kinds[group["handler"]]
        else:
            kind = "norm" if group["n_bands"] == 4 else "other"
        result[kind] = group
    return result


@pytest.mark.parametrize("use_group_norm", [False, True])
def test_torchaudio_conformer_is_grouped_by_module_type(use_group_norm):
    torch.manual_seed(0)
    model = torchaudio.models.Conformer(
        input_dim=16,
        num_heads=2,
        ffn_dim=32,
        num_layers=2,
        depthwise_conv_kernel_size=3,
        use_group_norm=use_group_norm,
    )
    groups = _by_kind(get_parameter_groups(model, lr=0.01, weight_decay=1e-4))
    assert set(groups) == {"conv", "attention", "norm", "other"}
    names = {kind: set(group["names"]) for kind, group in groups.items()}

    all_names = [n for n, _ in model.named_parameters()]
    assert sorted(n for group in groups.values() for n in group["names"]) == sorted(all_names)
    by_name = dict(model.named_parameters())
    for group in groups.values():
        assert [id(p) for p in group["params"]] == [id(by_name[n]) for n in group["names"]]

    for layer in range(2):
        prefix = f"conformer_layers.{layer}."
        assert {
            prefix + "self_attn.in_proj_weight",
            prefix + "self_attn.in_proj_bias",
            prefix + "self_attn.out_proj.weight",
            prefix + "self_attn.out_proj.bias",
        } <= names["attention"]
        for index in (0, 2, 5):  # pointwise, depthwise, pointwise Conv1d
            assert prefix + f"conv_module.sequential.{index}.weight" in names["conv"]
        for norm in (
            "ffn1.sequential.0",
            "self_attn_layer_norm",
            "conv_module.layer_norm",
            "conv_module.sequential.3",
            "ffn2.sequential.0",
            "final_layer_norm",
        ):
            assert {prefix + norm + ".weight", prefix + norm + ".bias"} <= names["norm"]
        for ffn in ("ffn1", "ffn2"):
            for index in (1, 4):
                assert prefix + f"{ffn}.sequential.{index}.weight" in names["other"]
    assert len(names["attention"]) == 8 and len(names["conv"]) == 12 and len(names["norm"]) == 24
    assert len(names["other"]) == 16

    expected = {  # lr, weight decay, alpha, handler, bands
        "conv": (0.01, 1e-4, 0.9, "conv", 10),
        "attention": (0.01, 1e-4, 0.92, "attention", 12),
        "norm": (0.01, 0.0, 0.9, "default", 4),
        "other": (0.01, 1e-4, 0.9, "default", 8),
    }
    for kind, (lr, wd, alpha, handler, bands) in expected.items():
        group = groups[kind]
        got = (
            group["lr"],
            group["weight_decay"],
            group["alpha"],
            group["handler"],
            group["n_bands"],
        )
        assert got == (lr, wd, alpha, handler, bands)


class RelativeAttention(nn.Module):
    """A custom attention block: its linears are attention, its norm stays a norm."""

    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(8, 8)
        self.pos_norm = nn.LayerNorm(8)
        self.pos_bias = nn.Parameter(torch.zeros(8))


class Zoo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.conv2d = nn.Conv2d(1, 4, 3)
        self.deconv = nn.ConvTranspose1d(4, 4, 3)
        self.depthwise = nn.Conv1d(4, 4, 5, groups=4)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.inorm = nn.InstanceNorm1d(4, affine=True)
        self.rms = nn.RMSNorm(8)
        self.attn = RelativeAttention()
        self.mha = nn.MultiheadAttention(8, 2)
        self.head = nn.Linear(8, 3)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.tied = nn.Linear(8, 20, bias=False)
        self.tied.weight = self.embed.weight  # shared with the embedding


def test_every_module_family_is_classified():
    groups = _by_kind(get_parameter_groups(Zoo(), lr=0.1, weight_decay=0.01))
    names = {kind: set(group["names"]) for kind, group in groups.items()}
    assert names["embedding"] == {"embed.weight"}  # the tied copy appears once
    assert names["conv"] == {
        "conv2d.weight",
        "conv2d.bias",
        "deconv.weight",
        "deconv.bias",
        "depthwise.weight",
        "depthwise.bias",
    }
    assert names["norm"] == {
        "bn.weight",
        "bn.bias",
        "gn.weight",
        "gn.bias",
        "inorm.weight",
        "inorm.bias",
        "rms.weight",
        "attn.pos_norm.weight",
        "attn.pos_norm.bias",
    }
    assert names["attention"] == {
        "attn.query.weight",
        "attn.query.bias",
        "attn.pos_bias",
        "mha.in_proj_weight",
        "mha.in_proj_bias",
        "mha.out_proj.weight",
        "mha.out_proj.bias",
    }
    assert names["other"] == {"head.weight", "head.bias"}  # frozen.* skipped
    embedding = groups["embedding"]
    assert embedding["lr"] == pytest.approx(0.08) and embedding["weight_decay"] == pytest.approx(
        0.015
    )
    assert (embedding["alpha"], embedding["n_bands"], embedding["handler"]) == (
        0.95,
        8,
        "embedding",
    )


def test_group_order_and_empty_groups():
    groups = get_parameter_groups(Zoo())
    assert [g["handler"] for g in groups] == [
        "conv",
        "attention",
        "embedding",
        "default",
        "default",
    ]
    only_linear = get_parameter_groups(nn.Linear(3, 3))
    assert len(only_linear) == 1 and only_linear[0]["names"] == ["weight", "bias"]
    assert get_parameter_groups(nn.ReLU()) == []
