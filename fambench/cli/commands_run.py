"""`fambench run` (train one optimizer on one preset) and `fambench presets`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.table import Table

from fambench.cli import HparamsDir, app, console, fail
from fambench.cli.options import PrecisionOption, check_budget
from fambench.cli.progress import ProgressView, fmt_value
from fambench.errors import ConfigError, FambenchError
from fambench.hparams_dirs import DEFAULT_USER_DIR


def parse_opt_overrides(items: list[str]) -> dict[str, object]:
    """`--opt key=value` items -> {key: value} (values via the registry's parser)."""
    from fambench.key_values import parse_key_values

    return parse_key_values(items, "--opt", "--opt lr=0.01")


@app.command("run")
def run_command(
    optimizer: str = typer.Option(
        ...,
        "--optimizer",
        "-o",
        help="Registry name (see `fambench optimizers`) or a dotted path package.module:Name "
        "(e.g. torch.optim:RAdam).",
    ),
    preset: str = typer.Option("synth", "--preset", "-p", help="Workload preset (see `presets`)."),
    data: Path | None = typer.Option(
        None, "--data", help="LibriSpeech root (needed by the LibriSpeech presets)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of model init, data order and dropout."),
    steps: int | None = typer.Option(None, "--steps", help="Step budget (default: the preset's)."),
    time_budget: float | None = typer.Option(
        None,
        "--time-budget",
        help="Stop after this many training seconds (the schedule still spans the step budget).",
    ),
    opt: list[str] = typer.Option(
        [], "--opt", help="Optimizer hyperparameter key=value (repeatable), e.g. --opt lr=0.1."
    ),
    out: Path = typer.Option(Path("results"), "--out", help="Results directory."),
    cache_dir: Path = typer.Option(
        Path("data"), "--cache-dir", help="Where generated corpora and feature caches live."
    ),
    force: bool = typer.Option(False, "--force", help="Rerun even if the run already finished."),
    tensorboard: bool = typer.Option(
        False, "--tensorboard", help="Also write TensorBoard event files into the run directory."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="torch CPU threads (default: the cores available, at most 16)."
    ),
    hparams: Path | None = typer.Option(
        None, "--hparams", help="Tuned-values file to use instead of the preset's."
    ),
    hparams_dir: HparamsDir = DEFAULT_USER_DIR,
    prefetch: bool | None = typer.Option(
        None,
        "--prefetch/--no-prefetch",
        help="Make the next batch on a background thread while a step trains (default: on a "
        "GPU, off on a CPU). Changes no number.",
    ),
    precision: PrecisionOption = None,
    length_bucket: int | None = typer.Option(
        None,
        "--length-bucket",
        help="Pad batches to a multiple of this many frames, so that few batch shapes occur "
        "(0: to the longest utterance). Default: the preset's. Part of the run id.",
    ),
    nproc: int = typer.Option(
        1,
        "--nproc",
        help="Data-parallel processes on this machine (DDP; Gloo on CPU, NCCL on GPUs): each "
        "trains its share of every batch. Same as running under torchrun.",
    ),
) -> None:
    """Train a Conformer CTC model with one optimizer and record the run."""
    from fambench.training import RunRequest, run_training
    from fambench.training.distributed import Ranks

    try:
        check_budget(steps, time_budget)
        overrides = parse_opt_overrides(opt)
        ranks = Ranks.from_environment()
    except (ConfigError, ValueError) as exc:
        raise fail(str(exc)) from None
    if nproc < 1:
        raise fail(f"--nproc must be at least 1, got {nproc}")
    if nproc > 1 and ranks.distributed:
        raise fail("--nproc starts the ranks itself: leave it out under torchrun")
    request = RunRequest(
        optimizer=optimizer,
        preset=preset,
        overrides=overrides,
        seed=seed,
        steps=steps,
        time_budget_s=time_budget,
        out_dir=out,
        cache_dir=cache_dir,
        data_root=data,
        force=force,
        tensorboard=tensorboard,
        threads=threads,
        command=shlex.join(["fambench", *sys.argv[1:]]),
        hparams_file=hparams,
        hparams_dir=hparams_dir,
        ranks=Ranks(0, nproc) if nproc > 1 else ranks,
        prefetch=prefetch,
        precision=precision,
        length_bucket_frames=length_bucket,
    )
    if nproc > 1:
        _launch(request, nproc)
    if not ranks.is_main:
        _run_quietly(request)
        return
    view = ProgressView()
    try:
        outcome = run_training(request, progress=view)
    except FambenchError as exc:
        view.stop()
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        view.stop()
        raise fail("interrupted before training started; nothing was recorded", code=130) from None
    view.stop()
    _print_outcome(outcome)
    console.print(f"results: {outcome.run_dir}", highlight=False, soft_wrap=True)
    if outcome.status == "interrupted" and not outcome.skipped:
        raise typer.Exit(130)


def _launch(request, nproc: int) -> None:  # request: fambench.training.RunRequest
    """Check the request once here, then run it as `nproc` ranks; exits with their code."""
    from fambench.training.launch import launch, without_option
    from fambench.training.runner import check_launch

    try:
        check_launch(request)
    except FambenchError as exc:
        raise fail(str(exc)) from None
    code, problem = launch(nproc, without_option(sys.argv[1:], "--nproc"), request.threads)
    if problem:
        raise fail(problem, code=code)
    raise typer.Exit(code)


def _run_quietly(request) -> None:  # request: fambench.training.RunRequest
    """A rank other than 0: rank 0 prints the progress, the outcome and any error."""
    from fambench.training import run_training

    try:
        outcome = run_training(request)
    except FambenchError:
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:  # a collective that failed because another rank stopped
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise fail(f"rank {request.ranks.rank} stopped: {type(exc).__name__}: {first}", 1) from None
    if outcome.status == "interrupted" and not outcome.skipped:
        raise typer.Exit(130)


def _print_outcome(outcome) -> None:  # fambench.training.RunOutcome
    summary = outcome.summary
    if outcome.skipped:
        console.print(
            f"run {outcome.run_id} already {outcome.status} "
            f"(final dev WER {fmt_value(summary.get('final_dev_wer'))}); --force reruns it"
        )
    elif outcome.status == "diverged":
        console.print(f"[yellow]{summary.get('message')}[/]", highlight=False)
    elif outcome.status == "interrupted":
        console.print(f"[yellow]{summary.get('message')}[/]", highlight=False)
    else:
        if outcome.resumed:
            console.print("[dim](resumed from a checkpoint)[/]")
        test = summary.get("test_wer")
        console.print(
            f"final dev WER {fmt_value(summary.get('final_dev_wer'))} "
            f"(CER {fmt_value(summary.get('final_dev_cer'))})"
            + (f", test WER {fmt_value(test)}" if test is not None else "")
            + f" after {summary.get('steps')} steps, {summary.get('train_s', 0):.0f} s training"
        )


def _measured(target) -> str:  # target: fambench.targets.WorkloadTarget
    """What the baseline that set the target measured: final dev CER and WER, time per run."""
    if not target.baseline or not target.values:
        return ""
    import statistics

    text = (
        f"\nbest baseline {target.baseline}: final dev CER "
        + (f"{statistics.median(target.cer_values):.3f}" if target.cer_values else "-")
        + f", WER {statistics.median(target.values):.3f} (median of {len(target.values)} seeds)"
    )
    for threads, seconds, runs in target.run_seconds:
        plural = "s" if threads > 1 else ""
        text += f"; {seconds / 60:.1f} min per run at {threads} thread{plural} ({runs} runs)"
    return text


@app.command("presets")
def presets_command(hparams_dir: HparamsDir = DEFAULT_USER_DIR) -> None:
    """List the workload presets and the hyperparameters tuned for each."""
    from fambench.rundir import hparams_key
    from fambench.targets import load_target
    from fambench.workloads import DEFAULT_PRESET, list_presets, load_tuned

    table = Table(title="workload presets", show_lines=True)
    table.add_column("preset", no_wrap=True, style="bold")
    table.add_column("what it fixes")
    table.add_column("tuned hyperparameters (override with --opt key=value)")
    for p in list_presets():
        target = load_target(p.name, p.target_wer, user_dir=hparams_dir)
        if p.data.kind == "synth":
            data = f"synthetic corpus {p.data.synth_hours:g} h"
        else:
            data = f"{p.data.train_subset} -> {p.data.dev_subset}"
            data += f", {p.data.test_subset}" if p.data.test_subset else ""
            data += " (--data ROOT)"
        details = (
            f"{data}; d={p.model.d_model} x {p.model.n_layers} layers; "
            f"{p.batch_frames} frames/batch"
            + (f" in {p.length_bucket_frames}-frame buckets" if p.length_bucket_frames else "")
            + ("; bf16 where the device has it" if p.amp else "")
            + f"; {p.steps} steps, eval every {p.eval_every}; "
            f"target WER {fmt_value(target.wer, '.6g')}"
            + (f" (AlgoPerf: median of {target.baseline}'s seeds)" if target.baseline else "")
            + (f", test WER {p.test_target_wer:g}" if p.test_target_wer is not None else "")
            + _measured(target)
        )
        tuned = load_tuned(p.name, user_dir=hparams_dir)
        values = "\n".join(
            f"{name}: {hparams_key(hp)}"
            + (f" [dim](from {tuned.source_of(name)})[/]" if name in tuned.sources else "")
            for name, hp in tuned.optimizers.items()
        )
        if tuned.source:
            values += f"\n[dim]from {tuned.source}[/]"
        name = p.name + (" (default)" if p.name == DEFAULT_PRESET else "")
        table.add_row(name, f"{p.description}\n[dim]{details}[/]", values or "-")
    console.print(table)
