"""Tuned hyperparameters: per preset, the values measured best for each optimizer.

They are data, not code: a preset's file (``tuned/<preset>.json``, see `fambench.hparams_dirs`)
holds, per optimizer, the hyperparameters that override the registry's defaults on that preset,
with the sweep table that chose them (``source``) and how (``method``). The package ships one
set; a user's directory, read first, overrides it optimizer by optimizer. `fambench run` and
`bench` apply them by default; an optimizer no file lists runs with its registry defaults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fambench.errors import ConfigError
from fambench.fileio import write_json
from fambench.hparams_dirs import SHIPPED_DIR, tuned_path


@dataclass(frozen=True)
class TunedHyperparameters:
    """The tuned values of one preset (empty when no file holds any)."""

    preset: str
    optimizers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str | None = None  # the sweep table named by the file as a whole
    method: str = ""
    paths: tuple[Path, ...] = ()  # the files read, first one first
    # Per optimizer: {"source": ..., "method": ...}, where its own values came from.
    sources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def for_optimizer(self, name: str) -> dict[str, Any]:
        """The tuned values of optimizer ``name`` ({} when it was not tuned here)."""
        return dict(self.optimizers.get(name, {}))

    def source_of(self, name: str) -> str | None:
        """Where optimizer ``name``'s values came from (its own entry, else the file's)."""
        own = self.sources.get(name)
        return own.get("source") if own else self.source


def load_tuned(
    preset: str, path: Path | None = None, user_dir: Path | None = None
) -> TunedHyperparameters:
    """The tuned values of ``preset``: ``path`` alone when given, else the user's directory's
    file over the shipped one, optimizer by optimizer; ConfigError if a file is malformed."""
    if path is not None:
        return _read(preset, Path(path))
    shipped = _read(preset, tuned_path(SHIPPED_DIR, preset))
    if user_dir is None:
        return shipped
    own = _read(preset, tuned_path(user_dir, preset))
    if not own.paths:
        return shipped
    sources = {name: _entry_source(shipped, name) for name in shipped.optimizers}
    sources.update({name: _entry_source(own, name) for name in own.optimizers})
    return TunedHyperparameters(
        preset=preset,
        optimizers={**shipped.optimizers, **own.optimizers},
        source=shipped.source,
        method=shipped.method,
        paths=own.paths + shipped.paths,
        sources=sources,
    )


def _entry_source(tuned: TunedHyperparameters, name: str) -> dict[str, str]:
    own = tuned.sources.get(name)
    return dict(own) if own else {"source": tuned.source or "", "method": tuned.method}


def _read(preset: str, path: Path) -> TunedHyperparameters:
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
        paths=(path,),
        sources=data.get("sources") or {},
    )


def record_tuned(
    preset: str,
    optimizer: str,
    values: Mapping[str, Any],
    source: str,
    method: str,
    directory: Path,
) -> Path:
    """Set ``optimizer``'s tuned values in the preset's file under ``directory`` (others kept);
    returns the file. Each optimizer's entry in ``sources`` says where its values came from."""
    path = tuned_path(directory, preset)
    current = _read(preset, path)
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
