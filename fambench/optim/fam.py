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
specification's algorithm to float tolerance). Larger tensors are sampled:

* ``sampling="ordered"`` (default): 64 evenly spaced rows (dim 0), each with its first 64 entries
  in memory order (the first 64 columns of a matrix; for a conv kernel the taps of its leading
  input channels); 1-D tensors: 8 evenly spaced runs of 125 entries. The order of entries is
  kept, so the spectrum reflects real structure.
* ``sampling="random"``: the specification's 64 random rows x 64 random columns, or 1000 random
  entries of a 1-D tensor, drawn from a private generator re-seeded from ``seed`` and the step
  count, so runs are reproducible, resumable from a state dict, and the global RNG is untouched.

Speed: ``step()`` performs no host synchronisation and no Python loop over bands. The samples of
all analysed tensors are copied with one ``_foreach_copy_`` into a buffer where those of one
length form one batch (one ``rfft`` per length, whose squared parts go to one shared buffer:
the magnitudes are then a single pass), band sums are one matrix product per length with a
cached 0/1 partition matrix, handler rules run on the whole batch, and updates use
``torch._foreach_*`` kernels. The layout of this work and its buffers (the "plan") are built
once per set of analysed tensors and reused; so is the list of who takes part in a step, while
the groups and their settings stay the same and every parameter has a gradient.

Trace: FAMOptimizer is a :class:`~fambench.optim.tracing.TraceWriter`. Once tracing is on, every
``TRACE_EVERY`` steps of each analysed tensor it records the band EMAs and the momentum in
``<directory>/fam_trace.jsonl``. A trainer turns it on with :meth:`FAMOptimizer.start_trace`;
the specification's constructor arguments (see the class) do the same.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from fambench.optim.devices import host_to_device
from fambench.optim.handlers import FrequencyHandler, get_handler
from fambench.optim.tracing import truncate_trace

__all__ = ["FAMOptimizer", "infer_handler_name"]

logger = logging.getLogger(__name__)

FULL_ANALYSIS_MAX_NUMEL = 10_000
SAMPLE_ROWS = 64
SAMPLE_COLS = 64
SAMPLE_1D = 1000
RUNS_1D = 8
TRACE_EVERY = 10
TRACE_FILE = "fam_trace.jsonl"
SAMPLING_MODES = ("ordered", "random")

_ATTENTION_KEYS = ("attention", "attn", "mha")
_EMBEDDING_KEYS = ("embed", "token")


def infer_handler_name(names: list[str] | tuple[str, ...]) -> str:
    """Handler for a group that carries parameter names but no ``handler``.

    Any name containing 'conv' → 'conv'; else attention words → 'attention'; else
    'embed'/'token' → 'embedding'; else 'default'. (The specification rebinds its loop
    variable here and tags every non-conv named group 'attention'.)
    """
    lowered = [str(n).lower() for n in names]
    if any("conv" in n for n in lowered):
        return "conv"
    if any(key in n for n in lowered for key in _ATTENTION_KEYS):
        return "attention"
    if any(key in n for n in lowered for key in _EMBEDDING_KEYS):
        return "embedding"
    return "default"


# --------------------------------------------------------------------------------------------
# The plan: how the analysed tensors of one step are sampled, batched and mapped to momenta.
# --------------------------------------------------------------------------------------------


@dataclass
class _Part:
    """Rows whose samples have one shape, so they stack into one (n, length) batch."""

    kind: str  # "full" | "strided" | "random_nd" | "random_1d"
    rows: list[int]
    length: int
    size: tuple[int, ...] = ()  # strided: view size (same for every row of the part)
    strides: list[tuple[int, ...]] = field(default_factory=list)  # strided: per row, contiguous
    fallbacks: list[Any] = field(default_factory=list)  # strided: per row, non-contiguous grads
    shape: tuple[int, ...] = ()  # full / random kinds: parameter shape
    counts: tuple[int, ...] = ()  # random_nd: (rows, cols); random_1d: (samples,)


@dataclass
class _Bucket:
    """All parts of one sample length: one rfft, one matmul with ``matrix``.

    The tensors after ``matrix`` are this bucket's rows of the plan's buffers (see _Buffers).
    """

    parts: list[_Part]
    matrix: Tensor  # (length // 2 + 1, n_cols) float32
    samples: Tensor = field(default_factory=lambda: torch.empty(0))  # (n, length)
    squares: Tensor = field(default_factory=lambda: torch.empty(0))  # (n, length // 2 + 1, 2)
    magnitude: Tensor = field(default_factory=lambda: torch.empty(0))  # (n, length // 2 + 1)
    sums: Tensor = field(default_factory=lambda: torch.empty(0))  # (n, width)


@dataclass
class _Buffers:
    """Memory every step reuses, so the analysis is a few large operations, not one per bucket.

    The samples of all rows are copied into ``samples`` with one ``_foreach_copy_`` (into
    ``destinations``, one view per row); the squared real and imaginary parts of each bucket's
    rfft go to its rows of ``squares``; the magnitudes of all buckets are then one sum and one
    square root over ``squares``.
    """

    destinations: list[Tensor]  # per row, in bucket then part order: where its sample goes
    squares: Tensor  # (all bins, 2) float32: squared real and imaginary parts
    magnitudes: Tensor  # (all bins,) float32
    sums: Tensor  # (N, width) float32: band columns, total, zero column per row


@dataclass
class _Block:
    """Consecutive rows of one parameter group."""

    start: int
    stop: int
    n_bands: int
    handler: FrequencyHandler
    adaptive: bool
    base_alpha: Tensor  # (stop - start,)


@dataclass
class _Plan:
    key: tuple
    buckets: list[_Bucket]
    buffers: _Buffers
    gather: Tensor  # (N, max_bands + 1) flat indices into the concatenated bucket outputs
    denom_eps: Tensor  # (N, 1)
    guard_zero: bool  # some eps == 0: keep an all-zero spectrum unnormalised
    ema: Tensor  # (N, max_bands); state["band_ema"] are views of its rows
    ema_weight: Tensor  # (N, 1): 1 - beta
    first_weight: Tensor | None  # 1 for rows without an EMA yet (start at first observation)
    blocks: list[_Block]
    weights: Tensor  # (N,) 1 - momentum, written in place each step
    one: Tensor  # 0-dim 1.0, in the momenta's dtype
    weight_views: list[Tensor]  # 0-dim views of ``weights`` for _foreach_lerp_
    momentum: Tensor | None = None  # (N,) last effective momenta
    meta: list[tuple[str, int, str, int]] = field(default_factory=list)  # name, group, handler, nb
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    uses_random: bool = False


@dataclass
class _RowLayout:
    """What the plan needs to know about each analysed row, collected in one pass."""

    row_groups: list[int]  # group index of each row
    # (id(handler), n_bands) -> (first band column, handler, n_bands): rows that share a handler
    # and a band count share band columns in the bucket outputs.
    configs: dict[tuple[int, int], tuple[int, FrequencyHandler, int]] = field(default_factory=dict)
    n_cols: int = 0  # band columns of all configs together
    row_config: list[tuple[int, int]] = field(default_factory=list)  # key into ``configs``
    row_beta: list[float] = field(default_factory=list)
    row_eps: list[float] = field(default_factory=list)
    blocks: list[_Block] = field(default_factory=list)
    meta: list[tuple[str, int, str, int]] = field(default_factory=list)
    parts_by_length: dict[int, dict[tuple, _Part]] = field(default_factory=dict)

    # A bucket output row holds the band columns, then the spectrum's total, then a column that
    # is always zero: the gather index pads rows with fewer bands than ``max_bands`` with it.
    @property
    def total_col(self) -> int:
        return self.n_cols

    @property
    def zero_col(self) -> int:
        return self.n_cols + 1

    @property
    def width(self) -> int:
        return self.n_cols + 2

    @property
    def max_bands(self) -> int:
        return max(n_bands for _, _, n_bands in self.configs.values())

    def row_columns(self, row: int) -> tuple[int, FrequencyHandler, int]:
        """(first band column, handler, n_bands) of ``row``."""
        return self.configs[self.row_config[row]]


@dataclass
class _GroupWork:
    """One parameter group's part of a step: its parameters with gradients, and which of them
    are analysed (``analysed``) or keep the group's fixed momentum (``fixed``)."""

    index: int
    params: list[Tensor] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    analysed: list[int] = field(default_factory=list)
    fixed: list[int] = field(default_factory=list)


@dataclass
class _StepLayout:
    """Who takes part in a step and how; reused by later steps while ``signature`` holds
    (None: made for this step only)."""

    signature: tuple | None
    groups: list[_GroupWork]
    row_key: tuple  # the plan's key: group signatures, then the ids of their analysed params
    row_params: list[Tensor]
    row_states: list[dict[str, Any]]


@dataclass
class _EmaStorage:
    ema: Tensor  # (N, max_bands)
    ema_weight: Tensor  # (N, 1)
    first_weight: Tensor | None  # (N, 1), or None when every row has an EMA already


def _sample_part(shape: tuple[int, ...], sampling: str) -> tuple[_Part, tuple, Any]:
    """Describe the gradient sample of a parameter of ``shape``.

    Returns the part (rows filled in by the caller), the key of parts that can share one batch,
    and, for strided samples, the row's (stride, fallback) pair.
    """
    numel = math.prod(shape)
    if numel <= FULL_ANALYSIS_MAX_NUMEL:
        return _Part("full", [], numel, shape=shape), ("full", shape), None
    if len(shape) >= 2:
        if sampling == "random":
            n_rows, n_cols = min(shape[0], SAMPLE_ROWS), min(shape[1], SAMPLE_COLS)
            length = n_rows * n_cols * math.prod(shape[2:])
            part = _Part("random_nd", [], length, shape=shape, counts=(n_rows, n_cols))
            return part, ("random_nd", shape), None
        # Rows 0, step, 2*step, ... each with its first SAMPLE_COLS entries in memory order
        # (columns for a matrix; for conv kernels the leading input channels' taps). In a
        # contiguous gradient this is a 2-D strided view; nearly every sample is 64 x 64.
        n_rows = min(shape[0], SAMPLE_ROWS)
        row_numel = numel // shape[0]
        n_cols = min(row_numel, SAMPLE_COLS)
        step = shape[0] // n_rows
        size = (n_rows, n_cols)
        fallback = (slice(0, n_rows * step, step),)
        part = _Part("strided", [], n_rows * n_cols, size=size)
        return part, ("strided", size), ((step * row_numel, 1), fallback)
    if sampling == "random":
        part = _Part("random_1d", [], SAMPLE_1D, shape=shape, counts=(SAMPLE_1D,))
        return part, ("random_1d", shape), None
    run = SAMPLE_1D // RUNS_1D
    step = (numel - run) // (RUNS_1D - 1)
    size = (RUNS_1D, run)
    return _Part("strided", [], RUNS_1D * run, size=size), ("strided", size), ((step, 1), None)


def _row_groups(key: tuple) -> list[int]:
    """Group index of each row; rows of a group are consecutive in the plan key."""
    row_groups: list[int] = []
    current = -1
    for item in key:
        if isinstance(item, tuple):
            current = item[0]
        else:
            row_groups.append(current)
    return row_groups


def _add_to_part(
    parts_by_length: dict[int, dict[tuple, _Part]], row: int, shape: tuple[int, ...], sampling: str
) -> None:
    """Add ``row`` to the part its sample batches with, creating the part if needed."""
    part, part_key, strided = _sample_part(shape, sampling)
    same_length = parts_by_length.setdefault(part.length, {})
    part = same_length.setdefault(part_key, part)
    part.rows.append(row)
    if strided is not None:
        part.strides.append(strided[0])
        part.fallbacks.append(strided[1])


def _build_buckets(layout: _RowLayout, device: torch.device) -> tuple[list[_Bucket], list[int]]:
    """One bucket per sample length, shortest first.

    Also returns each row's position among the rows of the concatenated bucket outputs.
    """
    buckets: list[_Bucket] = []
    position = [0] * len(layout.row_groups)
    offset = 0
    for length in sorted(layout.parts_by_length):
        parts = list(layout.parts_by_length[length].values())
        matrix = _band_matrix(length // 2 + 1, layout)
        for part in parts:
            for r in part.rows:
                position[r] = offset
                offset += 1
        buckets.append(_Bucket(parts, matrix.to(device)))
    return buckets, position


def _allocate_buffers(buckets: list[_Bucket], width: int, device: torch.device) -> _Buffers:
    """The plan's reusable buffers; also points each bucket at its rows of them."""
    n_rows = sum(len(part.rows) for bucket in buckets for part in bucket.parts)
    n_samples = sum(len(p.rows) * p.length for bucket in buckets for p in bucket.parts)
    n_bins = sum(len(p.rows) * (p.length // 2 + 1) for bucket in buckets for p in bucket.parts)
    samples = torch.empty(n_samples, dtype=torch.float32, device=device)
    squares = torch.empty(n_bins, 2, dtype=torch.float32, device=device)
    magnitudes = torch.empty(n_bins, dtype=torch.float32, device=device)
    sums = torch.empty(n_rows, width, dtype=torch.float32, device=device)
    destinations: list[Tensor] = []
    sample_at = bin_at = row_at = 0
    for bucket in buckets:
        length = bucket.parts[0].length
        n_freq = length // 2 + 1
        n = sum(len(part.rows) for part in bucket.parts)
        bucket.samples = samples[sample_at : sample_at + n * length].view(n, length)
        bucket.squares = squares[bin_at : bin_at + n * n_freq].view(n, n_freq, 2)
        bucket.magnitude = magnitudes[bin_at : bin_at + n * n_freq].view(n, n_freq)
        bucket.sums = sums[row_at : row_at + n]
        for part in bucket.parts:
            shape = {"full": part.shape, "strided": part.size}.get(part.kind, (length,))
            for _ in part.rows:
                destinations.append(samples[sample_at : sample_at + length].view(shape))
                sample_at += length
        bin_at += n * n_freq
        row_at += n
    return _Buffers(destinations, squares, magnitudes, sums)


def _band_matrix(n_freq: int, layout: _RowLayout) -> Tensor:
    """(n_freq, width) float32: each config's bands in its columns, ones in the total column."""
    matrix = torch.zeros(n_freq, layout.width, dtype=torch.float32)
    for col, handler, n_bands in layout.configs.values():
        bands = torch.as_tensor(handler.bands(n_freq, n_bands), dtype=torch.float32)
        if tuple(bands.shape) != (n_freq, n_bands):
            raise ValueError(
                f"{type(handler).__name__}.bands({n_freq}, {n_bands}) returned shape "
                f"{tuple(bands.shape)}, expected ({n_freq}, {n_bands})"
            )
        matrix[:, col : col + n_bands] = bands.cpu()
    matrix[:, layout.total_col] = 1.0
    return matrix


def _gather_index(layout: _RowLayout, position: list[int]) -> Tensor:
    """(N, max_bands + 1) flat indices into the concatenated bucket outputs (on the CPU).

    Per row: its band columns, padded with the zero column up to ``max_bands``, then its total.
    """
    max_bands = layout.max_bands
    gather = torch.empty(len(position), max_bands + 1, dtype=torch.long)
    for r in range(len(position)):
        col, _, n_bands = layout.row_columns(r)
        cols = list(range(col, col + n_bands)) + [layout.zero_col] * (max_bands - n_bands)
        cols.append(layout.total_col)
        gather[r] = torch.tensor(cols) + position[r] * layout.width
    return gather


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
            ``debug_interval`` steps, on :meth:`flush_trace` and on :meth:`close`).
        debug_dir: directory of the trace file.
        debug_interval: steps between writes of the trace file.
        sampling: ``"ordered"`` or ``"random"``, how tensors with more than 10000 entries are
            sampled (see the module docstring).
        seed: seed of the private generator used by ``sampling="random"``.
        adaptive: False gives the fixed-momentum twin (``fam-fixed``): same update, momentum
            always ``alpha``; the analysis then runs only when tracing is on, for the record.

    ``debug``, ``debug_dir`` and ``debug_interval`` are the specification's names for the trace
    and are kept as they are. A trainer uses the :class:`~fambench.optim.tracing.TraceWriter`
    capability instead: :meth:`start_trace` (which also drops the records an interrupted run left
    after its checkpoint) and :meth:`flush_trace`.
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
        if not _is_int(debug_interval) or debug_interval < 1:
            raise ValueError(f"debug_interval must be a positive integer, got {debug_interval!r}")
        if debug and not debug_dir:
            raise ValueError("debug=True needs a debug_dir")
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
        self._plan: _Plan | None = None
        self._layout: _StepLayout | None = None
        self._generator: torch.Generator | None = None
        self._trace_pending: list[tuple] = []

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; tags it with a handler and validates its settings."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        index = len(self.param_groups) - 1
        try:
            if "handler" not in group:
                names = group.get("names") or group.get("param_names") or []
                group["handler"] = infer_handler_name(names)
            _validate_group(group, index)
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
        if "_trace_pending" not in self.__dict__:
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
                    device=param.device, dtype=_ema_dtype(param.device), copy=True
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
        layout, grads_by_group = self._layout_step(tracing)
        for work in layout.groups:
            for state in work.states:
                state["step"] += 1

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

        if layout.row_params:
            row_steps = [state["step"] for state in layout.row_states]
            weights = self._analyse(layout.row_key, layout.row_params, row_grads, row_steps)
            row_moms = [state["exp_avg"] for state in layout.row_states]
            torch._foreach_lerp_(row_moms, row_grads, weights)

        for params, moms, lr in updates:
            torch._foreach_add_(params, moms, alpha=-lr)

        if tracing and self._step_calls % self._trace_interval == 0:
            self.flush_trace()
        return loss

    def _layout_step(self, tracing: bool) -> tuple[_StepLayout, list[list[Tensor]]]:
        """This step's layout and each of its groups' gradients.

        The layout of the previous step is reused while it still holds: the same groups and
        settings, every parameter with a dense gradient, and (found when it was made) no
        parameter still waiting for ``fam_start_step``. Otherwise one pass over the parameters
        makes a new one, creating the state of parameters seen for the first time.
        """
        signature = self._step_signature(tracing)
        layout = self._layout
        if layout is not None and layout.signature == signature:
            grads_by_group = [[p.grad for p in work.params] for work in layout.groups]
            if not any(g is None or g.is_sparse for grads in grads_by_group for g in grads):
                return layout, grads_by_group
        layout, grads_by_group = self._make_layout(tracing)
        self._layout = layout
        return layout, grads_by_group

    def _step_signature(self, tracing: bool) -> tuple:
        """What a step layout depends on besides the gradients."""
        return (
            tracing,
            len(self.state),
            tuple(
                (
                    _group_signature(gi, group),
                    id(group["params"]),
                    len(group["params"]),
                    group["fam_start_step"],
                    group["min_size"],
                )
                for gi, group in enumerate(self.param_groups)
            ),
        )

    def _make_layout(self, tracing: bool) -> tuple[_StepLayout, list[list[Tensor]]]:
        """One pass over the parameters: who takes part in this step and who is analysed."""
        works: list[_GroupWork] = []
        grads_by_group: list[list[Tensor]] = []
        row_key: list[Any] = []
        row_params: list[Tensor] = []
        row_states: list[dict[str, Any]] = []
        reusable = True
        for gi, group in enumerate(self.param_groups):
            work = _GroupWork(gi)
            grads: list[Tensor] = []
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
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if analyse and p.numel() > min_size:
                    if state["step"] + 1 > start:
                        work.analysed.append(len(work.params))
                    else:
                        reusable = False  # it joins the analysis at a later step
                work.params.append(p)
                work.states.append(state)
                grads.append(grad)
            if not work.params:
                continue
            chosen = set(work.analysed)
            work.fixed = [j for j in range(len(work.params)) if j not in chosen]
            if work.analysed:
                row_key.append(_group_signature(gi, group))
                for j in work.analysed:
                    row_key.append(id(work.params[j]))
                    row_params.append(work.params[j])
                    row_states.append(work.states[j])
            works.append(work)
            grads_by_group.append(grads)
        layout = _StepLayout(
            # len(self.state) may have grown in this pass: the signature of the next step.
            signature=self._step_signature(tracing) if reusable else None,
            groups=works,
            row_key=tuple(row_key),
            row_params=row_params,
            row_states=row_states,
        )
        return layout, grads_by_group

    # ------------------------------------------------------------------------ analysis

    def _analyse(
        self, key: tuple, params: list[Tensor], grads: list[Tensor], steps: list[int]
    ) -> list[Tensor]:
        """Effective momenta of the analysed rows, as 0-dim tensors of ``1 - a``."""
        plan = self._plan
        if plan is None or plan.key != key or plan.device != params[0].device:
            plan = self._plan = self._build_plan(key, params)

        generator = self._seeded_generator(steps[0]) if plan.uses_random else None

        buffers = plan.buffers
        sources: list[Tensor] = []
        for bucket in plan.buckets:
            for part in bucket.parts:
                sources.extend(self._part_samples(part, grads, generator, plan.device))
        torch._foreach_copy_(buffers.destinations, sources)
        for bucket in plan.buckets:
            # rfft's out= would compute into a new tensor and copy it; squaring reads it once.
            spectrum = torch.view_as_real(torch.fft.rfft(bucket.samples))
            torch.mul(spectrum, spectrum, out=bucket.squares)
        _magnitude(buffers)
        for bucket in plan.buckets:
            torch.matmul(bucket.magnitude, bucket.matrix, out=bucket.sums)

        picked = torch.take(buffers.sums, plan.gather).to(plan.ema.dtype)
        n_bands = plan.ema.shape[1]
        bands, total = picked[:, :n_bands], picked[:, n_bands:]
        denom = total + plan.denom_eps
        if plan.guard_zero:
            denom = torch.where(total > 0, denom, torch.ones_like(denom))
        observed = bands / denom

        if plan.first_weight is not None:
            plan.ema.lerp_(observed, plan.first_weight)
            plan.first_weight = None
        else:
            plan.ema.lerp_(observed, plan.ema_weight)

        momenta = []
        for block in plan.blocks:
            base = block.base_alpha
            if block.adaptive:
                values = plan.ema[block.start : block.stop, : block.n_bands]
                momenta.append(block.handler.momentum(values, base))
            else:
                momenta.append(base)
        momentum = momenta[0] if len(momenta) == 1 else torch.cat(momenta)
        if momentum.shape != plan.weights.shape:
            raise RuntimeError(
                f"frequency handler returned momenta of shape {tuple(momentum.shape)}, "
                f"expected {tuple(plan.weights.shape)}"
            )
        plan.momentum = momentum
        torch.sub(plan.one, momentum, out=plan.weights)

        if self._trace_dir is not None:
            self._record_trace(plan, steps)
        return plan.weight_views

    def _part_samples(
        self,
        part: _Part,
        grads: list[Tensor],
        generator: torch.Generator | None,
        device: torch.device,
    ) -> list[Tensor]:
        """The sample of each row of ``part``, shaped like its destination in the buffers."""
        sources = [grads[r] for r in part.rows]
        if part.kind == "full":
            return sources
        if part.kind == "strided":
            views = []
            for g, stride, fallback in zip(sources, part.strides, part.fallbacks, strict=True):
                if g.is_contiguous():
                    views.append(g.as_strided(part.size, stride))
                elif fallback is not None:
                    rows = g[fallback]
                    views.append(rows.reshape(rows.shape[0], -1)[:, : part.size[1]])
                else:
                    views.append(g.unfold(0, part.size[1], stride[0])[: part.size[0]])
            return views
        n = len(sources)
        if part.kind == "random_nd":
            n_rows, n_cols = part.counts
            dim0, dim1 = part.shape[0], part.shape[1]
            rest = math.prod(part.shape[2:])
            rows = torch.rand(n, dim0, generator=generator).argsort(dim=1)[:, :n_rows]
            cols = torch.rand(n, dim1, generator=generator).argsort(dim=1)[:, :n_cols]
            flat = (rows * (dim1 * rest))[:, :, None] + (cols * rest)[:, None, :]
            if rest > 1:
                flat = flat[..., None] + torch.arange(rest)
            flat = host_to_device(flat.reshape(n, -1), device)
            return [torch.take(g, flat[j]) for j, g in enumerate(sources)]
        # random_1d
        numel = part.shape[0]
        picks = [
            host_to_device(torch.randperm(numel, generator=generator)[: part.counts[0]], device)
            for _ in sources
        ]
        return [torch.take(g, idx) for g, idx in zip(sources, picks, strict=True)]

    def _seeded_generator(self, step: int) -> torch.Generator:
        # Re-seeding from (seed, step) keeps random sampling reproducible and lets a run resumed
        # from a state dict draw the same samples, with no generator state to save.
        if self._generator is None:
            self._generator = torch.Generator()
        seed = int(self.defaults.get("seed", 0))
        self._generator.manual_seed((seed * 1_000_003 + step * 7_919) % (2**63 - 1))
        return self._generator

    def _build_plan(self, key: tuple, params: list[Tensor]) -> _Plan:
        """Lay out sampling, batching, band matrices and EMA storage for the analysed rows."""
        device = params[0].device
        other = next((p.device for p in params if p.device != device), None)
        if other is not None:
            raise RuntimeError(
                f"FAMOptimizer analyses parameters on one device; got {device} and {other}"
            )
        ema_dtype = _ema_dtype(device)
        layout = self._collect_rows(_row_groups(key), params, device, ema_dtype)
        buckets, position = _build_buckets(layout, device)
        buffers = _allocate_buffers(buckets, layout.width, device)
        gather = _gather_index(layout, position)
        storage = self._ema_storage(params, layout, device, ema_dtype)

        weight_dtype = (
            torch.float64 if all(p.dtype == torch.float64 for p in params) else torch.float32
        )
        weights = torch.zeros(len(params), dtype=weight_dtype, device=device)
        return _Plan(
            key=key,
            buckets=buckets,
            buffers=buffers,
            gather=gather.to(device),
            denom_eps=torch.tensor(layout.row_eps, dtype=ema_dtype, device=device).unsqueeze(1),
            guard_zero=any(e == 0 for e in layout.row_eps),
            ema=storage.ema,
            ema_weight=storage.ema_weight,
            first_weight=storage.first_weight,
            blocks=layout.blocks,
            weights=weights,
            one=torch.ones((), dtype=ema_dtype, device=device),
            weight_views=list(weights.unbind()),
            meta=layout.meta,
            device=device,
            uses_random=any(part.kind.startswith("random") for b in buckets for part in b.parts),
        )

    def _collect_rows(
        self,
        row_groups: list[int],
        params: list[Tensor],
        device: torch.device,
        ema_dtype: torch.dtype,
    ) -> _RowLayout:
        """One pass over the rows: band columns, group blocks, trace meta and sample parts."""
        layout = _RowLayout(row_groups)
        names_cache: dict[int, dict[int, str]] = {}
        for r, (gi, p) in enumerate(zip(row_groups, params, strict=True)):
            group = self.param_groups[gi]
            handler, handler_name = _effective_handler(group)
            n_bands = group["n_bands"]
            config_key = (id(handler), n_bands)
            if config_key not in layout.configs:
                layout.configs[config_key] = (layout.n_cols, handler, n_bands)
                layout.n_cols += n_bands
            layout.row_config.append(config_key)
            layout.row_beta.append(group["beta"])
            layout.row_eps.append(group["eps"])
            if not layout.blocks or row_groups[r - 1] != gi:
                layout.blocks.append(
                    _Block(r, r, n_bands, handler, bool(group["adaptive"]), torch.empty(0))
                )
            layout.blocks[-1].stop = r + 1
            if gi not in names_cache:
                names_cache[gi] = _param_names(group, gi)
            layout.meta.append((names_cache[gi][id(p)], gi, handler_name, n_bands))
            _add_to_part(layout.parts_by_length, r, tuple(p.shape), group["sampling"])

        for block in layout.blocks:
            alpha = self.param_groups[row_groups[block.start]]["alpha"]
            block.base_alpha = torch.full(
                (block.stop - block.start,), float(alpha), dtype=ema_dtype, device=device
            )
        return layout

    def _ema_storage(
        self,
        params: list[Tensor],
        layout: _RowLayout,
        device: torch.device,
        ema_dtype: torch.dtype,
    ) -> _EmaStorage:
        """Allocate the band EMAs and point each row's ``state["band_ema"]`` at its row.

        A saved ``band_ema`` of the right size is carried over; rows without one get weight 1
        at their first observation, so their EMA starts there.
        """
        n_rows = len(params)
        ema = torch.zeros(n_rows, layout.max_bands, dtype=ema_dtype, device=device)
        first = torch.full((n_rows, 1), -1.0, dtype=ema_dtype)
        fresh = False  # kept on the host: the plan is built without reading tensors back
        for r, p in enumerate(params):
            state = self.state[p]
            n_bands = layout.row_columns(r)[2]
            old = state.get("band_ema")
            if isinstance(old, Tensor) and old.numel() == n_bands:
                ema[r, :n_bands] = old.reshape(-1).to(device=device, dtype=ema_dtype)
            else:
                first[r] = 1.0
                fresh = True
            state["band_ema"] = ema[r, :n_bands]
        ema_weight = 1.0 - torch.tensor(layout.row_beta, dtype=ema_dtype).unsqueeze(1)
        first_weight = None
        if fresh:
            first_weight = torch.where(first > 0, first, ema_weight).to(device)
        return _EmaStorage(ema, ema_weight.to(device), first_weight)

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
        if self._trace_pending:
            self.flush_trace()  # pending records belong to the previous trace
        truncate_trace(os.path.join(trace_dir, TRACE_FILE), resume_step)
        os.makedirs(trace_dir, exist_ok=True)
        self._trace_dir = trace_dir
        return TRACE_FILE

    def _record_trace(self, plan: _Plan, steps: list[int]) -> None:
        logged = [r for r, s in enumerate(steps) if s % TRACE_EVERY == 0]
        if logged:
            # Device tensors are kept until the next write, so step() does not wait for them.
            self._trace_pending.append(
                (
                    plan.meta,
                    logged,
                    [steps[r] for r in logged],
                    plan.ema.clone(),
                    plan.momentum.clone(),
                )
            )

    def flush_trace(self) -> None:
        """Append the pending trace records to ``<directory>/fam_trace.jsonl`` now."""
        pending, self._trace_pending = self._trace_pending, []
        if not pending or self._trace_dir is None:
            return
        lines = []
        for meta, logged, steps, ema, momentum in pending:
            ema_rows, momenta = ema.tolist(), momentum.tolist()
            for r, step in zip(logged, steps, strict=True):
                name, group, handler, n_bands = meta[r]
                record = {
                    "step": step,
                    "param": name,
                    "group": group,
                    "handler": handler,
                    "band_ema": ema_rows[r][:n_bands],
                    "momentum": momenta[r],
                }
                lines.append(json.dumps(record) + "\n")
        os.makedirs(self._trace_dir, exist_ok=True)
        with open(os.path.join(self._trace_dir, TRACE_FILE), "a", encoding="utf-8") as handle:
            handle.writelines(lines)
        logger.debug("wrote %d FAM trace records to %s", len(lines), self._trace_dir)

    def close(self) -> None:
        """Write any pending trace records (also done on garbage collection)."""
        if self.__dict__.get("_trace_pending"):
            self.flush_trace()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def effective_momenta(self) -> dict[str, float]:
        """Momentum of each analysed parameter at the last step (waits for the device)."""
        plan = self._plan
        if plan is None or plan.momentum is None:
            return {}
        values = plan.momentum.tolist()
        return {meta[0]: value for meta, value in zip(plan.meta, values, strict=True)}


# ------------------------------------------------------------------------------- helpers


def _magnitude(buffers: _Buffers) -> None:
    """``sqrt(re^2 + im^2)`` of every bin into ``magnitudes``: several times faster than
    complex abs (hypot) on CPU."""
    torch.add(buffers.squares[:, 0], buffers.squares[:, 1], out=buffers.magnitudes)
    buffers.magnitudes.sqrt_()


def _ema_dtype(device: torch.device) -> torch.dtype:
    # The specification keeps band EMAs as Python floats; float64 matches that where supported.
    return torch.float32 if device.type == "mps" else torch.float64


def _effective_handler(group: dict[str, Any]) -> tuple[FrequencyHandler, str]:
    spec = group["handler"] if group["layer_boost"] else "default"
    handler = get_handler(spec)
    name = spec if isinstance(spec, str) else getattr(handler, "name", type(handler).__name__)
    return handler, str(name)


def _group_signature(index: int, group: dict[str, Any]) -> tuple:
    handler = group["handler"]
    return (
        index,
        handler if isinstance(handler, str) else id(handler),
        group["layer_boost"],
        group["n_bands"],
        group["alpha"],
        group["beta"],
        group["eps"],
        group["adaptive"],
        group["sampling"],
    )


def _param_names(group: dict[str, Any], index: int) -> dict[int, str]:
    names = group.get("names") or group.get("param_names")
    params = group["params"]
    if names is not None and len(names) == len(params):
        return {id(p): str(n) for p, n in zip(params, names, strict=True)}
    return {id(p): f"group{index}.param{i}" for i, p in enumerate(params)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_group(group: dict[str, Any], index: int) -> None:
    """Raise ValueError naming the group and key of the first invalid setting."""
    where = f"param group {index}"

    def number(key: str, low: float, high: float | None = None, high_open: bool = True) -> None:
        value = group[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: {key} must be a number, got {value!r}")
        if (
            not math.isfinite(value)
            or value < low
            or (high is not None and (value >= high if high_open else value > high))
        ):
            bound = f"[{low}, {high})" if high is not None else f">= {low}"
            raise ValueError(f"{where}: {key} must be {bound}, got {value!r}")

    number("lr", 0.0)
    number("alpha", 0.0, 1.0)
    number("beta", 0.0, 1.0)
    number("eps", 0.0)
    number("weight_decay", 0.0)
    for key, low in (("n_bands", 1), ("fam_start_step", 0), ("min_size", 0)):
        if not _is_int(group[key]) or group[key] < low:
            raise ValueError(f"{where}: {key} must be an integer >= {low}, got {group[key]!r}")
    if group["sampling"] not in SAMPLING_MODES:
        raise ValueError(
            f"{where}: sampling must be one of {', '.join(SAMPLING_MODES)}, "
            f"got {group['sampling']!r}"
        )
    if not _is_int(group["seed"]):
        raise ValueError(f"{where}: seed must be an integer, got {group['seed']!r}")
    try:
        get_handler(group["handler"])
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    for p in group["params"]:
        if p.is_complex():
            raise ValueError(f"{where}: complex parameters are not supported")
