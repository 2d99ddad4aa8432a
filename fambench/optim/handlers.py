"""Frequency handlers: how a parameter family splits the gradient spectrum and picks momentum.

A handler has two jobs, both vectorised so that FAMOptimizer can treat many tensors at once:

* ``bands(n_freq, n_bands)`` returns a ``(n_freq, n_bands)`` 0/1 float matrix: column ``b`` marks
  the rFFT bins summed into band ``b``. It is called once per (sample length, n_bands) and cached.
* ``momentum(band_values, base_alpha)`` maps the band EMAs of ``N`` tensors, ``(N, n_bands)``, and
  their groups' base momenta, ``(N,)``, to the effective momenta, ``(N,)``. It must be pure tensor
  code (no ``.item()``, no Python loop over rows) and must not modify its inputs in place.

The four built-in handlers reproduce the specification's band partitions (including its integer
truncations and unused tails) and its thresholds. Subclass :class:`FrequencyHandler` and call
:func:`register_handler` to add one; a parameter group then names it with ``handler="<name>"``
(or carries the handler object itself).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "AttentionFrequencyHandler",
    "ConvFrequencyHandler",
    "EmbeddingFrequencyHandler",
    "FrequencyHandler",
    "get_handler",
    "handler_names",
    "register_handler",
]


def _partition(n_freq: int, spans: list[tuple[int, int]]) -> Tensor:
    """0/1 matrix whose column ``b`` marks rows ``[start, end)`` of ``spans[b]`` (maybe empty)."""
    matrix = torch.zeros(n_freq, len(spans), dtype=torch.float32)
    for band, (start, end) in enumerate(spans):
        if start < end:
            matrix[start:end, band] = 1.0
    return matrix


class FrequencyHandler:
    """Default handler: equal-width bands; boost momentum when the upper half carries > 30%.

    Bands are ``n_freq // n_bands`` bins wide, so the last ``n_freq % n_bands`` bins belong to no
    band (as in the specification); with fewer bins than bands every band is empty.
    """

    name = "default"
    high_threshold = 0.3
    boost = 0.05
    cap = 0.95

    def bands(self, n_freq: int, n_bands: int) -> Tensor:
        """Equal-width partition matrix ``(n_freq, n_bands)``."""
        width = n_freq // n_bands
        if width <= 0:
            return torch.zeros(n_freq, n_bands, dtype=torch.float32)
        spans = [(i * width, min((i + 1) * width, n_freq)) for i in range(n_bands)]
        return _partition(n_freq, spans)

    def momentum(self, band_values: Tensor, base_alpha: Tensor) -> Tensor:
        """``min(cap, alpha + boost)`` where the upper half of the bands holds > threshold."""
        n_bands = band_values.shape[1]
        high = band_values[:, n_bands // 2 :].sum(dim=1)
        boosted = torch.clamp(base_alpha + self.boost, max=self.cap)
        return torch.where(high > self.high_threshold, boosted, base_alpha)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ConvFrequencyHandler(FrequencyHandler):
    """Convolutions: logarithmic bands; smooth more when mid frequencies dominate.

    Band ``i`` spans ``[int(n_freq**(i/n) - 1), int(n_freq**((i+1)/n) - 1))``, clipped to
    ``[0, n_freq]``, so the low bands are often empty and the last bin is never used.
    """

    name = "conv"
    mid_threshold = 0.4
    mid_boost = 0.07
    mid_cap = 0.97

    def bands(self, n_freq: int, n_bands: int) -> Tensor:
        """Logarithmically spaced partition matrix ``(n_freq, n_bands)``."""
        spans = []
        for i in range(n_bands):
            start = max(0, int(n_freq ** (i / n_bands) - 1))
            end = min(int(n_freq ** ((i + 1) / n_bands) - 1), n_freq)
            spans.append((start, end))
        return _partition(n_freq, spans)

    def momentum(self, band_values: Tensor, base_alpha: Tensor) -> Tensor:
        """Mid > 0.4 → ``min(0.97, alpha + 0.07)``; else high > 0.3 →
        ``min(0.95, alpha + 0.05)``."""
        n_bands = band_values.shape[1]
        mid = band_values[:, n_bands // 4 : (3 * n_bands) // 4].sum(dim=1)
        high = band_values[:, (3 * n_bands) // 4 :].sum(dim=1)
        mid_alpha = torch.clamp(base_alpha + self.mid_boost, max=self.mid_cap)
        high_alpha = torch.clamp(base_alpha + self.boost, max=self.cap)
        return torch.where(
            mid > self.mid_threshold,
            mid_alpha,
            torch.where(high > self.high_threshold, high_alpha, base_alpha),
        )


class AttentionFrequencyHandler(FrequencyHandler):
    """Attention: half the bands split the lower half of the spectrum, half the upper half.

    The momentum follows the strongest band: in the lowest quarter of bands it drops to
    ``max(0.85, alpha - 0.05)``, above the third quarter it rises to ``min(0.98, alpha + 0.08)``.
    Ties go to the lowest band (as ``numpy.argmax``).
    """

    name = "attention"
    low_drop = 0.05
    low_floor = 0.85
    high_boost = 0.08
    high_cap = 0.98

    def bands(self, n_freq: int, n_bands: int) -> Tensor:
        """Half/half partition matrix ``(n_freq, n_bands)``."""
        half = n_freq // 2
        low_bands = n_bands // 2
        # With a single band the specification divides by zero (and falls back to the base
        # momentum); here the lower half simply has no band, which gives the same momentum.
        low_width = half // low_bands if low_bands else 0
        spans = [(i * low_width, min((i + 1) * low_width, half)) for i in range(low_bands)]
        high_width = (n_freq - half) // (n_bands - low_bands)
        for i in range(n_bands - low_bands):
            spans.append((half + i * high_width, min(half + (i + 1) * high_width, n_freq)))
        return _partition(n_freq, spans)

    def momentum(self, band_values: Tensor, base_alpha: Tensor) -> Tensor:
        """Pick the momentum from the index of the strongest band."""
        n_bands = band_values.shape[1]
        strongest = band_values.argmax(dim=1)
        low_alpha = torch.clamp(base_alpha - self.low_drop, min=self.low_floor)
        high_alpha = torch.clamp(base_alpha + self.high_boost, max=self.high_cap)
        return torch.where(
            strongest < n_bands // 4,
            low_alpha,
            torch.where(strongest > (3 * n_bands) // 4, high_alpha, base_alpha),
        )


class EmbeddingFrequencyHandler(FrequencyHandler):
    """Embeddings: equal-width bands; very stable updates when the top quarter holds > 20%."""

    name = "embedding"
    high_threshold = 0.2
    boost = 0.08
    cap = 0.98

    def momentum(self, band_values: Tensor, base_alpha: Tensor) -> Tensor:
        """Top-quarter share > 0.2 → ``min(0.98, alpha + 0.08)``."""
        n_bands = band_values.shape[1]
        high = band_values[:, (3 * n_bands) // 4 :].sum(dim=1)
        boosted = torch.clamp(base_alpha + self.boost, max=self.cap)
        return torch.where(high > self.high_threshold, boosted, base_alpha)


_HANDLERS: dict[str, FrequencyHandler] = {
    "default": FrequencyHandler(),
    "conv": ConvFrequencyHandler(),
    "attention": AttentionFrequencyHandler(),
    "embedding": EmbeddingFrequencyHandler(),
}


def register_handler(
    name: str, handler: FrequencyHandler | type[FrequencyHandler], *, replace: bool = False
) -> None:
    """Make ``handler`` (an instance, or a class to instantiate) available as ``handler=name``.

    Registering an existing name raises ``ValueError`` unless ``replace=True``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"handler name must be a non-empty string, got {name!r}")
    if isinstance(handler, type):
        handler = handler()
    if not (
        callable(getattr(handler, "bands", None)) and callable(getattr(handler, "momentum", None))
    ):
        raise ValueError(
            f"handler {name!r} must provide bands(n_freq, n_bands) and "
            f"momentum(band_values, base_alpha); got {type(handler).__name__}"
        )
    if name in _HANDLERS and not replace:
        raise ValueError(f"frequency handler {name!r} is already registered (pass replace=True)")
    _HANDLERS[name] = handler


def get_handler(handler: str | FrequencyHandler) -> FrequencyHandler:
    """Resolve a handler name (or pass a handler object through)."""
    if not isinstance(handler, str):
        if callable(getattr(handler, "bands", None)) and callable(
            getattr(handler, "momentum", None)
        ):
            return handler
        raise ValueError(f"not a frequency handler: {handler!r}")
    try:
        return _HANDLERS[handler]
    except KeyError:
        raise ValueError(
            f"unknown frequency handler {handler!r}; registered: {', '.join(handler_names())}"
        ) from None


def handler_names() -> list[str]:
    """Names of the registered handlers, sorted."""
    return sorted(_HANDLERS)
