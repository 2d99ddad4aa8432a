"""Who takes part in a FAM step: each group's parameters with gradients, and which are analysed.

A layout is made by one pass over the parameters and reused by later steps while what it depends
on holds (see :func:`step_layout`), so a steady-state step does not walk the groups in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from fambench.optim.fam.keys import Same

__all__ = ["GroupWork", "StepLayout", "group_signature", "step_layout"]


@dataclass
class GroupWork:
    """One parameter group's part of a step: its parameters with gradients, and which of them
    are analysed (``analysed``) or keep the group's fixed momentum (``fixed``)."""

    index: int
    params: list[Tensor] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    analysed: list[int] = field(default_factory=list)
    fixed: list[int] = field(default_factory=list)


@dataclass
class StepLayout:
    """Who takes part in a step and how; reused by later steps while ``signature`` holds
    (None: made for this step only)."""

    signature: tuple | None
    groups: list[GroupWork]
    row_key: tuple  # the plan's key: each group's signature, then its analysed params (Same)
    row_params: list[Tensor]
    row_states: list[dict[str, Any]]
    row_groups: list[int]  # group index of each analysed param


def step_layout(
    param_groups: list[dict[str, Any]],
    state: dict[Tensor, dict[str, Any]],
    previous: StepLayout | None,
    tracing: bool,
) -> tuple[StepLayout, list[list[Tensor]]]:
    """This step's layout and each of its groups' gradients.

    The ``previous`` layout is reused while it still holds: the same groups and settings, every
    parameter with a dense gradient, and (found when it was made) no parameter still waiting for
    ``fam_start_step``. Otherwise one pass over the parameters makes a new one, creating the state
    of parameters seen for the first time.
    """
    signature = _step_signature(param_groups, state, tracing)
    if previous is not None and previous.signature == signature:
        grads_by_group = [[p.grad for p in work.params] for work in previous.groups]
        if not any(g is None or g.is_sparse for grads in grads_by_group for g in grads):
            return previous, grads_by_group
    return _make_layout(param_groups, state, tracing)


def group_signature(index: int, group: dict[str, Any]) -> tuple:
    """The settings of a group that decide how its parameters are analysed."""
    handler = group["handler"]
    return (
        index,
        handler if isinstance(handler, str) else Same(handler),
        group["layer_boost"],
        group["n_bands"],
        group["alpha"],
        group["beta"],
        group["eps"],
        group["adaptive"],
        group["sampling"],
    )


def _step_signature(
    param_groups: list[dict[str, Any]], state: dict[Tensor, dict[str, Any]], tracing: bool
) -> tuple:
    """What a step layout depends on besides the gradients."""
    return (
        tracing,
        len(state),
        tuple(
            (
                group_signature(gi, group),
                Same(group["params"]),
                len(group["params"]),
                group["fam_start_step"],
                group["min_size"],
            )
            for gi, group in enumerate(param_groups)
        ),
    )


def _make_layout(
    param_groups: list[dict[str, Any]], state: dict[Tensor, dict[str, Any]], tracing: bool
) -> tuple[StepLayout, list[list[Tensor]]]:
    """One pass over the parameters: who takes part in this step and who is analysed."""
    works: list[GroupWork] = []
    grads_by_group: list[list[Tensor]] = []
    row_key: list[Any] = []
    row_params: list[Tensor] = []
    row_states: list[dict[str, Any]] = []
    row_groups: list[int] = []
    reusable = True
    for gi, group in enumerate(param_groups):
        work, grads, complete = _group_work(gi, group, state, tracing)
        reusable = reusable and complete
        if not work.params:
            continue
        if work.analysed:
            row_key.append(group_signature(gi, group))
            for j in work.analysed:
                row_key.append(Same(work.params[j]))
                row_params.append(work.params[j])
                row_states.append(work.states[j])
                row_groups.append(gi)
        works.append(work)
        grads_by_group.append(grads)
    layout = StepLayout(
        # len(state) may have grown in this pass: the signature of the next step.
        signature=_step_signature(param_groups, state, tracing) if reusable else None,
        groups=works,
        row_key=tuple(row_key),
        row_params=row_params,
        row_states=row_states,
        row_groups=row_groups,
    )
    return layout, grads_by_group


def _group_work(
    gi: int, group: dict[str, Any], state: dict[Tensor, dict[str, Any]], tracing: bool
) -> tuple[GroupWork, list[Tensor], bool]:
    """Group ``gi``'s part of this step, its gradients, and whether a later step may reuse it
    (False while a parameter lacks a gradient or still waits for ``fam_start_step``)."""
    work = GroupWork(gi)
    grads: list[Tensor] = []
    reusable = True
    analyse = group["adaptive"] or tracing
    start, min_size = group["fam_start_step"], group["min_size"]
    for p in group["params"]:
        grad = p.grad
        if grad is None:
            reusable = False
            continue
        if grad.is_sparse:
            raise RuntimeError(
                "FAMOptimizer does not support sparse gradients "
                f"(param group {gi}, shape {tuple(p.shape)}); use a dense optimizer"
            )
        param_state = state[p]
        if not param_state:
            param_state["step"] = 0
            param_state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if analyse and p.numel() > min_size:
            if param_state["step"] + 1 > start:
                work.analysed.append(len(work.params))
            else:
                reusable = False  # it joins the analysis at a later step
        work.params.append(p)
        work.states.append(param_state)
        grads.append(grad)
    chosen = set(work.analysed)
    work.fixed = [j for j in range(len(work.params)) if j not in chosen]
    return work, grads, reusable
