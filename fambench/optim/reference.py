"""Plain per-tensor reference of the FAM specification's algorithm (for tests and benchmarks).

Used to check the fast FAMOptimizer (tests) and as a timing baseline (benchmarks); not part
of the optimizer registry. Depends on torch only, like the rest of fambench.optim.

Written for clarity, not speed: one parameter at a time, Python loops over bands, ``.item()``
per band, the band EMA as a dict of Python floats — as the specification does it. Only the
specification's defects that would make it unusable as a reference are left out: no prints,
no global RNG (``sampling="random"`` uses a private generator), the handler rebinding bug does
not matter here because groups name their handler, ``layer_boost=False`` means "default
handler everywhere" (fambench's reading). ``sampling="ordered"`` implements fambench's
documented ordered sample with plain indexing, so that large tensors can be compared too.
"""

from __future__ import annotations

import torch


def _normalised_power(sample: torch.Tensor, eps: float) -> torch.Tensor:
    power = torch.abs(torch.fft.rfft(sample.float()))
    if power.sum() > 0:
        power = power / (power.sum() + eps)
    return power


def analyze_default(sample: torch.Tensor, n_bands: int, eps: float = 1e-8) -> list[float]:
    power = _normalised_power(sample, eps)
    band_size = power.shape[0] // n_bands
    if band_size <= 0:
        return [0.0] * n_bands
    values = []
    for i in range(n_bands):
        start, end = i * band_size, min((i + 1) * band_size, power.shape[0])
        values.append(power[start:end].sum().item() if start < end else 0.0)
    return values


def analyze_conv(sample: torch.Tensor, n_bands: int, eps: float = 1e-8) -> list[float]:
    power = _normalised_power(sample, eps)
    total = power.shape[0]
    values = []
    for i in range(n_bands):
        start = max(0, int((total ** (i / n_bands)) - 1))
        end = min(int((total ** ((i + 1) / n_bands)) - 1), total)
        values.append(power[start:end].sum().item() if start < end else 0.0)
    return values


def analyze_attention(sample: torch.Tensor, n_bands: int, eps: float = 1e-8) -> list[float]:
    power = _normalised_power(sample, eps)
    n_freq = power.shape[0]
    half_bands = n_bands // 2
    low_size = (n_freq // 2) // half_bands  # ZeroDivisionError for n_bands == 1, as in the spec
    values = []
    for i in range(half_bands):
        start, end = i * low_size, min((i + 1) * low_size, n_freq // 2)
        values.append(power[start:end].sum().item() if start < end else 0.0)
    high_size = (n_freq - n_freq // 2) // (n_bands - half_bands)
    for i in range(half_bands, n_bands):
        start = n_freq // 2 + (i - half_bands) * high_size
        end = min(n_freq // 2 + (i - half_bands + 1) * high_size, n_freq)
        values.append(power[start:end].sum().item() if start < end else 0.0)
    return values


def momentum_default(bands: list[float], alpha: float) -> float:
    if sum(bands[len(bands) // 2 :]) > 0.3:
        return min(0.95, alpha + 0.05)
    return alpha


def momentum_conv(bands: list[float], alpha: float) -> float:
    n = len(bands)
    if sum(bands[n // 4 : (3 * n) // 4]) > 0.4:
        return min(0.97, alpha + 0.07)
    if sum(bands[(3 * n) // 4 :]) > 0.3:
        return min(0.95, alpha + 0.05)
    return alpha


def momentum_attention(bands: list[float], alpha: float) -> float:
    n = len(bands)
    strongest = max(range(n), key=lambda i: (bands[i], -i))  # first maximum, like np.argmax
    if strongest < n // 4:
        return max(0.85, alpha - 0.05)
    if strongest > 3 * n // 4:
        return min(0.98, alpha + 0.08)
    return alpha


def momentum_embedding(bands: list[float], alpha: float) -> float:
    if sum(bands[(3 * len(bands)) // 4 :]) > 0.2:
        return min(0.98, alpha + 0.08)
    return alpha


ANALYZE = {
    "default": analyze_default,
    "conv": analyze_conv,
    "attention": analyze_attention,
    "embedding": analyze_default,
}
MOMENTUM = {
    "default": momentum_default,
    "conv": momentum_conv,
    "attention": momentum_attention,
    "embedding": momentum_embedding,
}


def ordered_sample(grad: torch.Tensor) -> torch.Tensor:
    """fambench's ordered sample of a tensor with more than 10000 entries, by plain indexing."""
    if grad.dim() > 1:
        rows_total = grad.size(0)
        n_rows = min(rows_total, 64)
        step = rows_total // n_rows
        per_row = grad.reshape(rows_total, -1)  # each row's entries in memory order
        rows = torch.arange(0, n_rows * step, step, device=grad.device)
        return per_row[rows][:, : min(per_row.size(1), 64)].flatten()
    flat = grad.flatten()
    run = 125
    step = (flat.numel() - run) // 7
    return torch.cat([flat[k * step : k * step + run] for k in range(8)])


class ReferenceFAM(torch.optim.Optimizer):
    """The specification's FAMOptimizer update, one tensor at a time."""

    def __init__(
        self,
        params,
        lr=1e-3,
        alpha=0.9,
        beta=0.99,
        eps=1e-8,
        weight_decay=0.0,
        n_bands=8,
        fam_start_step=100,
        layer_boost=True,
        min_size=256,
        sampling="ordered",
        seed=0,
    ):
        defaults = dict(
            lr=lr,
            alpha=alpha,
            beta=beta,
            eps=eps,
            weight_decay=weight_decay,
            n_bands=n_bands,
            fam_start_step=fam_start_step,
            layer_boost=layer_boost,
            min_size=min_size,
            handler="default",
        )
        super().__init__(params, defaults)
        self.sampling = sampling
        self.generator = torch.Generator().manual_seed(seed)
        # id(param) -> momentum used last step. The ids are of parameters this optimizer holds,
        # so none of them can be reused by another object while it lives.
        self.last_momentum: dict[int, float] = {}

    def _sample(self, grad: torch.Tensor) -> torch.Tensor:
        if grad.numel() <= 10000:
            return grad.flatten()
        if self.sampling == "ordered":
            return ordered_sample(grad)
        if grad.dim() > 1:
            rows = torch.randperm(grad.size(0), generator=self.generator)[: min(grad.size(0), 64)]
            cols = torch.randperm(grad.size(1), generator=self.generator)[: min(grad.size(1), 64)]
            return grad[rows][:, cols].flatten()
        idx = torch.randperm(grad.numel(), generator=self.generator)[:1000]
        return grad.flatten()[idx]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            handler = group["handler"] if group["layer_boost"] else "default"
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["freq_history"] = {}
                state["step"] += 1
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                alpha = group["alpha"]
                if state["step"] > group["fam_start_step"] and p.numel() > group["min_size"]:
                    n_bands = group["n_bands"]
                    try:
                        powers = ANALYZE[handler](self._sample(grad), n_bands, group["eps"])
                    except ZeroDivisionError:
                        powers = None  # the spec's except-branch: plain alpha for this step
                    if powers is not None:
                        history = state["freq_history"]
                        for i, power in enumerate(powers):
                            key = f"band_{i}"
                            if key not in history:
                                history[key] = power
                            else:
                                history[key] = (
                                    group["beta"] * history[key] + (1 - group["beta"]) * power
                                )
                        bands = [history.get(f"band_{i}", 0) for i in range(n_bands)]
                        alpha = MOMENTUM[handler](bands, group["alpha"])
                self.last_momentum[id(p)] = alpha
                state["exp_avg"].mul_(alpha).add_(grad, alpha=1 - alpha)
                p.add_(state["exp_avg"], alpha=-group["lr"])
        return loss
