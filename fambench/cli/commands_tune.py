"""`fambench tune`: parse options, run a tuning worker, print the trials and the tuned values."""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from fambench.cli import HparamsDir, app, console, fail
from fambench.cli.launcher import (
    LauncherOption,
    SlurmCpus,
    SlurmGpus,
    SlurmOpt,
    SlurmPartition,
    SlurmTime,
    WaitOption,
    print_submitted,
    slurm_settings,
    wait_quietly,
)
from fambench.cli.printing import fitted_table
from fambench.cli.progress import RunViews
from fambench.errors import ConfigError, FambenchError
from fambench.hparams_dirs import DEFAULT_USER_DIR
from fambench.key_values import float_list, parse_key_values


def parse_grid(items: list[str]) -> dict[str, list[float]]:
    """``--grid lr=0.1,0.2`` items → {"lr": [0.1, 0.2]}."""
    return parse_key_values(items, "--grid", "--grid lr=0.1,0.2", value=float_list)


@app.command("tune")
def tune_command(
    optimizer: Annotated[str, typer.Option("--optimizer", "-o", help="Optimizer to tune.")],
    preset: Annotated[str, typer.Option("--preset", "-p", help="Workload preset.")] = "synth",
    trials: Annotated[
        int | None, typer.Option(help="Trials per study (default 5; a grid: its size).")
    ] = None,
    studies: Annotated[int, typer.Option(help="Studies (AlgoPerf: 3), seeds S..S+K-1.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the first study (sampler and runs).")] = 0,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage URL (e.g. postgresql://...); default: a journal file under --out."
        ),  # fmt: skip
    ] = None,
    out: Annotated[Path, typer.Option(help="Trials, tables and the study journal.")] = Path(
        "results/tune"
    ),
    cache_dir: Annotated[Path, typer.Option(help="Corpus and feature cache.")] = Path("data"),
    data: Annotated[Path | None, typer.Option(help="LibriSpeech root.")] = None,
    steps: Annotated[int | None, typer.Option(help="Steps per trial (default: preset's).")] = None,
    search_space: Annotated[
        Path | None, typer.Option(help="A search-space JSON file instead of the registry's.")
    ] = None,
    grid: Annotated[
        list[str], typer.Option(help="A grid instead of quasi-random points: key=v1,v2,...")
    ] = [],  # noqa: B006
    threads: Annotated[
        int | None, typer.Option(help="torch threads of this worker (default: usable cores).")
    ] = None,
    write_tuned: Annotated[
        bool,
        typer.Option(
            help="Record the best values as the preset's tuned values (in --hparams-dir)."
        ),
    ] = True,
    hparams_dir: HparamsDir = DEFAULT_USER_DIR,
    launcher: LauncherOption = "local",
    workers: Annotated[
        int | None,
        typer.Option(help="With --launcher slurm: worker jobs sharing the studies (default 1)."),
    ] = None,
    slurm_partition: SlurmPartition = None,
    slurm_time: SlurmTime = None,
    slurm_cpus: SlurmCpus = None,
    slurm_gpus: SlurmGpus = None,
    slurm_opt: SlurmOpt = None,
    wait: WaitOption = False,
) -> None:
    """Tune an optimizer's hyperparameters: K studies x N quasi-random trials (Optuna).

    Here, this process is one worker (start more with the same command to share the work);
    with --launcher slurm, --workers Slurm jobs are."""
    from fambench.tune import TuneRequest, run_worker, summarize

    views = RunViews()
    try:
        grid_values = parse_grid(grid)
        size = math.prod(len(v) for v in grid_values.values()) if grid_values else 5
        request = TuneRequest(
            preset=preset, optimizer=optimizer, trials=trials or size, studies=studies,
            seed=seed, storage=storage, out_dir=out, cache_dir=cache_dir, data_root=data,
            steps=steps, search_space=search_space, grid=grid_values or None, threads=threads,
            command=shlex.join(["fambench", *sys.argv[1:]]), write_tuned=write_tuned,
            hparams_dir=hparams_dir,
        )  # fmt: skip
        settings = slurm_settings(
            launcher, slurm_partition, slurm_time, slurm_cpus, slurm_gpus, slurm_opt, wait
        )
        if settings is None and workers is not None:
            raise ConfigError("--workers needs --launcher slurm (here: start more processes)")
        if settings is not None:
            if not _submitted_and_done(request, workers or 1, settings, wait):
                return
            result = summarize(request)
            _print(result)
            return
        finished = run_worker(
            request,
            progress=views,
            on_trial=lambda s, n: views.next_run(n + 1, request.trials, s),
            on_wait=views.waiting,
        )
        views.stop()
        result = summarize(request, interrupted=not finished)
    except FambenchError as exc:
        views.stop()
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        views.stop()
        raise fail("interrupted; run the same command to continue the study", 130) from None
    _print(result)
    if not finished:
        console.print("[yellow]interrupted; run the same command to continue the study[/]")
        raise typer.Exit(130)


def _submitted_and_done(request, workers: int, settings, wait: bool) -> bool:
    """Submit the workers; with ``wait``, wait for them. True when they are done."""
    from fambench.slurm import submit_tune

    submitted = submit_tune(request, workers, settings)
    print_submitted(submitted, request.out_dir)
    if wait:
        wait_quietly(submitted)
    return wait


def _print(result) -> None:  # fambench.tune.TuneResult
    shown = result.trials.drop(columns=["run_id"]).astype(object)
    shown = shown.map(
        lambda v: "—" if v is None or v != v else (f"{v:.4g}" if isinstance(v, float) else str(v))
    )
    console.print(fitted_table(shown, "Trials (score: final dev WER)"))
    console.print(f"median of study bests: {result.score:.4f}", highlight=False)
    if result.best:
        values = ", ".join(f"{k}={v}" for k, v in result.best.items())
        console.print(f"best values: {values}", highlight=False)
    for name, path in result.files.items():
        console.print(f"{name}: {path}", highlight=False, soft_wrap=True)
