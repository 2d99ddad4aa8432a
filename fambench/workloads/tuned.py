"""Tuned hyperparameters: per preset, the values measured best for each optimizer.

They are data, not code: `fambench/workloads/tuned/<preset>.json` holds, per optimizer, the
hyperparameters that override the registry's defaults on that preset, with the file of the
sweep that chose them (``source``) and how (``method``). `fambench run` and `bench` apply them
by default; an optimizer a file does not list runs with its registry defaults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fambench.errors import ConfigError

TUNED_DIR = Path(__file__).resolve().parent / "tuned"


@dataclass(frozen=True)
class TunedHyperparameters:
    """The tuned values of one preset (empty when no file exists for it)."""

    preset: str
    optimizers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None  # the sweep table the values came from
    method: str = ""
    path: Path | None = None  # the file read

    def for_optimizer(self, name: str) -> dict[str, Any]:
        """The tuned values of optimizer ``name`` ({} when it was not tuned here)."""
        return dict(self.optimizers.get(name, {}))


def load_tuned(preset: str, path: Path | None = None) -> TunedHyperparameters:
    """Read ``path`` (default: the preset's file in TUNED_DIR); ConfigError if it is malformed."""
    path = Path(path) if path is not None else TUNED_DIR / f"{preset}.json"
    if not path.is_file():
        return TunedHyperparameters(preset)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read tuned hyperparameters ({exc})") from exc
    optimizers = data.get("optimizers") if isinstance(data, dict) else None
    if not isinstance(optimizers, dict) or not all(
        isinstance(v, dict) for v in optimizers.values()
    ):
        raise ConfigError(f"{path}: expected {{'optimizers': {{name: {{key: value}}}}}}")
    return TunedHyperparameters(
        preset=preset,
        optimizers=optimizers,
        source=data.get("source"),
        method=str(data.get("method", "")),
        path=path,
    )
