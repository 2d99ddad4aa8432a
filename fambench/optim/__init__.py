"""fambench.optim: Frequency-Adaptive Momentum and the optimizer registry (depends on torch only).

Usable from any training script::

    from fambench.optim import FAMOptimizer, WarmupHoldCosine, get_parameter_groups

    optimizer = FAMOptimizer(get_parameter_groups(model, lr=1e-3, weight_decay=1e-6))
    scheduler = WarmupHoldCosine(optimizer, warmup_steps=100, total_steps=10_000)

``FAMScheduler`` and ``FAMScheduler2`` (the specification's names) are aliases of
``WarmupHoldCosine``. An optimizer that can write a trace implements :class:`TraceWriter`.

Each registry entry declares a search space (its tunable hyperparameters as :class:`Dimension`
ranges and scales, JSON form as AlgoPerf's ``tuning_search_space.json``)::

    space = resolve_search_space("adamw")  # or resolve_search_space("adamw", "space.json")
    overrides = apply_point(get_optimizer_spec("adamw").defaults, {"betas.1": 0.98}, space=space)
"""

from fambench.optim import builtins  # noqa: F401  (importing it registers the built-ins)
from fambench.optim.capabilities import Capabilities, has_evaluation_modes
from fambench.optim.fam import FAMOptimizer, infer_handler_name
from fambench.optim.groups import get_parameter_groups
from fambench.optim.handlers import (
    AttentionFrequencyHandler,
    ConvFrequencyHandler,
    EmbeddingFrequencyHandler,
    FrequencyHandler,
    get_handler,
    handler_names,
    register_handler,
)
from fambench.optim.registry import (
    OptimizerConfigError,
    OptimizerSpec,
    build_optimizer,
    get_optimizer_spec,
    list_optimizers,
    optimizer_source,
    parse_override_value,
    register_optimizer,
    resolve_hyperparameters,
    resolve_search_space,
)
from fambench.optim.schedules import FAMScheduler, FAMScheduler2, WarmupHoldCosine
from fambench.optim.search import (
    Dimension,
    SearchSpace,
    apply_point,
    load_search_space,
    parse_search_space,
    search_space_to_json,
)
from fambench.optim.simple_fam import SimpleFAM
from fambench.optim.tracing import TraceWriter

__all__ = [
    "AttentionFrequencyHandler",
    "Capabilities",
    "ConvFrequencyHandler",
    "Dimension",
    "EmbeddingFrequencyHandler",
    "FAMOptimizer",
    "FAMScheduler",
    "FAMScheduler2",
    "FrequencyHandler",
    "OptimizerConfigError",
    "OptimizerSpec",
    "SearchSpace",
    "SimpleFAM",
    "TraceWriter",
    "WarmupHoldCosine",
    "apply_point",
    "build_optimizer",
    "get_handler",
    "get_optimizer_spec",
    "get_parameter_groups",
    "handler_names",
    "has_evaluation_modes",
    "infer_handler_name",
    "list_optimizers",
    "optimizer_source",
    "load_search_space",
    "parse_override_value",
    "parse_search_space",
    "register_handler",
    "register_optimizer",
    "resolve_hyperparameters",
    "resolve_search_space",
    "search_space_to_json",
]
