"""The training step never reads a tensor back to the host: loss and gradient norm wait on
the device until the log interval ends, then come back in one read."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

import fambench
import fambench.training.plan as plan_module
from fambench.training import run_training
from fambench.workloads import get_preset

FAMBENCH = str(Path(fambench.__file__).resolve().parent)
DATA_SIDE = (f"{FAMBENCH}/data/", f"{FAMBENCH}/workloads/data.py")  # host-side batch making
CONVERSIONS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


class ReadBacks:
    """Counts tensor-to-Python conversions made by fambench's own code (not torch's, not the
    host-side data pipeline), by the step number they happened at."""

    def __init__(self) -> None:
        self.by_step: dict[int, list[str]] = {}
        self.step = 0

    def wrap(self, name, original):
        def counted(tensor, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(FAMBENCH) and not caller.startswith(DATA_SIDE):
                where = f"{Path(caller).name}:{sys._getframe(1).f_lineno}"
                self.by_step.setdefault(self.step, []).append(f"{name} at {where}")
            return original(tensor, *args, **kwargs)

        return counted


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "fam-fixed", "fam"])
def test_a_step_reads_nothing_back_between_log_intervals(optimizer, smoke, monkeypatch):
    preset = dataclasses.replace(get_preset("smoke"), log_every=5, eval_every=30, steps=30)
    monkeypatch.setattr(plan_module, "get_preset", lambda name: preset)
    counter = ReadBacks()
    for name in CONVERSIONS:
        monkeypatch.setattr(torch.Tensor, name, counter.wrap(name, getattr(torch.Tensor, name)))
    import fambench.training.step as step_module

    real_step = step_module.train_step

    def numbered_step(run, t0):
        counter.step = run.state.step + 1
        try:
            return real_step(run, t0)
        finally:
            counter.step = 0  # outside a step: evaluation, checkpoints

    monkeypatch.setattr("fambench.training.loop.train_step", numbered_step)
    outcome = run_training(smoke(optimizer))
    assert outcome.status == "completed"
    inside = {step: calls for step, calls in counter.by_step.items() if step}
    # Only the read-back at the end of each log interval (steps 5, 10, ..., 30), once each.
    assert sorted(inside) == [5, 10, 15, 20, 25, 30]
    assert all(
        len(calls) == 1 and calls[0].startswith("tolist at interval.py")
        for calls in inside.values()
    ), inside


def test_the_ctc_loss_gets_its_lengths_from_the_host(smoke, monkeypatch):
    """torch's CTC loss copies device lengths back to the host (a sync per step on a GPU): the
    step gives it the batch's host lengths instead. On the CPU both are host tensors, so the
    check is which ones: none of the step's device copies may reach the loss as a length."""
    import fambench.training.step as step_module

    copies: list[torch.Tensor] = []
    real_copy, real_loss = step_module.host_to_device, step_module.ctc_loss_sum

    def recorded_copy(tensor, device):
        copies.append(real_copy(tensor, device).clone())  # a new tensor, as a device copy is
        return copies[-1]

    lengths: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recorded_loss(log_probs, out_lens, targets, target_lens):
        lengths.append((out_lens, target_lens))
        return real_loss(log_probs, out_lens, targets, target_lens)

    monkeypatch.setattr(step_module, "host_to_device", recorded_copy)
    monkeypatch.setattr(step_module, "ctc_loss_sum", recorded_loss)
    outcome = run_training(smoke("sgd", steps=3))
    assert outcome.status == "completed" and len(lengths) == 3
    device_copies = {id(t) for t in copies}
    for out_lens, target_lens in lengths:
        assert id(out_lens) not in device_copies and id(target_lens) not in device_copies
        assert out_lens.device.type == target_lens.device.type == "cpu"
        assert out_lens.dtype == torch.long and int(out_lens.min()) > 0
