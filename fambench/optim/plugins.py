"""Plug-ins: a dotted path ``package.module:Name`` or an entry point of the group
``fambench.optimizers`` turned into an :class:`~fambench.optim.spec.OptimizerSpec`.

The object a plug-in points at may be an :class:`OptimizerSpec`, an
:class:`torch.optim.Optimizer` subclass (it receives ``model.parameters()``) or any other
callable (it receives the model); its keyword defaults become the entry's defaults.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from importlib import metadata
from typing import Any

from torch.optim import Optimizer

from fambench.optim.capabilities import CAPABILITIES_ATTRIBUTE
from fambench.optim.errors import OptimizerConfigError
from fambench.optim.spec import (
    ENTRY_POINT_GROUP,
    OptimizerSpec,
    checked_capabilities,
    checked_space,
    model_parameters,
)

SEARCH_SPACE_ATTRIBUTE = "fambench_search_space"
"""A plug-in class or factory may declare its search space (JSON form) in this attribute."""


def entry_points() -> list[metadata.EntryPoint]:
    """The installed distributions' entry points of the group ``fambench.optimizers``."""
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def load_dotted(path: str) -> Any:
    """The object ``package.module:Name`` names (``Name`` may be dotted: ``Outer.Inner``)."""
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


def _package_of(obj: Any) -> str:
    """The installed distribution that provides ``obj``'s top-level module ("" if none)."""
    module = getattr(obj, "__module__", None) or ""
    top = module.split(".")[0]
    if not top:
        return ""
    names = metadata.packages_distributions().get(top) or []
    return names[0] if names else ""


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


def spec_from_object(name: str, obj: Any) -> OptimizerSpec:
    """Wrap what a dotted path or entry point points at into an OptimizerSpec."""
    if isinstance(obj, OptimizerSpec):
        space = checked_space(name, obj.search_space, obj.defaults, accepts_any=obj.accepts_any)
        package = obj.package or _package_of(obj.factory)
        return dataclasses.replace(obj, name=name, search_space=space, package=package)
    if not callable(obj):
        raise OptimizerConfigError(
            f"optimizer {name!r} points at a {type(obj).__name__}; expected an Optimizer class, "
            "a factory taking the model, or an OptimizerSpec"
        )
    defaults, accepts_any = _signature_defaults(obj, skip_first=True)
    space = checked_space(
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
        capabilities=checked_capabilities(name, getattr(obj, CAPABILITIES_ATTRIBUTE, None)),
        package=_package_of(obj),
    )


def _class_factory(optimizer_class: type[Optimizer]) -> Callable[..., Optimizer]:
    """A factory giving an Optimizer subclass the model's parameters."""

    def factory(model: Any, **hyperparameters: Any) -> Optimizer:
        return optimizer_class(model_parameters(model), **hyperparameters)

    return factory
