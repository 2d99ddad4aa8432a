"""Parameter groups: FAMOptimizer's, classified by module type, and Muon's split.

The specification classifies by substrings of parameter names, which puts every
``conformer_layers.*`` weight of a Conformer into the norm group ('layer' matches). Here the
module that owns a parameter decides:

* conv: ``nn.Conv1d/2d/3d`` and transposed convolutions (depthwise included);
* attention: ``nn.MultiheadAttention`` or any module whose class name contains "Attention",
  including the linear layers inside it (e.g. ``self_attn.out_proj``);
* embedding: ``nn.Embedding`` / ``nn.EmbeddingBag``;
* norm: LayerNorm, BatchNorm*, InstanceNorm*, GroupNorm, RMSNorm (also inside attention);
* other: everything else (feed-forward linears, heads, ...).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

__all__ = ["GROUP_SETTINGS", "classify_module", "get_parameter_groups", "muon_parameter_groups"]

_NORM_TYPES: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm, _NormBase, nn.LocalResponseNorm)
if hasattr(nn, "RMSNorm"):
    _NORM_TYPES = (*_NORM_TYPES, nn.RMSNorm)

# kind: (lr factor, weight-decay factor, alpha, handler, n_bands)
GROUP_SETTINGS: dict[str, tuple[float, float, float, str, int]] = {
    "conv": (1.0, 1.0, 0.9, "conv", 10),
    "attention": (1.0, 1.0, 0.92, "attention", 12),
    "embedding": (0.8, 1.5, 0.95, "embedding", 8),
    "norm": (1.0, 0.0, 0.9, "default", 4),
    "other": (1.0, 1.0, 0.9, "default", 8),
}


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or "attention" in type(module).__name__.lower()


def classify_module(module: nn.Module) -> str | None:
    """'conv', 'embedding', 'norm' or 'attention' by the module's own type, else None."""
    if isinstance(module, _ConvNd):
        return "conv"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, _NORM_TYPES):
        return "norm"
    if _is_attention(module):
        return "attention"
    return None


def _parameter_kind(owner_path: str, modules: dict[str, nn.Module]) -> str:
    own = classify_module(modules[owner_path])
    if own is not None:
        return own
    parts = owner_path.split(".") if owner_path else []
    for depth in range(len(parts)):
        ancestor = modules.get(".".join(parts[:depth]))
        if ancestor is not None and _is_attention(ancestor):
            return "attention"
    return "other"


def get_parameter_groups(
    model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """The specification's five parameter groups, built from module types.

    Each group carries ``params``, ``names``, ``lr``, ``weight_decay``, ``alpha``, ``handler`` and
    ``n_bands``: conv (alpha 0.9, 10 bands), attention (0.92, 12), embedding (lr x0.8,
    weight decay x1.5, 0.95, 8), norm (weight decay 0, 0.9, 4) and other (0.9, 8). Empty groups
    are left out; frozen parameters (``requires_grad=False``) are skipped.
    """
    modules = dict(model.named_modules())
    collected: dict[str, tuple[list, list[str]]] = {kind: ([], []) for kind in GROUP_SETTINGS}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        owner_path = name.rpartition(".")[0]
        kind = _parameter_kind(owner_path, modules)
        collected[kind][0].append(param)
        collected[kind][1].append(name)

    groups = []
    for kind, (lr_factor, wd_factor, alpha, handler, n_bands) in GROUP_SETTINGS.items():
        params, names = collected[kind]
        if params:
            groups.append(
                {
                    "params": params,
                    "names": names,
                    "lr": lr * lr_factor,
                    "weight_decay": weight_decay * wd_factor,
                    "alpha": alpha,
                    "handler": handler,
                    "n_bands": n_bands,
                }
            )
    return groups


def muon_parameter_groups(
    model: nn.Module, muon: dict[str, Any], adamw: dict[str, Any]
) -> list[dict[str, Any]]:
    """Muon's usual split: the hidden weight matrices to Muon, everything else to AdamW.

    Muon orthogonalises an update, which means something for a dense linear map: a Linear's
    weight, an attention projection, a dense convolution kernel (flattened to out x in*k).
    The model's input and output layers (its first and last modules with a weight of two or
    more dimensions, in registration order), embeddings, grouped convolutions (a depthwise
    kernel maps each channel alone) and every vector (biases, norm gains) go to AdamW, as in
    Keller Jordan's recipe. Returns pytorch_optimizer.Muon's groups (``use_muon`` set), each
    with ``names`` and the settings in ``muon`` or ``adamw``; empty groups are left out.
    """
    modules = dict(model.named_modules())
    owners = [
        path
        for path, module in modules.items()
        if any(p.ndim >= 2 for p in module.parameters(recurse=False))
    ]
    edges = {owners[0], owners[-1]} if owners else set()
    chosen: dict[bool, tuple[list, list[str]]] = {True: ([], []), False: ([], [])}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        owner_path = name.rpartition(".")[0]
        owner = modules[owner_path]
        hidden_matrix = (
            param.ndim >= 2
            and owner_path not in edges
            and not isinstance(owner, (nn.Embedding, nn.EmbeddingBag))
            and not (isinstance(owner, _ConvNd) and owner.groups > 1)
        )
        chosen[hidden_matrix][0].append(param)
        chosen[hidden_matrix][1].append(name)
    groups = []
    for use_muon, settings in ((True, muon), (False, adamw)):
        params, names = chosen[use_muon]
        if params:
            groups.append({"params": params, "names": names, "use_muon": use_muon, **settings})
    return groups
