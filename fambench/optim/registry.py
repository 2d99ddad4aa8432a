"""Optimizer registry: names → factories with default hyperparameters, plus plug-ins.

``build_optimizer(name, model, **overrides)`` resolves ``name`` in this order:

1. a registered name (built-ins: ``fam``, ``fam-fixed``, ``simple-fam``, ``adamw``, ``sgd``);
2. a dotted path ``package.module:Name``: an :class:`torch.optim.Optimizer` subclass receives
   ``model.parameters()``, any other callable receives the model;
3. an entry point of the group ``fambench.optimizers`` (the object it loads may be an
   :class:`OptimizerSpec`, an Optimizer subclass or a callable taking the model).

Overrides are checked against the entry's defaults (unknown keys are refused, listing the valid
ones) and against the usual ranges (``lr > 0``, momenta in ``[0, 1)``, ...). Every problem is an
:class:`OptimizerConfigError` with a one-line message.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from fambench.optim.fam import SAMPLING_MODES, FAMOptimizer
from fambench.optim.groups import get_parameter_groups
from fambench.optim.simple_fam import SimpleFAM

__all__ = [
    "ENTRY_POINT_GROUP",
    "OptimizerConfigError",
    "OptimizerSpec",
    "build_optimizer",
    "get_optimizer_spec",
    "list_optimizers",
    "parse_override_value",
    "register_optimizer",
    "resolve_hyperparameters",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fambench.optimizers"


class OptimizerConfigError(ValueError):
    """An unknown optimizer name or an invalid hyperparameter (one-line message)."""


@dataclass(frozen=True)
class OptimizerSpec:
    """A registry entry.

    ``factory(model, **hyperparameters)`` builds the optimizer; ``defaults`` lists every
    hyperparameter it accepts with its default (treat it as read-only). ``is_fam`` tells a
    trainer that the optimizer accepts ``debug``/``debug_dir``; ``trace`` whether a trainer
    should turn that trace on (off for ``fam-fixed``: tracing would run the frequency analysis
    it exists to leave out, and charge it to its wall-clock). ``accepts_any`` is set when the
    factory takes ``**kwargs`` (keys beyond ``defaults`` are then passed through).
    """

    name: str
    description: str
    defaults: dict[str, Any]
    factory: Callable[..., Optimizer] = field(repr=False)
    is_fam: bool = False
    accepts_any: bool = False
    trace: bool = True


_REGISTRY: dict[str, OptimizerSpec] = {}


def register_optimizer(
    name: str,
    factory: Callable[..., Optimizer],
    *,
    defaults: Mapping[str, Any],
    description: str,
    is_fam: bool = False,
    trace: bool = True,
    replace: bool = False,
) -> OptimizerSpec:
    """Register ``factory(model, **hyperparameters)`` under ``name`` and return its spec."""
    if not isinstance(name, str) or not name or ":" in name:
        raise OptimizerConfigError(f"invalid optimizer name {name!r} (non-empty, no ':')")
    if not callable(factory):
        raise OptimizerConfigError(f"optimizer {name!r}: factory must be callable")
    if name in _REGISTRY and not replace:
        raise OptimizerConfigError(
            f"optimizer {name!r} is already registered (pass replace=True to override it)"
        )
    spec = OptimizerSpec(name, description, dict(defaults), factory, is_fam, trace=trace)
    _REGISTRY[name] = spec
    return spec


def list_optimizers(*, include_plugins: bool = True) -> list[OptimizerSpec]:
    """Registered optimizers, then installed entry-point plug-ins (those that load)."""
    specs = [_REGISTRY[name] for name in sorted(_REGISTRY)]
    if include_plugins:
        for entry in _entry_points():
            if entry.name in _REGISTRY:
                continue
            try:
                specs.append(_spec_from_object(entry.name, entry.load()))
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
        return _spec_from_object(name, _load_dotted(name))
    for entry in _entry_points():
        if entry.name == name:
            try:
                obj = entry.load()
            except Exception as exc:
                raise OptimizerConfigError(
                    f"optimizer plug-in {name!r} ({entry.value}) failed to load: {exc}"
                ) from exc
            return _spec_from_object(name, obj)
    plugins = sorted({e.name for e in _entry_points()} - set(_REGISTRY))
    choices = ", ".join(sorted(_REGISTRY) + plugins)
    raise OptimizerConfigError(
        f"unknown optimizer {name!r}; choose one of: {choices}, "
        f"or a dotted path package.module:Name, or a plug-in of entry-point group "
        f"{ENTRY_POINT_GROUP}"
    )


def resolve_hyperparameters(name: str, **overrides: Any) -> dict[str, Any]:
    """Hyperparameters ``build_optimizer(name, ...)`` would use: defaults + checked overrides."""
    return _resolve(get_optimizer_spec(name), overrides)


def build_optimizer(name: str, model: nn.Module | Iterable, **overrides: Any) -> Optimizer:
    """Build optimizer ``name`` for ``model`` with hyperparameter ``overrides``."""
    spec = get_optimizer_spec(name)
    hyperparameters = _resolve(spec, overrides)
    try:
        optimizer = spec.factory(model, **hyperparameters)
    except (TypeError, ValueError) as exc:
        raise OptimizerConfigError(f"optimizer {spec.name!r}: {exc}") from exc
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
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(key: str, value: Any, low: float, high: float | None, closed_high: bool) -> str:
    if not _is_number(value) or not math.isfinite(value):
        return f"{key} must be a number, got {value!r}"
    if value < low or (high is not None and (value > high if closed_high else value >= high)):
        upper = "]" if closed_high else ")"
        bound = f"in [{low:g}, {high:g}{upper}" if high is not None else f">= {low:g}"
        return f"{key} must be {bound}, got {value!r}"
    return ""


def _check_value(key: str, value: Any, default: Any) -> str:
    """Empty string when ``value`` is acceptable for ``key``, else the problem."""
    if value is None and default is None:
        return ""
    if key == "lr":
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            return f"lr must be a number > 0, got {value!r}"
        return ""
    if key in ("alpha", "beta", "momentum"):
        return _check_range(key, value, 0.0, 1.0, closed_high=False)
    if key == "dampening":
        return _check_range(key, value, 0.0, 1.0, closed_high=True)
    if key in ("weight_decay", "eps"):
        return _check_range(key, value, 0.0, None, closed_high=False)
    if key == "betas":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            return f"betas must be a pair like [0.9, 0.999], got {value!r}"
        for beta in value:
            problem = _check_range("betas", beta, 0.0, 1.0, closed_high=False)
            if problem:
                return problem
        return ""
    if key in ("n_bands", "fam_start_step", "min_size", "debug_interval", "seed"):
        low = {"n_bands": 1, "debug_interval": 1, "seed": None}.get(key, 0)
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or (low is not None and value < low)
        ):
            bound = "an integer" if low is None else f"an integer >= {low}"
            return f"{key} must be {bound}, got {value!r}"
        return ""
    if key == "sampling":
        if value not in SAMPLING_MODES:
            return f"sampling must be one of {', '.join(SAMPLING_MODES)}, got {value!r}"
        return ""
    if key == "debug_dir":
        return (
            "" if isinstance(value, str) and value else f"debug_dir must be a path, got {value!r}"
        )
    if isinstance(default, bool) and not isinstance(value, bool):
        return f"{key} must be true or false, got {value!r}"
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


# ------------------------------------------------------------------------------- plug-ins


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def _load_dotted(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise OptimizerConfigError(f"optimizer path {path!r} must look like package.module:Name")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise OptimizerConfigError(
            f"optimizer {path!r}: cannot import module {module_name!r} ({exc})"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise OptimizerConfigError(
                f"optimizer {path!r}: {module_name!r} has no attribute {attribute!r}"
            ) from None
    return obj


def _parameters(model: Any) -> Iterable:
    return model.parameters() if isinstance(model, nn.Module) else model


def _signature_defaults(target: Callable, skip_first: bool) -> tuple[dict[str, Any], bool]:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {}, True
    defaults: dict[str, Any] = {}
    accepts_any = False
    parameters = list(signature.parameters.values())
    if (
        skip_first
        and parameters
        and parameters[0].kind
        in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )
    ):
        parameters = parameters[1:]
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_any = True
        elif (
            parameter.kind
            in (
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.KEYWORD_ONLY,
            )
            and parameter.default is not inspect.Parameter.empty
        ):
            defaults[parameter.name] = parameter.default
    return defaults, accepts_any


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _spec_from_object(name: str, obj: Any) -> OptimizerSpec:
    """Wrap what a dotted path or entry point points at into an OptimizerSpec."""
    if isinstance(obj, OptimizerSpec):
        return dataclasses.replace(obj, name=name)
    if isinstance(obj, type) and issubclass(obj, Optimizer):
        defaults, accepts_any = _signature_defaults(obj, skip_first=True)
        optimizer_class = obj

        def factory(model: Any, **hyperparameters: Any) -> Optimizer:
            return optimizer_class(_parameters(model), **hyperparameters)

        return OptimizerSpec(
            name,
            _first_doc_line(obj) or f"{obj.__module__}.{obj.__qualname__}",
            defaults,
            factory,
            is_fam=issubclass(obj, FAMOptimizer),
            accepts_any=accepts_any,
        )
    if callable(obj):
        defaults, accepts_any = _signature_defaults(obj, skip_first=True)
        return OptimizerSpec(
            name,
            _first_doc_line(obj) or name,
            defaults,
            obj,
            is_fam=bool(getattr(obj, "is_fam", False)),
            accepts_any=accepts_any,
        )
    raise OptimizerConfigError(
        f"optimizer {name!r} points at a {type(obj).__name__}; expected an Optimizer class, "
        "a factory taking the model, or an OptimizerSpec"
    )


# ------------------------------------------------------------------------------- built-ins


_FAM_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.0,
    "alpha": None,
    "beta": 0.99,
    "eps": 1e-8,
    "n_bands": None,
    "fam_start_step": 100,
    "min_size": 256,
    "layer_boost": True,
    "sampling": "ordered",
    "seed": 0,
    "debug": False,
    "debug_dir": "./fam_debug",
    "debug_interval": 1000,
}


def _fam_factory(adaptive: bool) -> Callable[..., Optimizer]:
    def factory(model: nn.Module, **hp: Any) -> Optimizer:
        if not isinstance(model, nn.Module):
            raise TypeError("fam optimizers need an nn.Module (they group parameters by module)")
        groups = get_parameter_groups(model, lr=hp["lr"], weight_decay=hp["weight_decay"])
        for group in groups:
            if hp["alpha"] is not None:
                group["alpha"] = hp["alpha"]
            if hp["n_bands"] is not None:
                group["n_bands"] = hp["n_bands"]
        return FAMOptimizer(
            groups,
            lr=hp["lr"],
            alpha=0.9 if hp["alpha"] is None else hp["alpha"],
            beta=hp["beta"],
            eps=hp["eps"],
            weight_decay=hp["weight_decay"],
            n_bands=8 if hp["n_bands"] is None else hp["n_bands"],
            fam_start_step=hp["fam_start_step"],
            layer_boost=hp["layer_boost"],
            min_size=hp["min_size"],
            debug=hp["debug"],
            debug_dir=hp["debug_dir"],
            debug_interval=hp["debug_interval"],
            sampling=hp["sampling"],
            seed=hp["seed"],
            adaptive=adaptive,
        )

    return factory


def _simple_fam(model: nn.Module, **hp: Any) -> Optimizer:
    return SimpleFAM(_parameters(model), **hp)


def _adamw(model: nn.Module, **hp: Any) -> Optimizer:
    return torch.optim.AdamW(_parameters(model), foreach=True, **hp)


def _sgd(model: nn.Module, **hp: Any) -> Optimizer:
    return torch.optim.SGD(_parameters(model), foreach=True, **hp)


register_optimizer(
    "fam",
    _fam_factory(adaptive=True),
    defaults=_FAM_DEFAULTS,
    description=(
        "Frequency-Adaptive Momentum over module-type groups (conv/attention/embedding/norm/"
        "other); alpha/n_bands none = each group's own value"
    ),
    is_fam=True,
)
register_optimizer(
    "fam-fixed",
    _fam_factory(adaptive=False),
    defaults=_FAM_DEFAULTS,
    description="FAM with frequency adaptation off: same groups and update, momentum = alpha",
    is_fam=True,
    trace=False,
)
register_optimizer(
    "simple-fam",
    _simple_fam,
    defaults={"lr": 1e-3, "alpha": 0.9, "beta": 0.99, "weight_decay": 0.0},
    description="SimpleFAM: one upper-half-spectrum rule for tensors over 1000 entries",
)
register_optimizer(
    "adamw",
    _adamw,
    defaults={
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.01,
        "amsgrad": False,
    },
    description="torch.optim.AdamW (foreach)",
)
register_optimizer(
    "sgd",
    _sgd,
    defaults={"lr": 1e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0},
    description="torch.optim.SGD with Nesterov momentum (foreach)",
)
