"""fambench.optim: Frequency-Adaptive Momentum and the optimizer registry (depends on torch only).

Usable from any training script::

    from fambench.optim import FAMOptimizer, WarmupHoldCosine, get_parameter_groups

    optimizer = FAMOptimizer(get_parameter_groups(model, lr=1e-3, weight_decay=1e-6))
    scheduler = WarmupHoldCosine(optimizer, warmup_steps=100, total_steps=10_000)

``FAMScheduler`` and ``FAMScheduler2`` (the specification's names) are aliases of
``WarmupHoldCosine``. An optimizer that can write a trace implements :class:`TraceWriter`.
"""

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
    parse_override_value,
    register_optimizer,
    resolve_hyperparameters,
)
from fambench.optim.schedules import FAMScheduler, FAMScheduler2, WarmupHoldCosine
from fambench.optim.simple_fam import SimpleFAM
from fambench.optim.tracing import TraceWriter

__all__ = [
    "AttentionFrequencyHandler",
    "ConvFrequencyHandler",
    "EmbeddingFrequencyHandler",
    "FAMOptimizer",
    "FAMScheduler",
    "FAMScheduler2",
    "FrequencyHandler",
    "OptimizerConfigError",
    "OptimizerSpec",
    "SimpleFAM",
    "TraceWriter",
    "WarmupHoldCosine",
    "build_optimizer",
    "get_handler",
    "get_optimizer_spec",
    "get_parameter_groups",
    "handler_names",
    "infer_handler_name",
    "list_optimizers",
    "parse_override_value",
    "register_handler",
    "register_optimizer",
    "resolve_hyperparameters",
]
