"""WarmupHoldCosine (alias FAMScheduler, FAMScheduler2): warmup → hold → cosine, any optimizer."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from fambench.optim import FAMOptimizer, FAMScheduler, FAMScheduler2, WarmupHoldCosine, schedules


def _optimizer(kind: str = "sgd", lrs=(0.1, 0.02)):
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in lrs]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=True)]
    if kind == "fam":
        return FAMOptimizer(groups)
    return torch.optim.SGD(groups, lr=0.1, momentum=0.9)


def _run(scheduler, optimizer, steps):
    history = []
    for _ in range(steps):
        history.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return history


@pytest.mark.parametrize("kind", ["sgd", "fam"])
def test_warmup_hold_cosine_values(kind):
    optimizer = _optimizer(kind)
    scheduler = WarmupHoldCosine(
        optimizer,
        warmup_steps=10,
        total_steps=50,
        decay_start_step=20,
        warmup_start_lr=1e-3,
        eta_min=1e-4,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = _run(scheduler, optimizer, 60)
    for step, lrs in enumerate(history):
        for lr, base in zip(lrs, (0.1, 0.02), strict=True):
            if step < 10:
                expected = 1e-3 + (base - 1e-3) * step / 10
            elif step < 20:
                expected = base
            else:
                progress = min(1.0, (step - 20) / 30)
                expected = 1e-4 + (base - 1e-4) * (1 + math.cos(math.pi * progress)) / 2
            assert lr == pytest.approx(expected, rel=1e-12), (step, lr, expected)
    assert history[50] == pytest.approx([1e-4, 1e-4])
    assert history[59] == pytest.approx([1e-4, 1e-4])  # stays at eta_min after total_steps


def test_the_specifications_names_are_aliases_of_the_same_class():
    assert FAMScheduler is WarmupHoldCosine and FAMScheduler2 is WarmupHoldCosine
    assert {"FAMScheduler", "FAMScheduler2", "WarmupHoldCosine"} <= set(schedules.__all__)
    scheduler = FAMScheduler(_optimizer(), warmup_steps=2, total_steps=4)
    assert type(scheduler) is WarmupHoldCosine


def test_decay_start_defaults_to_warmup_end():
    optimizer = _optimizer(lrs=(1.0,))
    scheduler = FAMScheduler2(optimizer=optimizer, warmup_steps=4, total_steps=8, eta_min=0.0)
    history = [lrs[0] for lrs in _run(scheduler, optimizer, 9)]
    assert history[4] == pytest.approx(1.0)
    assert history[6] == pytest.approx(0.5)
    assert history[8] == pytest.approx(0.0)


def test_state_dict_round_trip():
    optimizer = _optimizer()
    scheduler = WarmupHoldCosine(optimizer, warmup_steps=5, total_steps=40)
    _run(scheduler, optimizer, 12)
    restored_optimizer = _optimizer()
    restored = WarmupHoldCosine(restored_optimizer, warmup_steps=5, total_steps=40)
    restored_optimizer.load_state_dict(optimizer.state_dict())
    restored.load_state_dict(scheduler.state_dict())
    assert _run(restored, restored_optimizer, 10) == _run(scheduler, optimizer, 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup_steps": 10, "total_steps": 10}, "total_steps \\(10\\) must exceed warmup_steps"),
        ({"warmup_steps": -1}, "warmup_steps must be a non-negative integer"),
        ({"total_steps": 2.5}, "total_steps must be a non-negative integer"),
        ({"warmup_steps": 10, "decay_start_step": 5}, "decay_start_step \\(5\\) must be in"),
        ({"warmup_steps": 10, "total_steps": 20, "decay_start_step": 20}, "must be in"),
        ({"eta_min": -1e-3}, "eta_min must be >= 0"),
        ({"warmup_start_lr": float("nan")}, "warmup_start_lr must be >= 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=f"^WarmupHoldCosine: .*{message}"):
        FAMScheduler(_optimizer(), **kwargs)


def test_errors_name_a_subclass():
    class Shorter(WarmupHoldCosine):
        pass

    with pytest.raises(ValueError, match="^Shorter: warmup_steps must be"):
        Shorter(_optimizer(), warmup_steps=-1)
