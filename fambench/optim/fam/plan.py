"""The plan: how the analysed gradients of a FAM step are sampled, batched and mapped to momenta.

The sample of a gradient is the whole flattened tensor when ``numel <= 10000``. Larger tensors
are sampled:

* ``sampling="ordered"`` (default): 64 evenly spaced rows (dim 0), each with its first 64 entries
  in memory order (the first 64 columns of a matrix; for a conv kernel the taps of its leading
  input channels); 1-D tensors: 8 evenly spaced runs of 125 entries. The order of entries is
  kept, so the spectrum reflects real structure.
* ``sampling="random"``: the specification's 64 random rows x 64 random columns, or 1000 random
  entries of a 1-D tensor, drawn from a private generator re-seeded from ``seed`` and the step
  count, so runs are reproducible, resumable from a state dict, and the global RNG is untouched.

Samples of one length form one batch (a :class:`Bucket`: one ``rfft``, one matrix product with
a 0/1 band matrix); all buckets share a few buffers (:class:`Buffers`); rows of one parameter
group form a :class:`Block` whose handler picks the momenta of all its rows at once. A plan is
built once per set of analysed tensors (:func:`build_plan`) and run every step by
:mod:`fambench.optim.fam.analysis`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from fambench.optim.fam.keys import Same
from fambench.optim.fam.settings import effective_handler
from fambench.optim.handlers import FrequencyHandler

__all__ = ["Block", "Buffers", "Bucket", "Part", "Plan", "build_plan", "ema_dtype"]

FULL_ANALYSIS_MAX_NUMEL = 10_000
SAMPLE_ROWS = 64
SAMPLE_COLS = 64
SAMPLE_1D = 1000
RUNS_1D = 8


@dataclass
class Part:
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
class Bucket:
    """All parts of one sample length: one rfft, one matmul with ``matrix``.

    The tensors after ``matrix`` are this bucket's rows of the plan's buffers (see Buffers).
    """

    parts: list[Part]
    matrix: Tensor  # (length // 2 + 1, n_cols) float32
    samples: Tensor = field(default_factory=lambda: torch.empty(0))  # (n, length)
    squares: Tensor = field(default_factory=lambda: torch.empty(0))  # (n, length // 2 + 1, 2)
    magnitude: Tensor = field(default_factory=lambda: torch.empty(0))  # (n, length // 2 + 1)
    sums: Tensor = field(default_factory=lambda: torch.empty(0))  # (n, width)


@dataclass
class Buffers:
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
class Block:
    """Consecutive rows of one parameter group."""

    start: int
    stop: int
    n_bands: int
    handler: FrequencyHandler
    adaptive: bool
    base_alpha: Tensor  # (stop - start,)


@dataclass
class Plan:
    """The analysis of one set of analysed rows (``key`` says which), with everything a step
    reuses: buckets and buffers, the index that picks each row's band sums and total, the band
    EMAs, and the group blocks whose handlers turn EMAs into momenta."""

    key: tuple
    buckets: list[Bucket]
    buffers: Buffers
    gather: Tensor  # (N, max_bands + 1) flat indices into the concatenated bucket outputs
    denom_eps: Tensor  # (N, 1)
    guard_zero: bool  # some eps == 0: keep an all-zero spectrum unnormalised
    ema: Tensor  # (N, max_bands); state["band_ema"] are views of its rows
    ema_weight: Tensor  # (N, 1): 1 - beta
    first_weight: Tensor | None  # 1 for rows without an EMA yet (start at first observation)
    blocks: list[Block]
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
    # (handler, n_bands) -> (first band column, handler, n_bands): rows that share a handler
    # and a band count share band columns in the bucket outputs.
    configs: dict[tuple[Same, int], tuple[int, FrequencyHandler, int]] = field(default_factory=dict)
    n_cols: int = 0  # band columns of all configs together
    row_config: list[tuple[Same, int]] = field(default_factory=list)  # key into ``configs``
    row_beta: list[float] = field(default_factory=list)
    row_eps: list[float] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    meta: list[tuple[str, int, str, int]] = field(default_factory=list)
    parts_by_length: dict[int, dict[tuple, Part]] = field(default_factory=dict)

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
class _EmaStorage:
    ema: Tensor  # (N, max_bands)
    ema_weight: Tensor  # (N, 1)
    first_weight: Tensor | None  # (N, 1), or None when every row has an EMA already


def ema_dtype(device: torch.device) -> torch.dtype:
    """The band EMAs' dtype on ``device``."""
    # The specification keeps band EMAs as Python floats; float64 matches that where supported.
    return torch.float32 if device.type == "mps" else torch.float64


def build_plan(
    key: tuple,
    params: list[Tensor],
    row_groups: list[int],
    param_groups: list[dict[str, Any]],
    state: dict[Tensor, dict[str, Any]],
) -> Plan:
    """Lay out sampling, batching, band matrices and EMA storage for the analysed rows.

    ``params`` are the analysed parameters, ``row_groups`` the index of each one's group in
    ``param_groups``; each one's ``state["band_ema"]`` becomes a view of the plan's EMA row.
    """
    device = params[0].device
    other = next((p.device for p in params if p.device != device), None)
    if other is not None:
        raise RuntimeError(
            f"FAMOptimizer analyses parameters on one device; got {device} and {other}"
        )
    dtype = ema_dtype(device)
    layout = _collect_rows(row_groups, params, param_groups, device, dtype)
    buckets, position = _build_buckets(layout, device)
    buffers = _allocate_buffers(buckets, layout.width, device)
    gather = _gather_index(layout, position)
    storage = _ema_storage(params, state, layout, device, dtype)

    weight_dtype = torch.float64 if all(p.dtype == torch.float64 for p in params) else torch.float32
    weights = torch.zeros(len(params), dtype=weight_dtype, device=device)
    return Plan(
        key=key,
        buckets=buckets,
        buffers=buffers,
        gather=gather.to(device),
        denom_eps=torch.tensor(layout.row_eps, dtype=dtype, device=device).unsqueeze(1),
        guard_zero=any(e == 0 for e in layout.row_eps),
        ema=storage.ema,
        ema_weight=storage.ema_weight,
        first_weight=storage.first_weight,
        blocks=layout.blocks,
        weights=weights,
        one=torch.ones((), dtype=dtype, device=device),
        weight_views=list(weights.unbind()),
        meta=layout.meta,
        device=device,
        uses_random=any(part.kind.startswith("random") for b in buckets for part in b.parts),
    )


def _collect_rows(
    row_groups: list[int],
    params: list[Tensor],
    param_groups: list[dict[str, Any]],
    device: torch.device,
    dtype: torch.dtype,
) -> _RowLayout:
    """One pass over the rows: band columns, group blocks, trace meta and sample parts."""
    layout = _RowLayout(row_groups)
    names_cache: dict[int, dict[Same, str]] = {}
    for r, (gi, p) in enumerate(zip(row_groups, params, strict=True)):
        group = param_groups[gi]
        handler, handler_name = effective_handler(group)
        n_bands = group["n_bands"]
        config_key = (Same(handler), n_bands)
        if config_key not in layout.configs:
            layout.configs[config_key] = (layout.n_cols, handler, n_bands)
            layout.n_cols += n_bands
        layout.row_config.append(config_key)
        layout.row_beta.append(group["beta"])
        layout.row_eps.append(group["eps"])
        if not layout.blocks or row_groups[r - 1] != gi:
            layout.blocks.append(
                Block(r, r, n_bands, handler, bool(group["adaptive"]), torch.empty(0))
            )
        layout.blocks[-1].stop = r + 1
        if gi not in names_cache:
            names_cache[gi] = _param_names(group, gi)
        layout.meta.append((names_cache[gi][Same(p)], gi, handler_name, n_bands))
        _add_to_part(layout.parts_by_length, r, tuple(p.shape), group["sampling"])

    for block in layout.blocks:
        alpha = param_groups[row_groups[block.start]]["alpha"]
        block.base_alpha = torch.full(
            (block.stop - block.start,), float(alpha), dtype=dtype, device=device
        )
    return layout


def _param_names(group: dict[str, Any], index: int) -> dict[Same, str]:
    """The trace name of each parameter of a group: its own, else its place."""
    names = group.get("names") or group.get("param_names")
    params = group["params"]
    if names is not None and len(names) == len(params):
        return {Same(p): str(n) for p, n in zip(params, names, strict=True)}
    return {Same(p): f"group{index}.param{i}" for i, p in enumerate(params)}


def _sample_part(shape: tuple[int, ...], sampling: str) -> tuple[Part, tuple, Any]:
    """Describe the gradient sample of a parameter of ``shape``.

    Returns the part (rows filled in by the caller), the key of parts that can share one batch,
    and, for strided samples, the row's (stride, fallback) pair.
    """
    numel = math.prod(shape)
    if numel <= FULL_ANALYSIS_MAX_NUMEL:
        return Part("full", [], numel, shape=shape), ("full", shape), None
    if len(shape) >= 2:
        if sampling == "random":
            n_rows, n_cols = min(shape[0], SAMPLE_ROWS), min(shape[1], SAMPLE_COLS)
            length = n_rows * n_cols * math.prod(shape[2:])
            part = Part("random_nd", [], length, shape=shape, counts=(n_rows, n_cols))
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
        part = Part("strided", [], n_rows * n_cols, size=size)
        return part, ("strided", size), ((step * row_numel, 1), fallback)
    if sampling == "random":
        part = Part("random_1d", [], SAMPLE_1D, shape=shape, counts=(SAMPLE_1D,))
        return part, ("random_1d", shape), None
    run = SAMPLE_1D // RUNS_1D
    step = (numel - run) // (RUNS_1D - 1)
    size = (RUNS_1D, run)
    return Part("strided", [], RUNS_1D * run, size=size), ("strided", size), ((step, 1), None)


def _add_to_part(
    parts_by_length: dict[int, dict[tuple, Part]], row: int, shape: tuple[int, ...], sampling: str
) -> None:
    """Add ``row`` to the part its sample batches with, creating the part if needed."""
    part, part_key, strided = _sample_part(shape, sampling)
    same_length = parts_by_length.setdefault(part.length, {})
    part = same_length.setdefault(part_key, part)
    part.rows.append(row)
    if strided is not None:
        part.strides.append(strided[0])
        part.fallbacks.append(strided[1])


def _build_buckets(layout: _RowLayout, device: torch.device) -> tuple[list[Bucket], list[int]]:
    """One bucket per sample length, shortest first.

    Also returns each row's position among the rows of the concatenated bucket outputs.
    """
    buckets: list[Bucket] = []
    position = [0] * len(layout.row_groups)
    offset = 0
    for length in sorted(layout.parts_by_length):
        parts = list(layout.parts_by_length[length].values())
        matrix = _band_matrix(length // 2 + 1, layout)
        for part in parts:
            for r in part.rows:
                position[r] = offset
                offset += 1
        buckets.append(Bucket(parts, matrix.to(device)))
    return buckets, position


def _allocate_buffers(buckets: list[Bucket], width: int, device: torch.device) -> Buffers:
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
    return Buffers(destinations, squares, magnitudes, sums)


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


def _ema_storage(
    params: list[Tensor],
    state: dict[Tensor, dict[str, Any]],
    layout: _RowLayout,
    device: torch.device,
    dtype: torch.dtype,
) -> _EmaStorage:
    """Allocate the band EMAs and point each row's ``state["band_ema"]`` at its row.

    A saved ``band_ema`` of the right size is carried over; rows without one get weight 1
    at their first observation, so their EMA starts there.
    """
    n_rows = len(params)
    ema = torch.zeros(n_rows, layout.max_bands, dtype=dtype, device=device)
    first = torch.full((n_rows, 1), -1.0, dtype=dtype)
    fresh = False  # kept on the host: the plan is built without reading tensors back
    for r, p in enumerate(params):
        param_state = state[p]
        n_bands = layout.row_columns(r)[2]
        old = param_state.get("band_ema")
        if isinstance(old, Tensor) and old.numel() == n_bands:
            ema[r, :n_bands] = old.reshape(-1).to(device=device, dtype=dtype)
        else:
            first[r] = 1.0
            fresh = True
        param_state["band_ema"] = ema[r, :n_bands]
    ema_weight = 1.0 - torch.tensor(layout.row_beta, dtype=dtype).unsqueeze(1)
    first_weight = None
    if fresh:
        first_weight = torch.where(first > 0, first, ema_weight).to(device)
    return _EmaStorage(ema, ema_weight.to(device), first_weight)
