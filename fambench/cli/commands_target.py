"""`fambench target`: set a workload's target dev WER the AlgoPerf way, from runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fambench.cli import HparamsDir, app, console, fail
from fambench.cli.printing import print_stale, warnings_on_stderr
from fambench.errors import FambenchError
from fambench.hparams_dirs import DEFAULT_USER_DIR


@app.command("target")
def target_command(
    results_dirs: Annotated[
        list[Path], typer.Argument(help="Results or run directories, searched recursively.")
    ],
    preset: Annotated[str, typer.Option(help="The workload whose target is set.")],
    reference: Annotated[
        str, typer.Option(help="The optimizer under test: it and its ablations are no baseline.")
    ] = "fam",
    write: Annotated[
        bool, typer.Option(help="Record it in HPARAMS_DIR/targets/PRESET.json.")
    ] = True,
    hparams_dir: HparamsDir = DEFAULT_USER_DIR,
) -> None:
    """Target = median final dev WER of the best tuned baseline over its (>= 5) seeds.

    Baselines are the optimizers run with their tuned values only (no --opt on top) that are
    neither the reference nor an ablation of it; the best has the lowest median.
    """
    from fambench.analysis import load_results
    from fambench.targets import record_target, target_from_runs

    try:
        with warnings_on_stderr():
            results = load_results(results_dirs, preset=preset, hparams_dir=hparams_dir)
        print_stale(results.runs)
        where = ", ".join(str(p) for p in results_dirs)
        target = target_from_runs(results.runs, preset, reference, where)
        path = record_target(target, hparams_dir) if write else None
    except FambenchError as exc:
        raise fail(str(exc)) from None
    console.print(f"{preset}: target dev WER {target.wer:.4f} — {target.method}", highlight=False)
    if path is not None:
        console.print(f"recorded in {path}", highlight=False)
