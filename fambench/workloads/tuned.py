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
from fambench.fileio import write_json

TUNED_DIR = Path(__file__).resolve().parent / "tuned"


@dataclass(frozen=True)
class TunedHyperparameters:
    """The tuned values of one preset (empty when no file exists for it)."""

    preset: str
    optimizers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None  # the sweep table the values came from
    method: str = ""
    path: Path | None = None  # the file read

    sources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # per optimizer

    def for_optimizer(self, name: str) -> dict[str, Any]:
        """The tuned values of optimizer ``name`` ({} when it was not tuned here)."""
        return dict(self.optimizers.get(name, {}))

    def source_of(self, name: str) -> str | None:
        """Where optimizer ``name``'s values came from (its own entry, else the file's)."""
        own = self.sources.get(name)
        return own.get("source") if own else self.source


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
    if data.get("preset", preset) != preset:
        raise ConfigError(f"{path}: tuned for preset {data.get('preset')!r}, not {preset!r}")
    return TunedHyperparameters(
        preset=preset,
        optimizers=optimizers,
        source=data.get("source"),
        method=str(data.get("method", "")),
        path=path,
        sources=data.get("sources") or {},
    )


def record_tuned(
    preset: str,
    optimizer: str,
    values: Mapping[str, Any],
    source: str,
    method: str,
    path: Path | None = None,
) -> Path:
    """Set ``optimizer``'s tuned values in the preset's file (others kept); returns the file.

    The file's ``source`` and ``method`` describe how the values were chosen: with values of
    several origins, each optimizer's entry in ``sources`` says where its own came from.
    """
    path = Path(path) if path is not None else TUNED_DIR / f"{preset}.json"
    current = load_tuned(preset, path)
    optimizers = {name: dict(v) for name, v in current.optimizers.items()}
    optimizers[optimizer] = dict(values)
    data: dict[str, Any] = {"preset": preset}
    if path.is_file():
        data.update(json.loads(path.read_text(encoding="utf-8")))
    sources = dict(data.get("sources") or {})
    sources[optimizer] = {"source": source, "method": method}
    data.update(optimizers=optimizers, sources=sources)
    write_json(path, data)
    return path
