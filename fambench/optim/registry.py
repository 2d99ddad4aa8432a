"""Optimizer registry: names → factories with default hyperparameters, plus plug-ins.

``build_optimizer(name, model, **overrides)`` resolves ``name`` in this order:

1. a registered name (built-ins, :mod:`fambench.optim.builtins`: ``fam``, ``fam-fixed``,
   ``simple-fam``, ``adamw``, ``sgd``, and the field's baselines ``nadamw``, ``sfadamw``,
   ``soap``, ``muon``, ``lion``);
2. a dotted path ``package.module:Name``: an :class:`torch.optim.Optimizer` subclass receives
   ``model.parameters()``, any other callable receives the model;
3. an entry point of the group ``fambench.optimizers`` (the object it loads may be an
   :class:`OptimizerSpec`, an Optimizer subclass or a callable taking the model).

:mod:`fambench.optim.plugins` turns the last two into an :class:`OptimizerSpec`.

Each entry may declare a search space (:mod:`fambench.optim.search`): its tunable
hyperparameters with ranges and scales, checked against its defaults when registered.
:func:`resolve_search_space` gives an entry's space, or a user's search-space file's.

Overrides are checked generically against the entry's defaults: unknown keys are refused
(listing the valid ones) and a value must fit its default's type (see :func:`_check_value`).
Ranges are the optimizer's own business: it checks its values when built, and
:func:`build_optimizer` reports its ``ValueError``/``TypeError``. Every problem is an
:class:`OptimizerConfigError` with a one-line message naming the optimizer.

The registry knows no optimizer by name: what a trainer or a comparison needs is a capability an
entry declares (``OptimizerSpec.ablation_of``, :class:`~fambench.optim.capabilities.Capabilities`)
or an optimizer implements (:class:`~fambench.optim.tracing.TraceWriter`, ``train()``/``eval()``).
Each entry names the installed distribution its code comes from (``OptimizerSpec.package``), so
that a run records which implementation and version it trained with (:func:`optimizer_source`).
"""

from __future__ import annotations

import ast
import json
import logging
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any

from torch import nn
from torch.optim import Optimizer

from fambench.optim.capabilities import Capabilities
from fambench.optim.errors import OptimizerConfigError
from fambench.optim.plugins import entry_points, load_dotted, spec_from_object
from fambench.optim.search import Dimension, load_search_space, search_space_problem
from fambench.optim.spec import (
    ENTRY_POINT_GROUP,
    OptimizerSpec,
    checked_capabilities,
    checked_space,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "OptimizerConfigError",
    "OptimizerSpec",
    "build_optimizer",
    "get_optimizer_spec",
    "list_optimizers",
    "optimizer_source",
    "parse_override_value",
    "register_optimizer",
    "resolve_hyperparameters",
    "resolve_search_space",
]

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, OptimizerSpec] = {}


def register_optimizer(
    name: str,
    factory: Callable[..., Optimizer],
    *,
    defaults: Mapping[str, Any],
    description: str,
    ablation_of: str | None = None,
    search_space: Mapping[str, Dimension | Mapping[str, Any]] | None = None,
    capabilities: Capabilities | Mapping[str, Any] | None = None,
    package: str = "",
    replace: bool = False,
) -> OptimizerSpec:
    """Register ``factory(model, **hyperparameters)`` under ``name`` and return its spec.

    ``ablation_of`` names the optimizer this one is an ablation of (see :class:`OptimizerSpec`).
    ``search_space`` maps names to Dimension objects or their JSON form; every name must be a
    key of ``defaults`` (or ``key.index`` of a tuple default, or a schedule setting).
    ``capabilities`` (or its dict form) says what it needs from the trainer; ``package`` names
    the distribution its code comes from.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise OptimizerConfigError(f"invalid optimizer name {name!r} (non-empty, no ':')")
    if not callable(factory):
        raise OptimizerConfigError(f"optimizer {name!r}: factory must be callable")
    if ablation_of is not None and (
        not isinstance(ablation_of, str) or not ablation_of or ablation_of == name
    ):
        raise OptimizerConfigError(
            f"optimizer {name!r}: ablation_of must name another optimizer, got {ablation_of!r}"
        )
    if name in _REGISTRY and not replace:
        raise OptimizerConfigError(
            f"optimizer {name!r} is already registered (pass replace=True to override it)"
        )
    space = checked_space(name, search_space or {}, defaults, accepts_any=False)
    spec = OptimizerSpec(
        name,
        description,
        dict(defaults),
        factory,
        ablation_of=ablation_of,
        search_space=space,
        capabilities=checked_capabilities(name, capabilities),
        package=package,
    )
    _REGISTRY[name] = spec
    return spec


def optimizer_source(spec: OptimizerSpec) -> str:
    """``"<distribution> <version>"`` of the code behind ``spec`` ("" when unknown)."""
    if not spec.package:
        return ""
    try:
        return f"{spec.package} {metadata.version(spec.package)}"
    except metadata.PackageNotFoundError:
        return spec.package


def list_optimizers(*, include_plugins: bool = True) -> list[OptimizerSpec]:
    """Registered optimizers, then installed entry-point plug-ins (those that load)."""
    specs = [_REGISTRY[name] for name in sorted(_REGISTRY)]
    if include_plugins:
        for entry in entry_points():
            if entry.name in _REGISTRY:
                continue
            try:
                specs.append(spec_from_object(entry.name, entry.load()))
            except Exception as exc:  # a broken plug-in must not hide the others
                logger.warning("skipping optimizer plug-in %r: %s", entry.name, exc)
    return specs


def get_optimizer_spec(name: str) -> OptimizerSpec:
    """Resolve a registered name, a dotted path ``pkg.module:Name`` or an entry point."""
    if not isinstance(name, str) or not name.strip():
        raise OptimizerConfigError(f"optimizer name must be a non-empty string, got {name!r}")
    name = name.strip()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.lower() in _REGISTRY:
        return _REGISTRY[name.lower()]
    if ":" in name:
        return spec_from_object(name, load_dotted(name))
    for entry in entry_points():
        if entry.name == name:
            try:
                obj = entry.load()
            except Exception as exc:
                raise OptimizerConfigError(
                    f"optimizer plug-in {name!r} ({entry.value}) failed to load: {exc}"
                ) from exc
            return spec_from_object(name, obj)
    plugins = sorted({e.name for e in entry_points()} - set(_REGISTRY))
    choices = ", ".join(sorted(_REGISTRY) + plugins)
    raise OptimizerConfigError(
        f"unknown optimizer {name!r}; choose one of: {choices}, "
        f"or a dotted path package.module:Name, or a plug-in of entry-point group "
        f"{ENTRY_POINT_GROUP}"
    )


def resolve_hyperparameters(name: str, **overrides: Any) -> dict[str, Any]:
    """Hyperparameters ``build_optimizer(name, ...)`` would use: defaults + overrides.

    Only the generic checks run here (known keys, types that fit the defaults); the optimizer
    checks its ranges when :func:`build_optimizer` builds it.
    """
    return _resolve(get_optimizer_spec(name), overrides)


def resolve_search_space(name: str, path: str | os.PathLike | None = None) -> dict[str, Dimension]:
    """The search space to tune optimizer ``name`` over: the file's when ``path`` is given
    (its names checked against the optimizer's defaults), else the one the entry declares.
    """
    spec = get_optimizer_spec(name)
    if path is not None:
        space = load_search_space(path)
        problem = search_space_problem(space, spec.defaults, accepts_any=spec.accepts_any)
        if problem:
            raise OptimizerConfigError(
                f"optimizer {spec.name!r}: search space file '{os.fspath(path)}': {problem}"
            )
        return space
    if not spec.search_space:
        raise OptimizerConfigError(
            f"optimizer {spec.name!r} declares no search space; pass --search-space FILE"
        )
    return dict(spec.search_space)


def build_optimizer(name: str, model: nn.Module | Iterable, **overrides: Any) -> Optimizer:
    """Build optimizer ``name`` for ``model`` with hyperparameter ``overrides``.

    Any exception of the factory (the optimizer refusing a value, a plug-in's own bug) becomes an
    :class:`OptimizerConfigError` naming the optimizer.
    """
    spec = get_optimizer_spec(name)
    hyperparameters = _resolve(spec, overrides)
    try:
        optimizer = spec.factory(model, **hyperparameters)
    except (TypeError, ValueError) as exc:
        raise OptimizerConfigError(f"optimizer {spec.name!r}: {exc}") from exc
    except Exception as exc:  # a plug-in's constructor failing in its own way
        raise OptimizerConfigError(
            f"optimizer {spec.name!r} failed to construct: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(optimizer, Optimizer):
        raise OptimizerConfigError(
            f"optimizer {spec.name!r}: factory returned {type(optimizer).__name__}, "
            "expected a torch.optim.Optimizer"
        )
    return optimizer


def parse_override_value(text: str) -> Any:
    """Turn command-line text into a value: numbers, true/false, none/null, [lists], strings."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if lowered in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(stripped)
        except ValueError:
            pass
    if stripped[:1] in "[({":
        try:
            return json.loads(stripped)
        except ValueError:
            try:
                return ast.literal_eval(stripped)
            except (ValueError, SyntaxError):
                pass
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
        return stripped[1:-1]
    return stripped


# ------------------------------------------------------------------------------ validation


def _is_number(value: Any) -> bool:
    """A finite int or float (bools are not numbers here)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, numbers.Real) and math.isfinite(value)


def _check_value(key: str, value: Any, default: Any) -> str:
    """Empty string when ``value`` fits the type of ``default``, else the problem.

    bool default → a bool; int/float default → a finite number (not a bool); str default → a
    string; tuple/list default → a list or tuple of the same length, with numbers where the
    default has numbers; None or any other default → anything. Ranges are the optimizer's own.
    """
    if isinstance(default, bool):
        return "" if isinstance(value, bool) else f"{key} must be true or false, got {value!r}"
    if isinstance(default, (int, float)):
        return "" if _is_number(value) else f"{key} must be a number, got {value!r}"
    if isinstance(default, str):
        return "" if isinstance(value, str) else f"{key} must be a string, got {value!r}"
    if isinstance(default, (tuple, list)):
        fits = (
            isinstance(value, (tuple, list))
            and len(value) == len(default)
            and all(
                _is_number(item)
                for item, model in zip(value, default, strict=True)
                if _is_number(model)
            )
        )
        if not fits:
            return f"{key} must be a list of {len(default)} values like {list(default)!r}, got {value!r}"
    return ""


def _resolve(spec: OptimizerSpec, overrides: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(spec.defaults))
    if unknown and not spec.accepts_any:
        valid = ", ".join(sorted(spec.defaults)) or "(none)"
        raise OptimizerConfigError(
            f"optimizer {spec.name!r}: unknown hyperparameter {unknown[0]!r}; valid: {valid}"
        )
    resolved = {**spec.defaults, **overrides}
    for key, value in overrides.items():
        problem = _check_value(key, value, spec.defaults.get(key))
        if problem:
            raise OptimizerConfigError(f"optimizer {spec.name!r}: {problem}")
    return resolved
