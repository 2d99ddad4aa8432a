"""FAMOptimizer specifics: trace (the specification's debug arguments), sampling, fixed twin,
state, errors, no host sync. The TraceWriter capability: test_optim_tracing.py."""

from __future__ import annotations

import copy
import gc
import json
import weakref

import pytest
import torch
from optim_helpers import crafted_gradient
from torch import nn

from fambench.optim import FAMOptimizer, get_parameter_groups
from fambench.optim.fam.keys import Same
from fambench.optim.reference import ReferenceFAM


class Named(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(6, 50, 3)  # 900 weights
        self.attn = nn.MultiheadAttention(20, 2)  # in_proj 1200
        self.norm = nn.LayerNorm(20)
        self.ff = nn.Linear(20, 700)  # 14000 weights: sampled


def _model() -> Named:
    torch.manual_seed(0)
    return Named()


def _steps(optimizer, params, count, seed=0, mode="noise"):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        for p in params:
            p.grad = crafted_gradient(tuple(p.shape), mode, generator).to(p.device, p.dtype)
        optimizer.step()


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_debug_arguments_trace_every_ten_steps_appended_in_batches(tmp_path):
    model = _model()
    debug_dir = tmp_path / "debug"
    optimizer = FAMOptimizer(
        get_parameter_groups(model),
        fam_start_step=3,
        min_size=300,
        debug=True,
        debug_dir=str(debug_dir),
        debug_interval=25,
    )
    params = list(model.parameters())
    _steps(optimizer, params, 24)
    assert not (debug_dir / "fam_trace.jsonl").exists()  # nothing written before debug_interval
    _steps(optimizer, params, 1, seed=1)
    path = debug_dir / "fam_trace.jsonl"
    records = _read(path)
    # numel > 300, in group order (conv, attention, norm, other):
    analysed = [
        "conv.weight",
        "attn.in_proj_weight",
        "attn.out_proj.weight",
        "ff.weight",
        "ff.bias",
    ]
    assert [r["step"] for r in records] == [10] * 5 + [20] * 5
    assert [r["param"] for r in records] == analysed * 2
    handlers = {
        "conv.weight": "conv",
        "attn.in_proj_weight": "attention",
        "attn.out_proj.weight": "attention",
        "ff.weight": "default",
        "ff.bias": "default",
    }
    groups = {g["handler"]: i for i, g in enumerate(optimizer.param_groups)}
    for record in records:
        assert set(record) == {"step", "param", "group", "handler", "band_ema", "momentum"}
        assert record["handler"] == handlers[record["param"]]
        assert record["group"] == groups[record["handler"]]
        n_bands = optimizer.param_groups[record["group"]]["n_bands"]
        assert len(record["band_ema"]) == n_bands
        assert 0.0 <= sum(record["band_ema"]) <= 1.0 + 1e-6
        assert 0.8 <= record["momentum"] < 1.0
    first_write = path.read_text()

    _steps(optimizer, params, 5, seed=2)  # step 30 is logged but not yet written
    assert path.read_text() == first_write
    optimizer.close()
    text = path.read_text()
    assert text.startswith(first_write)  # appended, never rewritten
    latest = _read(path)[10:]
    assert [r["step"] for r in latest] == [30] * 5
    by_name = dict(zip([n for n, _ in model.named_parameters()], model.parameters(), strict=True))
    for record in latest:
        state_ema = optimizer.state[by_name[record["param"]]]["band_ema"].tolist()
        assert record["band_ema"] == pytest.approx(state_ema)
    assert optimizer.effective_momenta() == pytest.approx(
        {r["param"]: r["momentum"] for r in latest}
    )
    optimizer.close()
    assert path.read_text() == text  # nothing pending, nothing written twice


def test_trace_names_unnamed_parameters_and_is_written_on_leaving_a_with_block(tmp_path):
    params = [
        nn.Parameter(torch.randn(400)),
        nn.Parameter(torch.randn(10)),
        nn.Parameter(torch.randn(500)),
    ]
    with FAMOptimizer(
        [{"params": params[:2]}, {"params": params[2:], "handler": "embedding"}],
        fam_start_step=0,
        debug=True,
        debug_dir=str(tmp_path),
    ) as optimizer:
        _steps(optimizer, params, 10)
        assert not (tmp_path / "fam_trace.jsonl").exists()
    records = _read(tmp_path / "fam_trace.jsonl")
    assert [(r["param"], r["group"], r["handler"]) for r in records] == [
        ("group0.param0", 0, "default"),
        ("group1.param0", 1, "embedding"),
    ]


def test_garbage_collection_writes_nothing(tmp_path):
    params = [nn.Parameter(torch.randn(400))]
    optimizer = FAMOptimizer(params, fam_start_step=0, debug=True, debug_dir=str(tmp_path))
    _steps(optimizer, params, 10)
    del optimizer
    gc.collect()
    assert list(tmp_path.iterdir()) == []  # records reach the file on flush_trace / close only


def test_fixed_twin_keeps_alpha_and_matches_the_plain_update(tmp_path):
    model = _model()
    twin = copy.deepcopy(model)
    fixed = FAMOptimizer(get_parameter_groups(model), fam_start_step=0, adaptive=False, lr=0.1)
    plain = ReferenceFAM(get_parameter_groups(twin), fam_start_step=10**9, lr=0.1)
    _steps(fixed, list(model.parameters()), 12, mode="alternating")
    _steps(plain, list(twin.parameters()), 12, mode="alternating")
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert not any("band_ema" in s for s in fixed.state.values())  # no analysis at all

    logged = FAMOptimizer(
        get_parameter_groups(_model()),
        fam_start_step=0,
        adaptive=False,
        debug=True,
        debug_dir=str(tmp_path),
    )
    params = [p for g in logged.param_groups for p in g["params"]]
    _steps(logged, params, 10, mode="alternating")
    logged.close()
    records = _read(tmp_path / "fam_trace.jsonl")
    alphas = {0.9, 0.92}
    assert records and {r["momentum"] for r in records} <= alphas
    assert any(sum(r["band_ema"][len(r["band_ema"]) // 2 :]) > 0.3 for r in records)


def test_random_sampling_is_reproducible_resumable_and_private():
    def run(seed, steps=8):
        model = _model()
        optimizer = FAMOptimizer(
            get_parameter_groups(model), fam_start_step=1, sampling="random", seed=seed, lr=0.1
        )
        _steps(optimizer, list(model.parameters()), steps)
        return model, optimizer

    model_a, opt_a = run(seed=5)
    model_b, _ = run(seed=5)
    model_c, opt_c = run(seed=6)
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)
    ema = lambda opt, m: opt.state[m.ff.weight]["band_ema"]  # noqa: E731
    assert not torch.equal(ema(opt_a, model_a), ema(opt_c, model_c))

    # Resuming from a state dict draws the same samples as an uninterrupted run.
    model_d, opt_d = run(seed=5, steps=4)
    resumed_model = copy.deepcopy(model_d)
    resumed = FAMOptimizer(
        get_parameter_groups(resumed_model), fam_start_step=1, sampling="random", seed=5, lr=0.1
    )
    resumed.load_state_dict(copy.deepcopy(opt_d.state_dict()))  # (live dicts share tensors)
    rng = torch.get_rng_state()
    _steps(resumed, list(resumed_model.parameters()), 4, seed=0)
    _steps(opt_d, list(model_d.parameters()), 4, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)
    for a, b in zip(model_d.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_ordered_sampling_sees_structure_that_random_sampling_scrambles():
    # A smooth (low-frequency) gradient along both axes of a large matrix.
    rows = torch.linspace(0, 3, 512).sin()[:, None]
    cols = torch.linspace(0, 2, 512).cos()[None, :]
    smooth = rows * cols
    upper_share = {}
    for sampling in ("ordered", "random"):
        param = nn.Parameter(torch.zeros(512, 512))
        optimizer = FAMOptimizer([param], fam_start_step=0, sampling=sampling, n_bands=8)
        param.grad = smooth.clone()
        optimizer.step()
        upper_share[sampling] = optimizer.state[param]["band_ema"][4:].sum().item()
    assert upper_share["ordered"] < 0.15
    assert upper_share["random"] > 0.3  # the specification's sample looks like noise


def test_sparse_gradients_are_refused():
    embedding = nn.Embedding(50, 8, sparse=True)
    optimizer = FAMOptimizer(embedding.parameters())
    embedding(torch.tensor([1, 2, 3])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        optimizer.step()


def _script(optimizer, params, fresh_layout: bool) -> list[torch.Tensor]:
    """Fifteen steps through everything that must change who takes part in a step: the analysis
    starting (fam_start_step), a parameter without a gradient, a group setting changed, a state
    dict loaded, a parameter's state dropped. ``fresh_layout`` makes every step lay itself out
    anew, as the first step does."""
    generator = torch.Generator().manual_seed(5)
    saved = None
    for step in range(1, 16):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        if step == 5:
            params[0].grad = None  # skipped: no state change, no step count
        if step == 7:
            saved = copy.deepcopy(optimizer.state_dict())
        if step == 8:
            for group in optimizer.param_groups:
                group["alpha"] = 0.8
        if step == 9:
            optimizer.load_state_dict(saved)
        if step == 11:
            del optimizer.state[params[-1]]  # starts again from a zero momentum
        if fresh_layout:
            optimizer._layout = None
        optimizer.step()
    return [p.detach().clone() for p in params] + [
        optimizer.state[p]["exp_avg"].clone() for p in params
    ]


def test_a_reused_step_layout_gives_what_a_fresh_one_gives():
    results = []
    for fresh in (False, True):
        model = _model()
        params = list(model.parameters())
        optimizer = FAMOptimizer(get_parameter_groups(model), fam_start_step=3, min_size=64)
        results.append((_script(optimizer, params, fresh), optimizer, params))
    (reused, optimizer, params), (fresh, _, _) = results
    assert all(torch.equal(a, b) for a, b in zip(reused, fresh, strict=True))
    assert optimizer._layout is not None and optimizer._layout.signature is not None
    # The state saved before step 7 (counts 6, and 5 for the one skipped at 5) is loaded before
    # step 9; the state dropped before step 11 starts again (and joins the analysis at step 4).
    counts = [optimizer.state[p]["step"] for p in params]
    assert counts[0] == 12 and counts[-1] == 5 and set(counts[1:-1]) == {13}


def test_a_sparse_gradient_after_the_first_steps_is_still_refused():
    embedding = nn.Embedding(50, 8)
    optimizer = FAMOptimizer(embedding.parameters(), fam_start_step=0)
    for _ in range(2):
        embedding.weight.grad = torch.randn(50, 8)
        optimizer.step()
    embedding.weight.grad = torch.randn(50, 8).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        optimizer.step()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, r"param group 0: lr must be >= 0"),
        ({"alpha": 1.0}, r"alpha must be \[0.0, 1.0\), got 1.0"),
        ({"beta": -0.1}, r"beta must be"),
        ({"n_bands": 0}, "n_bands must be an integer >= 1"),
        ({"n_bands": 2.0}, "n_bands must be an integer >= 1"),
        ({"fam_start_step": -1}, "fam_start_step must be an integer >= 0"),
        ({"sampling": "strided"}, "sampling must be one of ordered, random"),
        ({"debug_interval": 0}, "debug_interval must be a positive integer"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FAMOptimizer([nn.Parameter(torch.zeros(3))], **kwargs)


def test_invalid_group_setting_names_the_group():
    optimizer = FAMOptimizer([nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="param group 1: alpha must be"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(3))], "alpha": 2})
    assert len(optimizer.param_groups) == 1


def test_band_ema_is_float64_state_that_survives_checkpoints_and_deepcopy():
    model = _model().to(torch.bfloat16)
    optimizer = FAMOptimizer(get_parameter_groups(model), fam_start_step=1, lr=0.1)
    _steps(optimizer, list(model.parameters()), 4)
    ema = optimizer.state[model.ff.weight]["band_ema"]
    assert ema.dtype == torch.float64 and ema.shape == (8,)
    assert optimizer.state[model.ff.weight]["exp_avg"].dtype == torch.bfloat16

    twin = copy.deepcopy(model)
    restored = FAMOptimizer(get_parameter_groups(twin), fam_start_step=1, lr=0.1)
    restored.load_state_dict(optimizer.state_dict())
    restored_ema = restored.state[twin.ff.weight]["band_ema"]
    assert restored_ema.dtype == torch.float64 and torch.equal(restored_ema, ema)

    traced_copy = copy.deepcopy(
        FAMOptimizer(
            [nn.Parameter(torch.zeros(3))], debug=True, debug_dir="somewhere", debug_interval=7
        )
    )
    assert (traced_copy._trace_dir, traced_copy._trace_interval) == ("somewhere", 7)


def test_steady_state_step_never_syncs_with_the_host(monkeypatch):
    model = _model()
    optimizer = FAMOptimizer(
        get_parameter_groups(model, weight_decay=0.01), fam_start_step=1, min_size=64
    )
    params = list(model.parameters())
    _steps(optimizer, params, 3)  # builds the plan

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation inside step()")

    for method in ("item", "tolist", "__bool__", "__float__", "__int__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, method, forbidden)
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
    monkeypatch.undo()
    assert len(optimizer.effective_momenta()) == 5


def test_named_parameters_give_names_and_handlers(tmp_path):
    model = _model()
    conv_only = FAMOptimizer(model.conv.named_parameters(prefix="conv"))
    assert conv_only.param_groups[0]["handler"] == "conv"
    optimizer = FAMOptimizer(
        model.ff.named_parameters(prefix="ff"),
        fam_start_step=0,
        debug=True,
        debug_dir=str(tmp_path),
    )
    assert optimizer.param_groups[0]["handler"] == "default"
    _steps(optimizer, list(model.ff.parameters()), 10)
    optimizer.close()
    assert [r["param"] for r in _read(tmp_path / "fam_trace.jsonl")] == ["ff.weight", "ff.bias"]


@pytest.mark.gpu
def test_state_moves_to_another_device_through_a_state_dict():
    model = _model()
    optimizer = FAMOptimizer(get_parameter_groups(model), fam_start_step=1, lr=0.1)
    _steps(optimizer, list(model.parameters()), 4)
    moved = copy.deepcopy(model).cuda()
    on_gpu = FAMOptimizer(get_parameter_groups(moved), fam_start_step=1, lr=0.1)
    on_gpu.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    ema = on_gpu.state[moved.ff.weight]["band_ema"]
    assert ema.device.type == "cuda" and ema.dtype == torch.float64
    _steps(optimizer, list(model.parameters()), 3, seed=1)
    _steps(on_gpu, list(moved.parameters()), 3, seed=1)
    for a, b in zip(model.parameters(), moved.parameters(), strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-4, atol=1e-5)
    assert on_gpu.effective_momenta() == optimizer.effective_momenta()


@pytest.mark.gpu
@pytest.mark.parametrize("sampling", ["ordered", "random"])
def test_on_a_gpu_a_step_matches_the_cpu_and_never_waits_for_the_device(sampling):
    model = _model()
    on_gpu = copy.deepcopy(model).cuda()
    params, gpu_params = list(model.parameters()), list(on_gpu.parameters())
    settings = dict(fam_start_step=1, lr=0.1, sampling=sampling)
    cpu_opt = FAMOptimizer(get_parameter_groups(model), **settings)
    gpu_opt = FAMOptimizer(get_parameter_groups(on_gpu), **settings)
    generator = torch.Generator().manual_seed(0)
    grads = [
        [crafted_gradient(tuple(p.shape), "noise", generator) for p in params] for _ in range(6)
    ]
    on_device = [[g.cuda() for g in step] for step in grads]  # copied before any check
    for i, (host, device) in enumerate(zip(grads, on_device, strict=True)):
        for p, g in zip(params, host, strict=True):
            p.grad = g
        for p, g in zip(gpu_params, device, strict=True):
            p.grad = g
        cpu_opt.step()
        if i < 2:  # the second step builds the plan: its tables go to the device once
            gpu_opt.step()
            continue
        torch.cuda.set_sync_debug_mode("error")  # any host synchronisation raises
        try:
            gpu_opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for a, b in zip(params, gpu_params, strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-4, atol=1e-5)
    assert gpu_opt.effective_momenta() == cpu_opt.effective_momenta()


def test_cache_keys_hold_their_objects_and_compare_them_by_identity():
    a, b = torch.zeros(3), torch.zeros(3)
    assert Same(a) == Same(a) and hash(Same(a)) == hash(Same(a))
    assert Same(a) != Same(b)  # equal values, other objects
    assert (0, Same(a)) == (0, Same(a)) and (0, Same(a)) != (0, Same(b))
    key = Same(torch.zeros(3))
    held = weakref.ref(key.obj)
    gc.collect()
    assert held() is key.obj  # its id cannot pass to a new object while the key lives


def test_the_plan_is_reused_until_the_analysed_parameters_change():
    params = [nn.Parameter(torch.randn(400)), nn.Parameter(torch.randn(500))]
    optimizer = FAMOptimizer(params, fam_start_step=0, lr=0.1)
    _steps(optimizer, params, 2)
    plan = optimizer._plan
    _steps(optimizer, params, 3)
    assert optimizer._plan is plan
    replacement = [nn.Parameter(torch.randn(400)), params[1]]
    optimizer.param_groups[0]["params"] = replacement
    _steps(optimizer, replacement, 1)
    assert optimizer._plan is not plan
    ema = optimizer.state[replacement[0]]["band_ema"]
    assert ema.data_ptr() == optimizer._plan.ema[0].data_ptr()
