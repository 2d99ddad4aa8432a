"""Behaviour every registry entry must have (fam, fam-fixed, simple-fam, adamw, sgd)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from fambench.optim import SimpleFAM, build_optimizer, list_optimizers

BUILT_INS = ["adamw", "fam", "fam-fixed", "sgd", "simple-fam"]
LEARNING_RATES = {"fam": 0.1, "fam-fixed": 0.1, "simple-fam": 0.1, "sgd": 0.01, "adamw": 3e-3}
# Small thresholds so that a few steps exercise the frequency analysis of every FAM variant.
FAM_OVERRIDES = {"fam_start_step": 3, "min_size": 64}


class TinyNet(nn.Module):
    """Conv, norm, attention and linear layers; one weight (expand) above 10000 entries."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 5, padding=2)
        self.norm = nn.LayerNorm(16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.expand = nn.Linear(16, 640)
        self.out = nn.Linear(640, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)
        h = self.norm(h)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.out(torch.tanh(self.expand(h))).mean(dim=1)


@pytest.fixture(autouse=True)
def quick_simple_fam(monkeypatch):
    # SimpleFAM's rule starts after step 100 for tensors over 1000 entries; start it sooner.
    monkeypatch.setattr(SimpleFAM, "start_step", 3)
    monkeypatch.setattr(SimpleFAM, "min_numel", 500)


def _model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def _build(name: str, model: nn.Module, **extra):
    overrides = {"lr": LEARNING_RATES[name], **extra}
    if name.startswith("fam"):
        overrides = {**FAM_OVERRIDES, **overrides}
    return build_optimizer(name, model, **overrides)


def _data(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(32, 12, 8, generator=generator), torch.randn(32, 3, generator=generator)


def _random_grads(params, generator):
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator).to(p.dtype)


def test_every_built_in_is_registered():
    assert {spec.name for spec in list_optimizers(include_plugins=False)} >= set(BUILT_INS)


@pytest.mark.parametrize("name", BUILT_INS)
def test_loss_decreases_on_a_small_problem(name):
    model = _model()
    optimizer = _build(name, model)
    inputs, targets = _data()
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses[::8]
    if name == "fam":
        assert optimizer.effective_momenta()  # the frequency analysis really ran


@pytest.mark.parametrize("name", BUILT_INS)
def test_per_group_learning_rate_and_weight_decay_are_honoured(name):
    model = _model()
    optimizer = _build(name, model)
    start = torch.linspace(-1, 1, 600)
    p_slow, p_fast, p_decay, p_plain = (nn.Parameter(start.clone()) for _ in range(4))
    lr = LEARNING_RATES[name]
    optimizer.add_param_group({"params": [p_slow], "lr": lr, "weight_decay": 0.0})
    optimizer.add_param_group({"params": [p_fast], "lr": 2 * lr, "weight_decay": 0.0})
    optimizer.add_param_group({"params": [p_decay], "lr": lr, "weight_decay": 0.5})
    optimizer.add_param_group({"params": [p_plain], "lr": lr, "weight_decay": 0.0})
    grad = torch.cos(torch.arange(600.0))
    p_slow.grad, p_fast.grad = grad.clone(), grad.clone()
    p_decay.grad, p_plain.grad = torch.zeros(600), torch.zeros(600)
    optimizer.step()
    slow, fast = p_slow.detach() - start, p_fast.detach() - start
    assert slow.abs().max() > 0
    torch.testing.assert_close(fast, 2 * slow)
    assert torch.equal(p_plain.detach(), start)  # zero gradient, no decay: no move
    shrink = p_decay.detach().abs() < start.abs()
    assert shrink[start != 0].all()  # decay pulls every nonzero entry towards 0


@pytest.mark.parametrize("name", BUILT_INS)
def test_none_and_zero_gradients(name):
    model = _model()
    optimizer = _build(name, model, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(6):
        for n, p in model.named_parameters():
            p.grad = None if n.startswith("attn") else torch.zeros_like(p)
        optimizer.step()
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
    for n, p in model.named_parameters():
        if n.startswith("attn"):
            assert not optimizer.state.get(p), f"state created for {n} without a gradient"


def _train(model, optimizer, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        _random_grads(model.parameters(), generator)
        optimizer.step()


@pytest.mark.parametrize("name", BUILT_INS)
def test_state_dict_round_trip_then_lockstep(name):
    model = _model()
    optimizer = _build(name, model)
    _train(model, optimizer, steps=8, seed=2)  # past fam_start_step: band EMAs in the state

    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    twin = copy.deepcopy(model)
    restored = _build(name, twin)
    restored.load_state_dict(saved)
    _train(model, optimizer, steps=6, seed=3)
    _train(twin, restored, steps=6, seed=3)
    for (n, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("name", BUILT_INS)
def test_deepcopy_continues_identically(name):
    model = _model()
    optimizer = _build(name, model)
    _train(model, optimizer, steps=6, seed=4)
    model_copy, optimizer_copy = copy.deepcopy((model, optimizer))
    _train(model, optimizer, steps=4, seed=5)
    _train(model_copy, optimizer_copy, steps=4, seed=5)
    for a, b in zip(model.parameters(), model_copy.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", BUILT_INS)
def test_add_param_group_after_some_steps(name):
    model = _model()
    optimizer = _build(name, model)
    _train(model, optimizer, steps=5, seed=6)
    extra = nn.Linear(40, 30)
    start = extra.weight.detach().clone()
    optimizer.add_param_group({"params": list(extra.parameters())})
    generator = torch.Generator().manual_seed(7)
    for _ in range(5):
        _random_grads(list(model.parameters()) + list(extra.parameters()), generator)
        optimizer.step()
    assert not torch.equal(extra.weight.detach(), start)
    assert all(torch.isfinite(p).all() for p in list(model.parameters()) + list(extra.parameters()))
    if "step" in optimizer.state[extra.weight] and not torch.is_tensor(
        optimizer.state[extra.weight]["step"]
    ):
        assert optimizer.state[extra.weight]["step"] == 5
        assert optimizer.state[model.conv.weight]["step"] == 10


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", BUILT_INS)
def test_float64_and_bfloat16_parameters(name, dtype):
    runs = {}
    for run_dtype in (torch.float32, dtype):
        model = _model().to(run_dtype)
        optimizer = _build(name, model, lr=LEARNING_RATES[name] * 4)
        start = [p.detach().clone() for p in model.parameters()]
        _train(model, optimizer, steps=8, seed=8)
        for p in model.parameters():
            assert p.dtype == run_dtype
            assert torch.isfinite(p).all()
            for value in optimizer.state[p].values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    assert value.dtype == run_dtype
        runs[run_dtype] = [
            (p.detach() - s).double() for p, s in zip(model.parameters(), start, strict=True)
        ]
    moved32 = torch.cat([d.flatten() for d in runs[torch.float32]])
    moved = torch.cat([d.flatten() for d in runs[dtype]])
    if dtype == torch.float64:
        torch.testing.assert_close(moved, moved32, rtol=1e-3, atol=1e-5)
    else:
        assert torch.corrcoef(torch.stack([moved, moved32]))[0, 1] > 0.9


@pytest.mark.parametrize("name", BUILT_INS)
def test_step_leaves_the_global_rng_alone(name):
    model = _model()
    extra = {"sampling": "random"} if name.startswith("fam") else {}
    optimizer = _build(name, model, **extra)
    generator = torch.Generator().manual_seed(9)
    for _ in range(6):
        _random_grads(model.parameters(), generator)
        state = torch.get_rng_state()
        optimizer.step()
        assert torch.equal(torch.get_rng_state(), state)
