"""Frequency handlers: band partitions, momentum rules, registration, group tagging."""

from __future__ import annotations

import pytest
import torch

from fambench.optim import (
    AttentionFrequencyHandler,
    ConvFrequencyHandler,
    EmbeddingFrequencyHandler,
    FAMOptimizer,
    FrequencyHandler,
    get_handler,
    handler_names,
    infer_handler_name,
    register_handler,
)
from fambench.optim import handlers as handlers_module
from fambench.optim.reference import ANALYZE, MOMENTUM

BUILT_IN = {
    "default": FrequencyHandler,
    "conv": ConvFrequencyHandler,
    "attention": AttentionFrequencyHandler,
    "embedding": EmbeddingFrequencyHandler,
}


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(handlers_module, "_HANDLERS", dict(handlers_module._HANDLERS))


def _normalised_power(signal: torch.Tensor) -> torch.Tensor:
    power = torch.fft.rfft(signal).abs()
    return power / (power.sum() + 1e-8)


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_band_partitions_equal_the_specifications_loops(name):
    handler = get_handler(name)
    generator = torch.Generator().manual_seed(0)
    lengths = list(range(1, 70)) + [255, 256, 257, 576, 1001, 4464]
    for length in lengths:
        signal = torch.randn(length, generator=generator)
        power = _normalised_power(signal)
        for n_bands in range(1, 14):
            if name == "attention" and n_bands == 1:
                continue  # the specification divides by zero here (see the dedicated test)
            matrix = handler.bands(power.shape[0], n_bands)
            assert matrix.shape == (power.shape[0], n_bands)
            assert set(matrix.unique().tolist()) <= {0.0, 1.0}
            assert (matrix.sum(dim=1) <= 1).all()  # bands never overlap
            expected = torch.tensor(ANALYZE[name](signal, n_bands))
            torch.testing.assert_close(power @ matrix, expected, rtol=1e-5, atol=1e-6)


def test_partition_quirks_are_kept():
    default = FrequencyHandler()
    # 11 bins in 4 bands of 2: bins 8..10 belong to no band.
    assert default.bands(11, 4).sum(dim=0).tolist() == [2, 2, 2, 2]
    assert default.bands(11, 4)[8:].sum() == 0
    # Fewer bins than bands: every band empty.
    assert default.bands(3, 8).sum() == 0
    conv = ConvFrequencyHandler()
    # int(n**(i/n_bands) - 1) truncation: some bands are empty, the last bin is never used.
    assert conv.bands(9, 8).sum(dim=0).tolist() == [0, 0, 1, 1, 0, 2, 1, 3]
    matrix = conv.bands(2049, 10)
    assert matrix.sum(dim=0).tolist() == [1, 2, 5, 12, 24, 52, 111, 237, 510, 1094]
    assert matrix[-1].sum() == 0
    attention = AttentionFrequencyHandler()
    # 2049 bins, 12 bands: six bands of 170 below bin 1024, six of 170 from 1024 on.
    matrix = attention.bands(2049, 12)
    assert matrix.sum(dim=0).tolist() == [170.0] * 12
    assert matrix[:1024, 6:].sum() == 0 and matrix[1024:, :6].sum() == 0


def test_attention_with_one_band_falls_back_to_base_momentum():
    handler = AttentionFrequencyHandler()
    matrix = handler.bands(9, 1)
    assert matrix.shape == (9, 1)
    result = handler.momentum(torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([0.9]))
    assert result.tolist() == pytest.approx([0.9])


def _rule(name, rows, bases):
    bands = torch.tensor(rows, dtype=torch.float64)
    base = torch.tensor(bases, dtype=torch.float64)
    return get_handler(name).momentum(bands, base).tolist()


def test_default_rule_on_crafted_bands():
    rows = [
        [0.2, 0.2, 0.15, 0.14, 0.08, 0.08, 0.08, 0.07],  # upper half 0.31 > 0.3
        [0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05],  # upper half exactly 0.3: not > 0.3
        [0.2, 0.2, 0.15, 0.14, 0.08, 0.08, 0.08, 0.07],  # boost capped at 0.95
    ]
    assert _rule("default", rows, [0.9, 0.9, 0.93]) == pytest.approx([0.95, 0.9, 0.95])


def test_conv_rule_on_crafted_bands():
    # 10 bands: mid = bands[2:7], high = bands[7:].
    mid = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.11, 0.0, 0.1, 0.19]  # mid 0.41
    high = [0.2, 0.09, 0.1, 0.1, 0.1, 0.05, 0.05, 0.1, 0.1, 0.11]  # mid 0.40, high 0.31
    low = [0.3, 0.3, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]
    got = _rule("conv", [mid, high, low, mid], [0.9, 0.9, 0.9, 0.92])
    assert got == pytest.approx([0.97, 0.95, 0.9, 0.97])  # 0.92 + 0.07 capped at 0.97


def test_attention_rule_on_crafted_bands():
    n = 12  # lowest quarter: index < 3; above the third quarter: index > 9

    def peak(index, value=0.5):
        row = [0.04] * n
        row[index] = value
        return row

    rows = [peak(0), peak(2), peak(3), peak(9), peak(10), peak(11), peak(1), [0.1] * n]
    bases = [0.9, 0.9, 0.9, 0.9, 0.9, 0.95, 0.88, 0.92]
    expected = [0.85, 0.85, 0.9, 0.9, 0.98, 0.98, 0.85, 0.87]  # ties → band 0 → low rule
    assert _rule("attention", rows, bases) == pytest.approx(expected)


def test_embedding_rule_on_crafted_bands():
    rows = [[0.1] * 6 + [0.11, 0.1], [0.1] * 6 + [0.1, 0.1], [0.1] * 6 + [0.2, 0.2]]
    assert _rule("embedding", rows, [0.9, 0.9, 0.95]) == pytest.approx([0.98, 0.9, 0.98])


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_rules_equal_the_specification_on_random_band_vectors(name):
    generator = torch.Generator().manual_seed(1)
    for n_bands in (2, 4, 7, 8, 10, 12):
        bands = torch.distributions.Dirichlet(torch.full((n_bands,), 0.7)).sample((300,))
        bands = bands.double()
        base = 0.8 + 0.15 * torch.rand(300, generator=generator, dtype=torch.float64)
        got = get_handler(name).momentum(bands, base).tolist()
        expected = [
            MOMENTUM[name](row, b) for row, b in zip(bands.tolist(), base.tolist(), strict=True)
        ]
        assert got == expected


class _QuietHandler(FrequencyHandler):
    """A user handler: momentum 0.5 whenever the top band holds anything."""

    name = "quiet"

    def momentum(self, band_values, base_alpha):
        return torch.where(band_values[:, -1] > 0, torch.full_like(base_alpha, 0.5), base_alpha)


def _single_group_step(group, steps=3):
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(600))
    optimizer = FAMOptimizer([{"params": [param], **group}], fam_start_step=0, lr=0.1)
    for _ in range(steps):
        param.grad = torch.randn(600)
        optimizer.step()
    return optimizer


def test_registered_user_handler_is_used_by_name(clean_registry):
    register_handler("quiet", _QuietHandler)
    assert "quiet" in handler_names()
    optimizer = _single_group_step({"handler": "quiet"})
    assert optimizer.effective_momenta() == {"group0.param0": 0.5}
    with pytest.raises(ValueError, match="already registered"):
        register_handler("quiet", _QuietHandler())
    register_handler("quiet", FrequencyHandler(), replace=True)
    assert isinstance(get_handler("quiet"), FrequencyHandler)


def test_handler_object_in_a_group_is_used_directly():
    optimizer = _single_group_step({"handler": _QuietHandler()})
    assert optimizer.effective_momenta() == {"group0.param0": 0.5}


def test_bad_handlers_are_refused(clean_registry):
    with pytest.raises(ValueError, match="must provide bands"):
        register_handler("broken", object())
    with pytest.raises(ValueError, match="unknown frequency handler 'nope'; registered: attention"):
        FAMOptimizer([{"params": [torch.nn.Parameter(torch.zeros(3))], "handler": "nope"}])

    class WrongShape(FrequencyHandler):
        def bands(self, n_freq, n_bands):
            return torch.ones(n_freq, n_bands + 1)

    with pytest.raises(ValueError, match=r"bands\(301, 8\) returned shape \(301, 9\)"):
        _single_group_step({"handler": WrongShape()})

    class WrongMomentum(FrequencyHandler):
        def momentum(self, band_values, base_alpha):
            return base_alpha[:0]

    with pytest.raises(RuntimeError, match="momenta of shape"):
        _single_group_step({"handler": WrongMomentum()})


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["enc.layers.0.conv_module.depthwise.weight", "enc.layers.0.ffn.w1"], "conv"),
        (["enc.layers.0.self_attn.in_proj_weight"], "attention"),
        (["decoder.MHA.out.weight"], "attention"),
        (["token_embedding.weight"], "embedding"),
        # The specification tags these 'attention' (its generator rebinds `name`).
        (["enc.layers.0.ffn.linear1.weight", "enc.layers.0.ffn.linear1.bias"], "default"),
        (["final_norm.weight"], "default"),
        ([], "default"),
    ],
)
def test_groups_with_names_but_no_handler_are_tagged_correctly(names, expected):
    assert infer_handler_name(names) == expected
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in names] or [
        torch.nn.Parameter(torch.zeros(2))
    ]
    group = {"params": params}
    if names:
        group["names"] = names
    optimizer = FAMOptimizer([group])
    assert optimizer.param_groups[0]["handler"] == expected
