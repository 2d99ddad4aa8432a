"""Optimizer registry: names → factories with default hyperparameters, plus plug-ins.

``build_optimizer(name, model, **overrides)`` resolves ``name`` in this order:

1. a registered name (built-ins: ``fam``, ``fam-fixed``, ``simple-fam``, ``adamw``, ``sgd``,
   and the field's baselines ``nadamw``, ``sfadamw``, ``soap``, ``muon``, ``lion``);
2. a dotted path ``package.module:Name``: an :class:`torch.optim.Optimizer` subclass receives
   ``model.parameters()``, any other callable receives the model;
3. an entry point of the group ``fambench.optimizers`` (the object it loads may be an
   :class:`OptimizerSpec`, an Optimizer subclass or a callable taking the model).

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
import dataclasses
import importlib
import inspect
import json
import logging
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from fambench.optim.capabilities import CAPABILITIES_ATTRIBUTE, Capabilities, parse_capabilities
from fambench.optim.errors import OptimizerConfigError
from fambench.optim.fam import FAMOptimizer
from fambench.optim.groups import get_parameter_groups, muon_parameter_groups
from fambench.optim.search import (
    Dimension,
    load_search_space,
    parse_search_space,
    search_space_problem,
)
from fambench.optim.simple_fam import SimpleFAM

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

ENTRY_POINT_GROUP = "fambench.optimizers"
SEARCH_SPACE_ATTRIBUTE = "fambench_search_space"
"""A plug-in class or factory may declare its search space (JSON form) in this attribute."""


@dataclass(frozen=True)
class OptimizerSpec:
    """A registry entry.

    ``factory(model, **hyperparameters)`` builds the optimizer; ``defaults`` lists every
    hyperparameter it accepts with its default (treat it as read-only). ``accepts_any`` is set
    when the factory takes ``**kwargs`` (keys beyond ``defaults`` are then passed through).
    ``ablation_of`` is the registry name of the optimizer this entry is an ablation of (the same
    method with one part switched off, e.g. ``fam-fixed`` of ``fam``), so that a comparison can
    label the pair "ablation" rather than "baseline"; None for an optimizer of its own.
    ``search_space`` maps the names of its tunable hyperparameters to their
    :class:`~fambench.optim.search.Dimension` (empty: none declared; treat it as read-only).
    ``capabilities``: what the optimizer needs from the trainer (evaluation-weight statistics,
    its schedule). ``package``: the installed distribution its code comes from ("" when
    unknown).
    """

    name: str
    description: str
    defaults: dict[str, Any]
    factory: Callable[..., Optimizer] = field(repr=False)
    accepts_any: bool = False
    ablation_of: str | None = None
    search_space: Mapping[str, Dimension] = field(default_factory=dict)
    capabilities: Capabilities = field(default_factory=Capabilities)
    package: str = ""


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
    space = _checked_space(name, search_space or {}, defaults, accepts_any=False)
    spec = OptimizerSpec(
        name,
        description,
        dict(defaults),
        factory,
        ablation_of=ablation_of,
        search_space=space,
        capabilities=_checked_capabilities(name, capabilities),
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
    except Exception as exc:  # the module itself raises while it is imported
        raise OptimizerConfigError(
            f"optimizer {path!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise OptimizerConfigError(
                f"optimizer {path!r}: {module_name!r} has no attribute {attribute!r}"
            ) from None
    return obj


def _checked_capabilities(name: str, data: Any) -> Capabilities:
    try:
        return parse_capabilities(data)
    except (TypeError, ValueError) as exc:
        raise OptimizerConfigError(f"optimizer {name!r}: capabilities: {exc}") from None


def _package_of(obj: Any) -> str:
    """The installed distribution that provides ``obj``'s top-level module ("" if none)."""
    module = getattr(obj, "__module__", None) or ""
    top = module.split(".")[0]
    if not top:
        return ""
    names = metadata.packages_distributions().get(top) or []
    return names[0] if names else ""


def _checked_space(
    name: str, data: Mapping[str, Any], defaults: Mapping[str, Any], *, accepts_any: bool
) -> dict[str, Dimension]:
    """Parse a declared search space (JSON form or Dimensions) and check its names."""
    space = parse_search_space(data, source=f"optimizer {name!r}: search space")
    problem = search_space_problem(space, defaults, accepts_any=accepts_any)
    if problem:
        raise OptimizerConfigError(f"optimizer {name!r}: search space: {problem}")
    return space


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
        space = _checked_space(name, obj.search_space, obj.defaults, accepts_any=obj.accepts_any)
        package = obj.package or _package_of(obj.factory)
        return dataclasses.replace(obj, name=name, search_space=space, package=package)
    if not callable(obj):
        raise OptimizerConfigError(
            f"optimizer {name!r} points at a {type(obj).__name__}; expected an Optimizer class, "
            "a factory taking the model, or an OptimizerSpec"
        )
    defaults, accepts_any = _signature_defaults(obj, skip_first=True)
    space = _checked_space(
        name, getattr(obj, SEARCH_SPACE_ATTRIBUTE, None) or {}, defaults, accepts_any=accepts_any
    )
    if isinstance(obj, type) and issubclass(obj, Optimizer):
        factory = _class_factory(obj)
        description = _first_doc_line(obj) or f"{obj.__module__}.{obj.__qualname__}"
    else:
        factory, description = obj, _first_doc_line(obj) or name
    return OptimizerSpec(
        name,
        description,
        defaults,
        factory,
        accepts_any=accepts_any,
        search_space=space,
        capabilities=_checked_capabilities(name, getattr(obj, CAPABILITIES_ATTRIBUTE, None)),
        package=_package_of(obj),
    )


def _class_factory(optimizer_class: type[Optimizer]) -> Callable[..., Optimizer]:
    """A factory giving an Optimizer subclass the model's parameters."""

    def factory(model: Any, **hyperparameters: Any) -> Optimizer:
        return optimizer_class(_parameters(model), **hyperparameters)

    return factory


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
}
"""FAM's hyperparameters. Its trace is no hyperparameter: see FAMOptimizer.start_trace."""


# Built-in search spaces (JSON form): starting points sized for the CPU-scale workloads, to be
# widened or narrowed per workload with a search-space file. Momentum-like knobs close to 1 use
# log1m; warmup_fraction is the trainer's schedule setting (fraction of the run warming up).
# A tuned weight_decay replaces the default even where the default (0.0) lies below the range.
# A tuned FAM alpha applies to every group (the default None keeps each group's own value).
_WARMUP_SPACE: dict[str, Any] = {"warmup_fraction": {"min": 0.02, "max": 0.3, "scaling": "linear"}}
_FAM_SPACE: dict[str, Any] = {
    "lr": {"min": 0.05, "max": 5.0, "scaling": "log"},
    "alpha": {"min": 0.5, "max": 0.99, "scaling": "log1m"},
    "beta": {"min": 0.9, "max": 0.999, "scaling": "log1m"},
    "weight_decay": {"min": 1e-6, "max": 1e-2, "scaling": "log"},
    "fam_start_step": {"min": 10, "max": 500, "scaling": "linear", "type": "int"},
    **_WARMUP_SPACE,
}
# With the frequency adaptation off, beta and fam_start_step change nothing: not tuned.
_FAM_FIXED_SPACE = {k: v for k, v in _FAM_SPACE.items() if k not in ("beta", "fam_start_step")}
_SIMPLE_FAM_SPACE = {k: v for k, v in _FAM_SPACE.items() if k != "fam_start_step"}
_ADAMW_SPACE: dict[str, Any] = {
    "lr": {"min": 1e-4, "max": 1e-2, "scaling": "log"},
    "betas.0": {"min": 0.8, "max": 0.99, "scaling": "log1m"},
    "betas.1": {"min": 0.9, "max": 0.9999, "scaling": "log1m"},
    "weight_decay": {"min": 1e-4, "max": 0.5, "scaling": "log"},
    **_WARMUP_SPACE,
}
_SGD_SPACE: dict[str, Any] = {
    "lr": {"min": 0.01, "max": 1.0, "scaling": "log"},
    "momentum": {"min": 0.8, "max": 0.99, "scaling": "log1m"},
    "weight_decay": {"min": 1e-6, "max": 1e-3, "scaling": "log"},
    **_WARMUP_SPACE,
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
    search_space=_FAM_SPACE,
    package="fambench",
)
register_optimizer(
    "fam-fixed",
    _fam_factory(adaptive=False),
    defaults=_FAM_DEFAULTS,
    description="FAM with frequency adaptation off: same groups and update, momentum = alpha",
    ablation_of="fam",
    search_space=_FAM_FIXED_SPACE,
    package="fambench",
)
register_optimizer(
    "simple-fam",
    _simple_fam,
    defaults={"lr": 1e-3, "alpha": 0.9, "beta": 0.99, "weight_decay": 0.0},
    description="SimpleFAM: one upper-half-spectrum rule for tensors over 1000 entries",
    search_space=_SIMPLE_FAM_SPACE,
    package="fambench",
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
    search_space=_ADAMW_SPACE,
    package="torch",
)
register_optimizer(
    "sgd",
    _sgd,
    defaults={"lr": 1e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0},
    description="torch.optim.SGD with Nesterov momentum (foreach)",
    search_space=_SGD_SPACE,
    package="torch",
)


# ------------------------------------------------------------------ the field's baselines
# Each from a well-kept library, built as its authors intend. Defaults: AlgoPerf's self-tuning
# configurations (NAdamW baseline; Schedule-Free AdamW, the v0.5 self-tuning winner) and the
# papers' (SOAP, Muon, Lion). Search spaces: AlgoPerf's NAdamW space; for the others, ranges
# around their authors' advice, as wide in decades as AdamW's (docs/baselines.md).

_NADAMW_SPACE: dict[str, Any] = {
    "lr": {"min": 1e-4, "max": 1e-2, "scaling": "log"},
    "betas.0": {"min": 0.9, "max": 0.996, "scaling": "log1m"},
    "weight_decay": {"min": 5e-3, "max": 1.0, "scaling": "log"},
    **_WARMUP_SPACE,
}
_SFADAMW_SPACE: dict[str, Any] = {
    "lr": {"min": 5e-4, "max": 2e-2, "scaling": "log"},
    "betas.0": {"min": 0.8, "max": 0.98, "scaling": "log1m"},
    "betas.1": {"min": 0.99, "max": 0.9995, "scaling": "log1m"},
    "weight_decay": {"min": 5e-3, "max": 0.5, "scaling": "log"},
    **_WARMUP_SPACE,
}
_SOAP_SPACE: dict[str, Any] = {
    "lr": {"min": 3e-4, "max": 1e-2, "scaling": "log"},
    "betas.0": {"min": 0.9, "max": 0.99, "scaling": "log1m"},
    "betas.1": {"min": 0.95, "max": 0.995, "scaling": "log1m"},
    "weight_decay": {"min": 1e-3, "max": 0.3, "scaling": "log"},
    **_WARMUP_SPACE,
}
_MUON_SPACE: dict[str, Any] = {
    "lr": {"min": 5e-3, "max": 0.1, "scaling": "log"},
    "momentum": {"min": 0.85, "max": 0.98, "scaling": "log1m"},
    "weight_decay": {"min": 1e-4, "max": 0.1, "scaling": "log"},
    "adamw_lr": {"min": 1e-4, "max": 1e-2, "scaling": "log"},
    **_WARMUP_SPACE,
}
_LION_SPACE: dict[str, Any] = {
    "lr": {"min": 1e-5, "max": 3e-3, "scaling": "log"},
    "betas.0": {"min": 0.8, "max": 0.98, "scaling": "log1m"},
    "betas.1": {"min": 0.95, "max": 0.999, "scaling": "log1m"},
    "weight_decay": {"min": 1e-2, "max": 10.0, "scaling": "log"},
    **_WARMUP_SPACE,
}


def _nadamw(model: nn.Module, **hp: Any) -> Optimizer:
    return torch.optim.NAdam(_parameters(model), decoupled_weight_decay=True, foreach=True, **hp)


def _sfadamw(model: nn.Module, **hp: Any) -> Optimizer:
    import schedulefree

    # Its own warmup is off: the trainer warms the learning rate up (the schedule it declares).
    return schedulefree.AdamWScheduleFree(_parameters(model), warmup_steps=0, **hp)


def _soap(model: nn.Module, **hp: Any) -> Optimizer:
    import pytorch_optimizer

    return pytorch_optimizer.SOAP(_parameters(model), **hp)


def _muon(model: nn.Module, **hp: Any) -> Optimizer:
    import pytorch_optimizer

    if not isinstance(model, nn.Module):
        raise TypeError("muon needs an nn.Module (it splits parameters by the module owning them)")
    muon = {k: hp[k] for k in ("lr", "momentum", "nesterov", "ns_steps", "weight_decay")}
    adamw = {
        "lr": hp["adamw_lr"],
        "betas": tuple(hp["adamw_betas"]),
        "eps": hp["adamw_eps"],
        "weight_decay": hp["adamw_wd"],
    }
    groups = muon_parameter_groups(model, muon, adamw)
    return pytorch_optimizer.Muon(groups, use_adjusted_lr=hp["use_adjusted_lr"])


def _lion(model: nn.Module, **hp: Any) -> Optimizer:
    import pytorch_optimizer

    return pytorch_optimizer.Lion(_parameters(model), **hp)


register_optimizer(
    "nadamw",
    _nadamw,
    defaults={
        "lr": 0.0017486,
        "betas": (0.9327, 0.9955),
        "eps": 1e-8,
        "weight_decay": 0.0812,
        # torch's NAdam schedules its momentum, mu_t = beta1 (1 - 0.5 * 0.96^(t * decay)); at
        # 1000, mu_t is beta1 from the first step, as in AlgoPerf's NAdamW (docs/baselines.md).
        "momentum_decay": 1000.0,
    },
    description="NAdamW, AlgoPerf's baseline: torch.optim.NAdam, decoupled weight decay",
    search_space=_NADAMW_SPACE,
    package="torch",
)
register_optimizer(
    "sfadamw",
    _sfadamw,
    defaults={
        "lr": 0.0025,
        "betas": (0.9, 0.9955),
        "eps": 1e-8,
        "weight_decay": 0.0812,
        "r": 0.75,
        "weight_lr_power": 2.0,
    },
    description="Schedule-Free AdamW (schedulefree): trains at one point, evaluated at its average",
    search_space=_SFADAMW_SPACE,
    # The authors: warmup but no decay, and batch-norm statistics recomputed at the evaluation
    # weights on about 50 training batches.
    capabilities=Capabilities(schedule="warmup-only", norm_batches=50),
    package="schedulefree",
)
register_optimizer(
    "soap",
    _soap,
    defaults={
        "lr": 3e-3,
        "betas": (0.95, 0.95),
        "weight_decay": 0.01,
        "precondition_frequency": 10,
        "max_precondition_dim": 10000,
        "merge_dims": False,
        "precondition_1d": False,
        "normalize_gradient": False,
        "correct_bias": True,
        "eps": 1e-8,
    },
    description="SOAP (Shampoo's eigenbasis + Adam): pytorch_optimizer.SOAP",
    search_space=_SOAP_SPACE,
    package="pytorch-optimizer",
)
register_optimizer(
    "muon",
    _muon,
    defaults={
        "lr": 0.02,
        "momentum": 0.95,
        "nesterov": True,
        "ns_steps": 5,
        "weight_decay": 0.01,
        "use_adjusted_lr": False,
        "adamw_lr": 3e-4,
        "adamw_betas": (0.9, 0.95),
        "adamw_eps": 1e-10,
        "adamw_wd": 0.01,
    },
    description=(
        "Muon for the hidden weight matrices (dense conv kernels flattened), AdamW for the "
        "rest, one optimizer: pytorch_optimizer.Muon"
    ),
    search_space=_MUON_SPACE,
    package="pytorch-optimizer",
)
register_optimizer(
    "lion",
    _lion,
    defaults={"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.1},
    description="Lion (sign of interpolated momentum): pytorch_optimizer.Lion",
    search_space=_LION_SPACE,
    package="pytorch-optimizer",
)
