"""Where tuned hyperparameters and workload targets are read and written.

The package ships the project's own (``fambench/workloads/tuned/<preset>.json`` and
``fambench/workloads/targets/<preset>.json``) and never writes them at run time. `fambench tune`
and `fambench target` write into a directory the user owns, with the same layout
(``<dir>/tuned/<preset>.json``, ``<dir>/targets/<preset>.json``); commands that read values
read that directory first. The CLI chooses it: ``--hparams-dir``, else the environment variable
``FAMBENCH_HPARAMS_DIR``, else ``results/hparams`` under the current directory.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent / "workloads"
DEFAULT_USER_DIR = Path("results") / "hparams"
HPARAMS_DIR_ENV = "FAMBENCH_HPARAMS_DIR"


def tuned_path(directory: Path, preset: str) -> Path:
    return Path(directory) / "tuned" / f"{preset}.json"


def target_path(directory: Path, preset: str) -> Path:
    return Path(directory) / "targets" / f"{preset}.json"


def portable_source(path: Path) -> str:
    """How a tuned or target file names the table it came from: relative to the current
    directory when the table lies under it, else its own directory's name and file name, so that
    no machine-specific absolute path (a temporary directory) is recorded."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(Path(path.resolve().parent.name) / path.name)
