"""FAMOptimizer (batched) against the plain per-tensor reference of the specification."""

from __future__ import annotations

import pytest
import torch
from optim_helpers import GRADIENT_MODES, crafted_gradient

from fambench.optim import FAMOptimizer
from fambench.optim.reference import ReferenceFAM

# min_size=256 < numel <= 10000: the specification analyses the whole flattened gradient.
FULL_SHAPES = [(300,), (301,), (24, 25), (13, 7, 11), (144, 1, 31), (10000,), (257,), (100,)]
LARGE_SHAPES = [(200, 300), (90, 130, 1), (40, 30, 3, 3), (50000,), (3, 5000)]


def _twins(shapes, groups_spec, dtype=torch.float32, seed=0):
    """Equal parameters for FAM and the reference, split into groups like ``groups_spec``."""
    generator = torch.Generator().manual_seed(seed)
    fam_groups, ref_groups, pairs = [], [], []
    for spec in groups_spec:
        fam_params, ref_params = [], []
        for shape in shapes:
            value = torch.randn(shape, generator=generator).to(dtype)
            fam_params.append(torch.nn.Parameter(value.clone()))
            ref_params.append(torch.nn.Parameter(value.clone()))
            pairs.append((fam_params[-1], ref_params[-1]))
        fam_groups.append({**spec, "params": fam_params})
        ref_groups.append({**spec, "params": ref_params})
    return fam_groups, ref_groups, pairs


def _run_lockstep(fam, ref, pairs, steps, seed=1, drop=False, rtol=2e-5):
    """Feed both optimizers the same crafted gradients; compare everything at every step."""
    generator = torch.Generator().manual_seed(seed)
    modes: dict[int, object] = {}
    seen_momenta = set()
    for step in range(steps):
        for index, (fam_param, ref_param) in enumerate(pairs):
            if step % 6 == 0:
                choice = torch.randint(len(GRADIENT_MODES), (1,), generator=generator).item()
                modes[index] = GRADIENT_MODES[choice]
            if drop and step % (index + 3) == 1:  # each parameter misses a different count
                fam_param.grad = ref_param.grad = None
                continue
            grad = crafted_gradient(tuple(fam_param.shape), modes[index], generator)
            fam_param.grad = grad.to(fam_param.dtype)
            ref_param.grad = grad.to(ref_param.dtype).clone()
        fam.step()
        ref.step()
        momenta = fam.effective_momenta()
        for index, (fam_param, ref_param) in enumerate(pairs):
            scale = ref_param.detach().abs().max().item() + 1e-12
            torch.testing.assert_close(
                fam_param.detach() / scale,
                ref_param.detach() / scale,
                rtol=0,
                atol=rtol,
                msg=lambda m, i=index, s=step: f"param {i} differs at step {s}: {m}",
            )
            ref_state = ref.state[ref_param]
            if fam_param.grad is None:
                continue
            if ref_state.get("freq_history"):
                history = ref_state["freq_history"]
                expected = torch.tensor(
                    [history[f"band_{b}"] for b in range(len(history))], dtype=torch.float64
                )
                got = fam.state[fam_param]["band_ema"].cpu().double()
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
                name = f"group{_group_of(fam, fam_param)}.param{_index_in_group(fam, fam_param)}"
                assert momenta[name] == ref.last_momentum[id(ref_param)], (name, step)
                seen_momenta.add(round(momenta[name], 6))
            else:
                assert "band_ema" not in fam.state[fam_param]
    return seen_momenta


def _group_of(optimizer, param):
    return next(
        i for i, g in enumerate(optimizer.param_groups) if any(p is param for p in g["params"])
    )


def _index_in_group(optimizer, param):
    group = optimizer.param_groups[_group_of(optimizer, param)]
    return next(i for i, p in enumerate(group["params"]) if p is param)


@pytest.mark.parametrize(
    ("handler", "n_bands", "expected_momenta"),
    [
        ("default", 8, {0.9, 0.95}),
        ("default", 5, {0.9, 0.95}),
        ("conv", 10, {0.9, 0.95, 0.97}),
        ("conv", 6, {0.9, 0.95, 0.97}),
        ("attention", 12, {0.85, 0.9, 0.98}),
        ("attention", 7, {0.85, 0.9, 0.98}),
        ("embedding", 8, {0.9, 0.98}),
    ],
)
def test_full_flatten_regime_matches_reference(handler, n_bands, expected_momenta):
    spec = {"handler": handler, "n_bands": n_bands}
    fam_groups, ref_groups, pairs = _twins(FULL_SHAPES, [spec])
    settings = dict(lr=0.05, beta=0.6, fam_start_step=3, min_size=256, weight_decay=0.01)
    fam = FAMOptimizer(fam_groups, **settings)
    ref = ReferenceFAM(ref_groups, **settings)
    seen = _run_lockstep(fam, ref, pairs, steps=60)
    assert expected_momenta <= seen  # every branch of the handler's rule was exercised


def test_many_groups_with_their_own_settings_match_reference():
    specs = [
        {"handler": "conv", "n_bands": 10, "beta": 0.7},
        {"handler": "attention", "n_bands": 12, "alpha": 0.92, "eps": 1e-6, "beta": 0.8},
        {"handler": "embedding", "n_bands": 8, "alpha": 0.95, "lr": 0.02, "weight_decay": 0.05},
        {"handler": "default", "n_bands": 4, "weight_decay": 0.0, "fam_start_step": 10},
        {"handler": "default", "n_bands": 3, "min_size": 400, "beta": 0.99},
    ]
    fam_groups, ref_groups, pairs = _twins(FULL_SHAPES[:5], specs, seed=3)
    settings = dict(lr=0.05, beta=0.5, fam_start_step=2, min_size=256, weight_decay=0.001)
    fam = FAMOptimizer(fam_groups, **settings)
    ref = ReferenceFAM(ref_groups, **settings)
    seen = _run_lockstep(fam, ref, pairs, steps=50, seed=4)
    assert len(seen) >= 5


def test_missing_gradients_keep_per_parameter_step_counts_like_reference():
    fam_groups, ref_groups, pairs = _twins(FULL_SHAPES, [{"handler": "conv", "n_bands": 10}])
    settings = dict(lr=0.05, beta=0.7, fam_start_step=4, min_size=256)
    fam = FAMOptimizer(fam_groups, **settings)
    ref = ReferenceFAM(ref_groups, **settings)
    _run_lockstep(fam, ref, pairs, steps=40, drop=True)
    steps = {fam.state[p]["step"] for p, _ in pairs}
    assert len(steps) > 1  # parameters really did skip different steps
    for fam_param, ref_param in pairs:
        assert fam.state[fam_param]["step"] == ref.state[ref_param]["step"]


@pytest.mark.parametrize("layer_boost", [False, True])
def test_layer_boost_chooses_between_group_handlers_and_default(layer_boost):
    specs = [{"handler": "conv", "n_bands": 10}, {"handler": "attention", "n_bands": 12}]
    fam_groups, ref_groups, pairs = _twins(FULL_SHAPES[:4], specs, seed=5)
    settings = dict(lr=0.05, beta=0.6, fam_start_step=2, layer_boost=layer_boost)
    fam = FAMOptimizer(fam_groups, **settings)
    ref = ReferenceFAM(ref_groups, **settings)
    seen = _run_lockstep(fam, ref, pairs, steps=40, seed=6)
    handlers = {handler for _, _, handler, _ in fam._plan.meta}
    if layer_boost:
        assert handlers == {"conv", "attention"}
        assert seen - {0.9, 0.95}  # conv's 0.97 or attention's 0.85/0.98 occur
    else:
        assert handlers == {"default"}
        assert seen == {0.9, 0.95}  # only the default rule's values


def test_float64_parameters_match_reference():
    fam_groups, ref_groups, pairs = _twins(
        FULL_SHAPES[:5], [{"handler": "attention", "n_bands": 12}], dtype=torch.float64, seed=7
    )
    settings = dict(lr=0.05, beta=0.6, fam_start_step=2)
    fam = FAMOptimizer(fam_groups, **settings)
    ref = ReferenceFAM(ref_groups, **settings)
    _run_lockstep(fam, ref, pairs, steps=30, seed=8, rtol=1e-9)
    assert all(fam.state[p]["exp_avg"].dtype == torch.float64 for p, _ in pairs)


@pytest.mark.parametrize("handler", ["default", "conv", "attention", "embedding"])
def test_ordered_sampling_of_large_tensors_matches_plain_indexing(handler):
    fam_groups, ref_groups, pairs = _twins(
        LARGE_SHAPES, [{"handler": handler, "n_bands": 10}], seed=9
    )
    settings = dict(lr=0.05, beta=0.6, fam_start_step=2, sampling="ordered")
    fam = FAMOptimizer(fam_groups, **settings)
    ref = ReferenceFAM(ref_groups, **settings)
    _run_lockstep(fam, ref, pairs, steps=20, seed=10)


def test_non_contiguous_gradients_are_sampled_like_contiguous_ones():
    shapes = [(300, 200), (40, 30, 3, 3), (50000,), (64, 64)]
    fam_groups, ref_groups, pairs = _twins(shapes, [{"handler": "default"}], seed=11)
    fam = FAMOptimizer(fam_groups, lr=0.05, fam_start_step=0, beta=0.5)
    ref = ReferenceFAM(ref_groups, lr=0.05, fam_start_step=0, beta=0.5)
    generator = torch.Generator().manual_seed(12)
    for _ in range(3):
        for fam_param, ref_param in pairs:
            grad = crafted_gradient(tuple(fam_param.shape), "smooth", generator)
            # Same values, transposed storage (or every other element for 1-D).
            if grad.dim() >= 2:
                odd = grad.transpose(0, 1).contiguous().transpose(0, 1)
            else:
                odd = torch.stack([grad, grad], dim=1)[:, 0]
            assert not odd.is_contiguous()
            fam_param.grad, ref_param.grad = odd, grad.clone()
        fam.step()
        ref.step()
        for fam_param, ref_param in pairs:
            torch.testing.assert_close(fam_param, ref_param, rtol=1e-5, atol=1e-6)
