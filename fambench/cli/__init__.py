"""The `fambench` command line: option parsing and printing only; logic lives in the modules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fambench.errors import FambenchError
from fambench.hparams_dirs import HPARAMS_DIR_ENV

app = typer.Typer(
    name="fambench",
    help=(
        "Benchmark optimizers (FAM, AdamW, SGD, NAdamW, Schedule-Free AdamW, SOAP, Muon, Lion, "
        "plug-ins) on Conformer CTC speech recognition."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

#: The user's directory of tuned values and targets: `tune` and `target` write there; `run`,
#: `bench`, `compare` and the listings read it before the values the package ships.
HparamsDir = Annotated[
    Path,
    typer.Option(
        "--hparams-dir",
        envvar=HPARAMS_DIR_ENV,
        help="Your tuned values and targets (tuned/PRESET.json, targets/PRESET.json): written "
        "by tune and target, read before the package's own.",
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one red error line and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _register_commands() -> None:
    # Each sub-module adds its commands to `app`; imported lazily so that `--help` stays fast
    # and a missing optional part never breaks the others.
    from fambench.cli import commands_optim  # noqa: F401

    for module in (
        "commands_data",
        "commands_run",
        "commands_compare",
        "commands_tune",
        "commands_target",
        "commands_status",
    ):
        try:
            __import__(f"fambench.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"fambench.cli.{module}":
                raise


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2."""
    try:
        _register_commands()
    except ImportError as exc:  # torch/torchaudio that cannot load is the usual cause
        err_console.print(
            f"[bold red]error:[/] cannot import a dependency ({exc}). "
            "Reinstall with `make install` (torch must be a CUDA-13 build such as 2.14.1 "
            "for torchaudio 2.11).",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)
    try:
        app()
    except FambenchError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
