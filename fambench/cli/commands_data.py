"""`fambench data synth` (generate the embedded corpus) and `fambench data check` (validate)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from fambench.cli import app, console, fail
from fambench.errors import FambenchError

data_app = typer.Typer(
    help="Speech corpora: generate the embedded eSpeak NG corpus, validate LibriSpeech roots.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Directory to write DIR/LibriSpeech/... into."),
    hours: float = typer.Option(3.0, "--hours", help="Hours of training audio (> 0)."),
    seed: int = typer.Option(
        0, "--seed", help="Seed, 0 <= SEED < 2**32; the same seed gives identical files."
    ),
    dev_utterances: int = typer.Option(300, "--dev-utterances", help="Utterances in dev (>= 1)."),
    test_utterances: int = typer.Option(
        300, "--test-utterances", help="Utterances in test (>= 1)."
    ),
    workers: int = typer.Option(0, "--workers", help="Worker processes (0: one per core)."),
    force: bool = typer.Option(
        False, "--force", help="Regenerate even if a matching corpus exists."
    ),
) -> None:
    """Generate a synthetic speech corpus (eSpeak NG) in LibriSpeech layout.

    Writes train-synth, dev-synth and test-synth (speaker-disjoint, 16 kHz mono FLAC) under
    OUT/LibriSpeech. A complete corpus with the same settings is reused; a partial or
    mismatching one is regenerated. Every option is checked before anything is written.
    """
    from fambench.data.synth import (
        SynthSettingError,
        SynthSettings,
        check_workers,
        corpus_status,
        generate_corpus,
        read_marker,
    )

    try:
        settings = SynthSettings(
            hours=hours, dev_utterances=dev_utterances, test_utterances=test_utterances, seed=seed
        )
        check_workers(workers)
    except SynthSettingError as exc:
        # Name the option as typed: "--seed must be ..." rather than the settings field.
        raise fail(f"--{exc.field.replace('_', '-')} {exc.detail}") from None
    root = out / "LibriSpeech"
    started = time.perf_counter()
    try:
        reason = None if force else corpus_status(root, settings)
        if force or reason is not None:
            if reason not in (None, "it does not exist"):
                console.print(f"[yellow]regenerating {root}: {reason}[/]", highlight=False)
            generate_corpus(out, settings, workers=workers)
            verb = f"generated in {time.perf_counter() - started:.1f} s"
        else:
            verb = "already complete, reused"
    except FambenchError as exc:
        raise fail(str(exc)) from None
    marker = read_marker(root) or {}
    table = Table(title=f"{root} ({verb})")
    for column in ("subset", "utterances", "hours", "speakers"):
        table.add_column(column, justify="left" if column == "subset" else "right")
    for subset, info in marker.get("subsets", {}).items():
        table.add_row(
            subset,
            str(info["utterances"]),
            f"{info['seconds'] / 3600:.3f}",
            str(len(info["speakers"])),
        )
    console.print(table)


@data_app.command("check")
def check(
    root: Path = typer.Argument(..., help="A LibriSpeech root (the directory holding subsets)."),
    subset: list[str] = typer.Option(
        None, "--subset", "-s", help="Subset to check (repeatable; default: all)."
    ),
) -> None:
    """Validate a LibriSpeech-layout root; exit 1 if any problem is found.

    Decodes every file. Reports per subset: utterances, hours, speakers and each problem
    (missing audio, audio without transcript, corrupt FLAC, empty or non-A-Z transcript).
    Audio must be 16 kHz mono: other sample rates are refused, not resampled.
    """
    from fambench.data.librispeech import check_root

    try:
        # A subset named twice is checked (and reported) once.
        report = check_root(root, list(dict.fromkeys(subset)) if subset else None)
    except FambenchError as exc:
        raise fail(str(exc)) from None
    table = Table(title=str(report.root))
    for column in ("subset", "utterances", "hours", "speakers", "problems"):
        table.add_column(column, justify="left" if column == "subset" else "right")
    for s in report.subsets:
        table.add_row(
            s.name,
            str(s.utterances),
            f"{s.hours:.3f}",
            str(s.speakers),
            str(len(s.problems)) if s.problems else "[green]0[/]",
        )
    console.print(table)
    for problem in report.problems:
        console.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    if not report.ok:
        raise fail(f"{len(report.problems)} problem(s) found under {report.root}", code=1)
    console.print("[green]ok[/]: no problems found")
