"""The one parser of ``key=value`` text on the command line: ``--opt``, ``--variant`` and
``--grid`` all read their settings through `parse_key_values`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fambench.errors import ConfigError


def parse_key_values(
    items: Iterable[str],
    option: str,
    example: str,
    value: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """``["lr=0.1", "betas=[0.9,0.98]"]`` → ``{"lr": 0.1, "betas": [0.9, 0.98]}``, each value
    read by ``value`` (numbers, booleans, lists, strings by default). ConfigError naming
    ``option``, the item and ``example`` for an item without a key or a value, a key given
    twice, or a value ``value`` refuses (ValueError)."""
    if value is None:
        from fambench.optim import parse_override_value as value  # torch: only when needed
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key or not text:
            raise ConfigError(f"{option} {item!r}: expected key=value, e.g. {example}")
        if key in parsed:
            raise ConfigError(f"{option}: {key} given twice")
        try:
            parsed[key] = value(text)
        except ValueError as exc:
            raise ConfigError(f"{option} {item!r}: {exc}; e.g. {example}") from None
    return parsed


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """``"lr=0.1, betas=[0.9,0.98]"`` → ``["lr=0.1", "betas=[0.9,0.98]"]``: split where no
    bracket is open, so that list values keep their commas; empty parts dropped."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "[({"
        depth -= char in "])}"
        if char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def float_list(text: str) -> list[float]:
    """``"0.1,0.2"`` → ``[0.1, 0.2]``: a grid's values along one key."""
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError("no values")
    return values
