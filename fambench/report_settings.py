"""What a results directory says about its own report: ``report.json`` beside the runs.

A study whose ledger counts tuning trials kept elsewhere names them there, so that
`fambench report DIR` regenerates the committed report with no options to remember:

    results/study/report.json:  {"tuning_runs": ["../sweeps"]}

(paths relative to the file's directory).
Options given on the command line win over the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from fambench.errors import ConfigError

FILE_NAME = "report.json"
_KEYS = {"tuning_runs"}


def read_tuning_runs(results_dir: Path) -> list[Path]:
    """The tuning directories ``results_dir/report.json`` names (none without the file);
    ConfigError naming the file for anything it cannot use."""
    path = results_dir / FILE_NAME
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; known: {', '.join(_KEYS)}")
    runs = data.get("tuning_runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, str) and r for r in runs):
        raise ConfigError(f"{path}: tuning_runs must be a list of directory paths")
    return [results_dir / r for r in runs]
