"""A FAM parameter group's settings: the handler it is tagged with, and their validation."""

from __future__ import annotations

import math
from typing import Any

from fambench.optim.handlers import FrequencyHandler, get_handler

__all__ = [
    "SAMPLING_MODES",
    "effective_handler",
    "infer_handler_name",
    "validate_group",
    "validate_trace_arguments",
]

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


def effective_handler(group: dict[str, Any]) -> tuple[FrequencyHandler, str]:
    """The handler a group's analysis uses, and its name in the trace."""
    spec = group["handler"] if group["layer_boost"] else "default"
    handler = get_handler(spec)
    name = spec if isinstance(spec, str) else getattr(handler, "name", type(handler).__name__)
    return handler, str(name)


def validate_trace_arguments(debug: bool, debug_dir: str, debug_interval: int) -> None:
    """Raise ValueError for the specification's trace arguments that cannot work."""
    if not _is_int(debug_interval) or debug_interval < 1:
        raise ValueError(f"debug_interval must be a positive integer, got {debug_interval!r}")
    if debug and not debug_dir:
        raise ValueError("debug=True needs a debug_dir")


def validate_group(group: dict[str, Any], index: int) -> None:
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
