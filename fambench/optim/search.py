"""Hyperparameter search spaces: dimensions, their JSON form, and sampled points → overrides.

A search space maps a name to a :class:`Dimension`. A name is

* a hyperparameter key of the optimizer (``"lr"``, ``"momentum"``, ``"fam_start_step"``),
* an element of a tuple/list hyperparameter, ``"<key>.<index>"`` (``"betas.0"``, ``"betas.1"``),
* or a schedule setting the trainer understands (:data:`SCHEDULE_SETTINGS`:
  ``"warmup_fraction"``, the fraction of the run spent warming the learning rate up). These are
  no optimizer hyperparameters: they are not checked against an optimizer's defaults, and
  :func:`apply_point` passes them through for the trainer to take out.

The JSON form follows MLCommons AlgoPerf's ``tuning_search_space.json``::

    {"lr": {"min": 1e-4, "max": 1e-2, "scaling": "log"},
     "fam_start_step": {"min": 10, "max": 500, "scaling": "linear", "type": "int"}}

``scaling`` is ``"linear"``, ``"log"`` or ``"log1m"`` (log scale on 1 - value, for momenta close
to 1: momentum in [0.8, 0.99] is sampled as 1 - momentum log-uniformly in [0.01, 0.2]);
``"type"`` is ``"float"`` (the default) or ``"int"``. Every problem is an
:class:`~fambench.optim.errors.OptimizerConfigError` (a ValueError) with a one-line message
naming the source and the dimension.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from fambench.optim.errors import OptimizerConfigError

__all__ = [
    "SCALES",
    "SCHEDULE_SETTINGS",
    "Dimension",
    "SearchSpace",
    "apply_point",
    "load_search_space",
    "parse_search_space",
    "search_space_problem",
    "search_space_to_json",
]

Scale = Literal["linear", "log", "log1m"]
SCALES: tuple[str, ...] = ("linear", "log", "log1m")
SCHEDULE_SETTINGS: frozenset[str] = frozenset({"warmup_fraction"})
"""Search-space names that are schedule settings of the trainer, not optimizer hyperparameters."""

_JSON_KEYS = ("min", "max", "scaling", "type")


@dataclass(frozen=True)
class Dimension:
    """One tunable value: ``low`` and ``high`` (inclusive), a ``scale``, integer or not.

    The JSON form calls them ``min``, ``max``, ``scaling`` and ``"type": "int"``. A dimension
    that breaks a rule (see :func:`_dimension_problem`) raises OptimizerConfigError.
    """

    low: float
    high: float
    scale: Scale
    integer: bool = False

    def __post_init__(self) -> None:
        problem = _dimension_problem(self.low, self.high, self.scale, self.integer)
        if problem:
            raise OptimizerConfigError(problem)
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))

    def from_unit(self, u: float) -> float | int:
        """The value at position ``u`` in [0, 1] along the scale (0 → low, 1 → high).

        linear: uniform in value; log: uniform in log(value); log1m: uniform in log(1 - value).
        An integer dimension rounds to the nearest integer within the bounds.
        """
        if not 0.0 <= u <= 1.0:
            raise OptimizerConfigError(f"unit position must be in [0, 1], got {u!r}")
        low, high = self.low, self.high
        if self.scale == "log":
            value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        elif self.scale == "log1m":
            value = 1.0 - math.exp(math.log1p(-low) + u * (math.log1p(-high) - math.log1p(-low)))
        else:
            value = low + u * (high - low)
        value = min(max(value, low), high)
        return int(min(max(round(value), low), high)) if self.integer else value


SearchSpace: TypeAlias = Mapping[str, Dimension]


def _dimension_problem(low: Any, high: Any, scale: Any, integer: Any) -> str:
    """Empty string when the dimension is valid, else what is wrong (one line).

    Bounds finite numbers with low < high; scale one of :data:`SCALES`; log needs low > 0;
    log1m needs high < 1; an integer dimension needs integral bounds and a linear or log scale.
    """
    finite = [
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        for v in (low, high)
    ]
    if not all(finite):
        return f"bounds must be finite numbers, got [{low!r}, {high!r}]"
    if not low < high:
        return f"lower bound {low!r} must be below upper bound {high!r}"
    if scale not in SCALES:
        return f"scaling must be one of {', '.join(SCALES)}, got {scale!r}"
    if scale == "log" and low <= 0:
        return f"log scaling needs a lower bound > 0, got {low!r}"
    if scale == "log1m" and high >= 1:
        return f"log1m scaling needs an upper bound < 1, got {high!r}"
    if not isinstance(integer, bool):
        return f"integer must be true or false, got {integer!r}"
    if integer and scale not in ("linear", "log"):
        return f"an integer dimension needs linear or log scaling, got {scale!r}"
    if integer and not (float(low).is_integer() and float(high).is_integer()):
        return f"an integer dimension needs integral bounds, got [{low!r}, {high!r}]"
    return ""


def _dimension_from_json(entry: Any) -> Dimension:
    """One JSON entry (or an existing Dimension) → Dimension; the message lacks the name."""
    if isinstance(entry, Dimension):
        return entry
    if not isinstance(entry, Mapping):
        raise OptimizerConfigError(
            f'must be an object like {{"min": 0.1, "max": 1, "scaling": "log"}}, got {entry!r}'
        )
    if "feasible_points" in entry:
        raise OptimizerConfigError(
            "feasible_points (a discrete list) is not supported; give min, max, scaling"
        )
    unknown = sorted(str(key) for key in entry if key not in _JSON_KEYS)
    if unknown:
        raise OptimizerConfigError(f"unknown key {unknown[0]!r}; valid: {', '.join(_JSON_KEYS)}")
    missing = [key for key in _JSON_KEYS[:3] if key not in entry]
    if missing:
        raise OptimizerConfigError(
            f"missing {missing[0]!r} (each dimension needs min, max and scaling)"
        )
    kind = entry.get("type", "float")
    if kind not in ("int", "float"):
        raise OptimizerConfigError(f"type must be 'int' or 'float', got {kind!r}")
    return Dimension(entry["min"], entry["max"], entry["scaling"], kind == "int")


def parse_search_space(
    data: Mapping[str, Any], *, source: str = "search space"
) -> dict[str, Dimension]:
    """The JSON form (values may also be Dimension objects already) → ``{name: Dimension}``.

    ``source`` starts every error message (e.g. ``"search space file 'tuning.json'"``); the
    message then names the dimension: ``search space: 'lr': log scaling needs a lower bound > 0``.
    Names are not checked against an optimizer here (see :func:`search_space_problem`).
    """
    if not isinstance(data, Mapping):
        raise OptimizerConfigError(
            f"{source}: must be an object mapping names to dimensions, got {type(data).__name__}"
        )
    space: dict[str, Dimension] = {}
    for name, entry in data.items():
        if not isinstance(name, str) or not name.strip():
            raise OptimizerConfigError(f"{source}: names must be non-empty strings, got {name!r}")
        try:
            space[name] = _dimension_from_json(entry)
        except OptimizerConfigError as exc:
            raise OptimizerConfigError(f"{source}: {name!r}: {exc}") from None
    return space


def load_search_space(path: str | os.PathLike) -> dict[str, Dimension]:
    """Read a search-space JSON file (see the module docstring); it must name a dimension."""
    source = f"search space file '{os.fspath(path)}'"
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise OptimizerConfigError(f"{source}: cannot read it ({exc.strerror or exc})") from exc
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise OptimizerConfigError(f"{source}: not valid JSON ({exc})") from exc
    space = parse_search_space(data, source=source)
    if not space:
        raise OptimizerConfigError(f"{source}: declares no dimension")
    return space


def search_space_to_json(space: SearchSpace) -> dict[str, dict[str, Any]]:
    """``{name: Dimension}`` → the JSON form; :func:`parse_search_space` reads it back equal."""
    data: dict[str, dict[str, Any]] = {}
    for name, dim in space.items():
        if dim.integer:
            data[name] = {"min": int(dim.low), "max": int(dim.high), "scaling": dim.scale}
            data[name]["type"] = "int"
        else:
            data[name] = {"min": dim.low, "max": dim.high, "scaling": dim.scale}
    return data


def _name_problem(name: str, defaults: Mapping[str, Any], accepts_any: bool) -> str:
    """Empty string when ``name`` can be tuned for an optimizer with these defaults."""
    if name in SCHEDULE_SETTINGS:
        return ""
    key, dot, index = name.partition(".")
    if key not in defaults:
        if accepts_any and not dot:
            return ""
        valid = ", ".join([*sorted(defaults), *sorted(SCHEDULE_SETTINGS)])
        return f"unknown hyperparameter {name!r}; valid: {valid}"
    default = defaults[key]
    is_sequence = isinstance(default, (tuple, list))
    if dot:
        if not is_sequence:
            return f"{name!r}: {key} is no tuple hyperparameter (default {default!r})"
        if not index.isdigit() or int(index) >= len(default):
            return f"{name!r}: {key} has indices 0 to {len(default) - 1}"
        default = default[int(index)]
    elif is_sequence:
        elements = ", ".join(f"{key}.{i}" for i in range(len(default)))
        return f"{name!r} is a tuple hyperparameter; tune its elements: {elements}"
    if isinstance(default, (bool, str)):
        return f"{name!r} is not numeric (default {default!r})"
    return ""


def search_space_problem(
    space: SearchSpace, defaults: Mapping[str, Any], *, accepts_any: bool = False
) -> str:
    """Empty string when every name of ``space`` fits an optimizer's ``defaults``, else the first
    problem: an unknown key, a bad tuple index, a whole tuple, a bool or string hyperparameter.

    Schedule settings (:data:`SCHEDULE_SETTINGS`) always fit; with ``accepts_any`` (a factory
    taking ``**kwargs``) so does any plain name.
    """
    for name in space:
        problem = _name_problem(name, defaults, accepts_any)
        if problem:
            return problem
    return ""


def apply_point(
    defaults: Mapping[str, Any],
    point: Mapping[str, float],
    *,
    space: SearchSpace | None = None,
) -> dict[str, Any]:
    """A sampled point → hyperparameter overrides (plus schedule settings, passed through).

    ``"betas.1": 0.98`` becomes ``{"betas": (defaults["betas"][0], 0.98)}`` (several indices of
    one key combine; the container keeps its type); plain names are copied. ``defaults`` may be
    the resolved hyperparameters (then an element not in the point keeps its resolved value).
    Values of integer dimensions of ``space`` are rounded to int.
    """
    overrides: dict[str, Any] = {}
    elements: dict[str, list[Any]] = {}
    for name, value in point.items():
        if space is not None and name in space and space[name].integer:
            value = int(round(value))
        key, dot, index = name.partition(".")
        if not dot:
            overrides[name] = value
            continue
        default = defaults.get(key)
        if (
            not isinstance(default, (tuple, list))
            or not index.isdigit()
            or int(index) >= len(default)
        ):
            raise OptimizerConfigError(
                f"point {name!r}: {key} has no element {index} (default {default!r})"
            )
        elements.setdefault(key, list(default))[int(index)] = value
    for key, items in elements.items():
        overrides[key] = tuple(items) if isinstance(defaults[key], tuple) else items
    return overrides
