"""FAMOptimizer: Frequency-Adaptive Momentum, batched and sync-free.

Update for every parameter ``p`` with gradient ``g`` (per group settings)::

    g <- g + weight_decay * p                      (p.grad itself is left untouched)
    m <- a * m + (1 - a) * g                       (an EMA, i.e. dampened momentum)
    p <- p - lr * m

``a`` is the group's ``alpha`` until the parameter's own step count exceeds ``fam_start_step``.
After that, for tensors with more than ``min_size`` entries, a sample of ``g`` is Fourier
transformed, its normalised magnitude spectrum is summed into bands by the group's handler, an
EMA (coefficient ``beta``, started at the first observation) of those band shares is kept in
``state["band_ema"]``, and the handler maps the EMA to ``a``.

The sample is the whole flattened gradient when ``numel <= 10000`` (results then equal the
specification's algorithm to float tolerance); larger tensors are sampled in order or at random
(``sampling``, see :mod:`fambench.optim.fam.plan`).

Speed: ``step()`` performs no host synchronisation and no Python loop over bands. Who takes part
in a step is laid out once and reused while the groups, their settings and the set of gradients
stay the same (:mod:`~fambench.optim.fam.layout`); the analysis of all analysed tensors is a
plan built once per set of them (:mod:`~fambench.optim.fam.plan`) and run as a few batched
operations (:mod:`~fambench.optim.fam.analysis`); updates use ``torch._foreach_*`` kernels.

Trace: FAMOptimizer is a :class:`~fambench.optim.tracing.TraceWriter`. Once tracing is on, every
``TRACE_EVERY`` steps of each analysed tensor it records the band EMAs and the momentum in
``<directory>/fam_trace.jsonl`` (:mod:`~fambench.optim.fam.trace`). A trainer turns it on with
:meth:`FAMOptimizer.start_trace`; the specification's constructor arguments (see the class) do
the same.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from fambench.optim.fam.analysis import momentum_weights, seed_generator
from fambench.optim.fam.layout import StepLayout, step_layout
from fambench.optim.fam.plan import Plan, build_plan, ema_dtype
from fambench.optim.fam.settings import (
    infer_handler_name,
    validate_group,
    validate_trace_arguments,
)
from fambench.optim.fam.trace import TRACE_FILE, PendingRecords, prepare_trace_file

__all__ = ["FAMOptimizer"]


class FAMOptimizer(Optimizer):
    """Frequency-Adaptive Momentum with per-group frequency handlers.

    Args:
        params: parameters or parameter groups. Groups may set ``lr``, ``alpha``, ``beta``,
            ``eps``, ``weight_decay``, ``n_bands``, ``fam_start_step``, ``min_size``,
            ``layer_boost``, ``sampling``, ``adaptive`` and ``handler`` (a registered name or a
            :class:`FrequencyHandler`). A group with ``names`` (or torch's ``param_names``) and
            no ``handler`` gets one inferred from the names (:func:`infer_handler_name`).
        lr: learning rate; the step is ``lr * m`` with ``m`` an EMA of gradients.
        alpha: base momentum (EMA coefficient of the gradient average).
        beta: EMA coefficient of the band shares.
        eps: added to the spectrum's total before normalising.
        weight_decay: L2 penalty added to the gradient.
        n_bands: number of frequency bands.
        fam_start_step: analysis starts once a parameter's step count exceeds this.
        layer_boost: True → each group uses its own handler; False → every group uses the
            'default' handler.
        min_size: only tensors with more entries are analysed.
        debug: turn the trace on from the start: per-parameter band EMAs and momenta are
            recorded every 10 steps in ``<debug_dir>/fam_trace.jsonl`` (written every
            ``debug_interval`` steps, on :meth:`flush_trace` and on :meth:`close`: the records
            since the last write are lost unless one of them is called).
        debug_dir: directory of the trace file.
        debug_interval: steps between writes of the trace file.
        sampling: ``"ordered"`` or ``"random"``, how tensors with more than 10000 entries are
            sampled (see :mod:`fambench.optim.fam.plan`).
        seed: seed of the private generator used by ``sampling="random"``.
        adaptive: False gives the fixed-momentum twin (``fam-fixed``): same update, momentum
            always ``alpha``; the analysis then runs only when tracing is on, for the record.

    ``debug``, ``debug_dir`` and ``debug_interval`` are the specification's names for the trace
    and are kept as they are. A trainer uses the :class:`~fambench.optim.tracing.TraceWriter`
    capability instead: :meth:`start_trace` (which also drops the records an interrupted run left
    after its checkpoint) and :meth:`flush_trace`, then :meth:`close` when training ends. Nothing
    is written on garbage collection: a finaliser doing file I/O runs at an unknown time, maybe
    during interpreter shutdown, and hides its errors.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        alpha: float = 0.9,
        beta: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        n_bands: int = 8,
        fam_start_step: int = 100,
        layer_boost: bool = True,
        min_size: int = 256,
        debug: bool = False,
        debug_dir: str = "./fam_debug",
        debug_interval: int = 1000,
        *,
        sampling: str = "ordered",
        seed: int = 0,
        adaptive: bool = True,
    ) -> None:
        validate_trace_arguments(debug, debug_dir, debug_interval)
        defaults = dict(
            lr=lr,
            alpha=alpha,
            beta=beta,
            eps=eps,
            weight_decay=weight_decay,
            n_bands=n_bands,
            fam_start_step=fam_start_step,
            layer_boost=layer_boost,
            min_size=min_size,
            sampling=sampling,
            seed=seed,
            adaptive=adaptive,
        )
        # The trace: directory (None = off) and steps between writes.
        self._trace_dir: str | None = os.fspath(debug_dir) if debug else None
        self._trace_interval = debug_interval
        self._step_calls = 0
        self._reset_runtime()
        super().__init__(params, defaults)

    # ---------------------------------------------------------------- construction & state

    def _reset_runtime(self) -> None:
        """Caches that are rebuilt on demand (never pickled, never in the state dict)."""
        self._plan: Plan | None = None
        self._layout: StepLayout | None = None
        self._generator: torch.Generator | None = None
        self._trace_records = PendingRecords()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; tags it with a handler and validates its settings."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        index = len(self.param_groups) - 1
        try:
            if "handler" not in group:
                names = group.get("names") or group.get("param_names") or []
                group["handler"] = infer_handler_name(names)
            validate_group(group, index)
        except ValueError:
            self.param_groups.pop()
            raise
        self._plan = self._layout = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(
            _trace_dir=self._trace_dir,
            _trace_interval=self._trace_interval,
            _step_calls=self._step_calls,
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # load_state_dict() also lands here with only "state" and "param_groups".
        self.__dict__.setdefault("_trace_dir", None)
        self.__dict__.setdefault("_trace_interval", 1000)
        self.__dict__.setdefault("_step_calls", 0)
        if "_trace_records" not in self.__dict__:
            self._reset_runtime()
        self._plan = self._layout = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict; band EMAs keep their own precision (torch would cast them)."""
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, param in zip(saved_ids, params, strict=True):
            saved = state_dict["state"].get(saved_id)
            if saved is not None and "band_ema" in saved:
                self.state[param]["band_ema"] = saved["band_ema"].to(
                    device=param.device, dtype=ema_dtype(param.device), copy=True
                )
        self._plan = self._layout = None

    # -------------------------------------------------------------------------------- step

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimisation step; ``closure`` re-evaluates the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._step_calls += 1
        tracing = self._trace_dir is not None
        layout, grads_by_group = step_layout(self.param_groups, self.state, self._layout, tracing)
        self._layout = layout
        for work in layout.groups:
            for state in work.states:
                state["step"] += 1

        # g <- g + weight_decay * p, then m <- a * m + (1 - a) * g where a is the group's alpha.
        row_grads: list[Tensor] = []
        updates: list[tuple[list[Tensor], list[Tensor], float]] = []
        for work, grads in zip(layout.groups, grads_by_group, strict=True):
            group = self.param_groups[work.index]
            moms = [state["exp_avg"] for state in work.states]
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, work.params, alpha=group["weight_decay"])
            if work.analysed:
                row_grads.extend(grads[j] for j in work.analysed)
                fixed_g = [grads[j] for j in work.fixed]
                fixed_m = [moms[j] for j in work.fixed]
            else:
                fixed_g, fixed_m = grads, moms
            if fixed_m:
                torch._foreach_lerp_(fixed_m, fixed_g, 1.0 - group["alpha"])
            updates.append((work.params, moms, group["lr"]))

        if layout.row_params:  # the same for the analysed rows, each with its own a
            weights = self._analyse(layout, row_grads, tracing)
            row_moms = [state["exp_avg"] for state in layout.row_states]
            torch._foreach_lerp_(row_moms, row_grads, weights)

        for params, moms, lr in updates:  # p <- p - lr * m
            torch._foreach_add_(params, moms, alpha=-lr)

        if tracing and self._step_calls % self._trace_interval == 0:
            self.flush_trace()
        return loss

    def _analyse(self, layout: StepLayout, grads: list[Tensor], tracing: bool) -> list[Tensor]:
        """``1 - a`` of the analysed rows as 0-dim tensors, ``a`` their effective momenta."""
        params = layout.row_params
        plan = self._plan
        if plan is None or plan.key != layout.row_key or plan.device != params[0].device:
            plan = build_plan(
                layout.row_key, params, layout.row_groups, self.param_groups, self.state
            )
            self._plan = plan
        steps = [state["step"] for state in layout.row_states]
        generator = None
        if plan.uses_random:
            seed = int(self.defaults.get("seed", 0))
            generator = self._generator = seed_generator(self._generator, seed, steps[0])
        weights = momentum_weights(plan, grads, generator)
        if tracing:
            self._trace_records.take(plan.meta, steps, plan.ema, plan.momentum)
        return weights

    # ------------------------------------------------------------------------------ trace

    def start_trace(self, directory: str | os.PathLike[str], resume_step: int = 0) -> str | None:
        """Begin writing the trace into ``directory``; returns ``TRACE_FILE`` (its name there).

        Records of ``<directory>/fam_trace.jsonl`` after ``resume_step`` (written by an
        interrupted run after its checkpoint) and a last line cut short are dropped first, so
        the resumed run appends exactly what an uninterrupted one would have written; a fresh
        run (``resume_step=0``) thus starts from an empty trace. The file is cut in place.

        Returns None and turns nothing on when no group is adaptive (``fam-fixed``): its trace
        would run the frequency analysis the ablation exists to leave out, and charge it to its
        wall-clock.
        """
        if not any(group["adaptive"] for group in self.param_groups):
            return None
        trace_dir = os.fspath(directory)
        if not trace_dir:
            raise ValueError("start_trace needs a directory")
        if self._trace_records:
            self.flush_trace()  # pending records belong to the previous trace
        prepare_trace_file(trace_dir, resume_step)
        self._trace_dir = trace_dir
        return TRACE_FILE

    def flush_trace(self) -> None:
        """Append the pending trace records to ``<directory>/fam_trace.jsonl`` now."""
        self._trace_records.write(self._trace_dir)

    def close(self) -> None:
        """Write any pending trace records; whoever owns the optimizer calls this when training
        ends (or leaves a ``with FAMOptimizer(...)`` block). Stepping on after it is allowed."""
        self.flush_trace()

    def __enter__(self) -> FAMOptimizer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def effective_momenta(self) -> dict[str, float]:
        """Momentum of each analysed parameter at the last step (waits for the device)."""
        plan = self._plan
        if plan is None or plan.momentum is None:
            return {}
        values = plan.momentum.tolist()
        return {meta[0]: value for meta, value in zip(plan.meta, values, strict=True)}
