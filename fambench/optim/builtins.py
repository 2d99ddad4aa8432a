"""The built-in registry entries: FAM, its ablation and SimpleFAM, torch's AdamW and SGD, and
the field's baselines (NAdamW, Schedule-Free AdamW, SOAP, Muon, Lion), each with its defaults,
search space and factory.

Importing this module registers them; :mod:`fambench.optim` imports it, so using anything from
the package makes them available.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from fambench.optim.capabilities import Capabilities
from fambench.optim.fam import FAMOptimizer
from fambench.optim.groups import get_parameter_groups, muon_parameter_groups
from fambench.optim.registry import register_optimizer
from fambench.optim.simple_fam import SimpleFAM
from fambench.optim.spec import model_parameters

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
    return SimpleFAM(model_parameters(model), **hp)


def _adamw(model: nn.Module, **hp: Any) -> Optimizer:
    return torch.optim.AdamW(model_parameters(model), foreach=True, **hp)


def _sgd(model: nn.Module, **hp: Any) -> Optimizer:
    return torch.optim.SGD(model_parameters(model), foreach=True, **hp)


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
    return torch.optim.NAdam(
        model_parameters(model), decoupled_weight_decay=True, foreach=True, **hp
    )


def _sfadamw(model: nn.Module, **hp: Any) -> Optimizer:
    import schedulefree

    # Its own warmup is off: the trainer warms the learning rate up (the schedule it declares).
    return schedulefree.AdamWScheduleFree(model_parameters(model), warmup_steps=0, **hp)


def _soap(model: nn.Module, **hp: Any) -> Optimizer:
    import pytorch_optimizer

    return pytorch_optimizer.SOAP(model_parameters(model), **hp)


def _muon(model: nn.Module, **hp: Any) -> Optimizer:
    from fambench.optim.muon import Muon

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
    return Muon(groups, use_adjusted_lr=hp["use_adjusted_lr"])


def _lion(model: nn.Module, **hp: Any) -> Optimizer:
    import pytorch_optimizer

    return pytorch_optimizer.Lion(model_parameters(model), **hp)


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
        "rest, one optimizer: pytorch_optimizer.Muon (on a CPU without bf16 dot products, its "
        "bf16 Newton–Schulz products as fp32 GEMMs rounded to bf16)"
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
