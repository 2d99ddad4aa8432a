"""What a registry entry is (:class:`OptimizerSpec`) and the checks every way of making one runs.

The registry (:mod:`fambench.optim.registry`) and the plug-in loader
(:mod:`fambench.optim.plugins`) both build specs; what they share lives here so that neither
imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.optim import Optimizer

from fambench.optim.capabilities import Capabilities, parse_capabilities
from fambench.optim.errors import OptimizerConfigError
from fambench.optim.search import Dimension, parse_search_space, search_space_problem

ENTRY_POINT_GROUP = "fambench.optimizers"


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


def checked_capabilities(name: str, data: Any) -> Capabilities:
    """Parse declared capabilities (their object or dict form); a problem names the optimizer."""
    try:
        return parse_capabilities(data)
    except (TypeError, ValueError) as exc:
        raise OptimizerConfigError(f"optimizer {name!r}: capabilities: {exc}") from None


def checked_space(
    name: str, data: Mapping[str, Any], defaults: Mapping[str, Any], *, accepts_any: bool
) -> dict[str, Dimension]:
    """Parse a declared search space (JSON form or Dimensions) and check its names."""
    space = parse_search_space(data, source=f"optimizer {name!r}: search space")
    problem = search_space_problem(space, defaults, accepts_any=accepts_any)
    if problem:
        raise OptimizerConfigError(f"optimizer {name!r}: search space: {problem}")
    return space


def model_parameters(model: Any) -> Iterable:
    """A module's parameters; anything else (already parameters or groups) as it is."""
    return model.parameters() if isinstance(model, nn.Module) else model
