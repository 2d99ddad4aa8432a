"""The benchmark grid: every optimizer × seed on one preset, then compare, plot and report.

`run_grid` leans on `fambench.training.run_training` for the bookkeeping: a finished run
(completed or diverged) is reported without rerunning, an interrupted one resumes from its
checkpoint, since the grid sends exactly the same request again. Each run holds core slots for
its threads while it trains (fambench.core_slots), so grids started side by side never run
more threads than the machine has cores: a run waits for free cores instead. Several bench
processes may work on one grid (same command, same --out): each claims a cell before running
it (a lock file under ``<out>/.claims/``, freed when its process dies) and passes over the
cells another process holds, so together they run every cell once. `fambench.training` is
imported only when the grid runs, so comparing and reporting work without torch's training
stack.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fambench.analysis import load_results
from fambench.analysis.labels import config_label
from fambench.analysis.stats import DEFAULT_BOOTSTRAP, DEFAULT_CI_METHOD
from fambench.errors import ConfigError, ResultsError
from fambench.filelock import FileLock
from fambench.report import ReportFiles, build_report

log = logging.getLogger(__name__)

#: Called before each run with (index from 1, number of runs, "optimizer seed N").
OnRun = Callable[[int, int, str], None]


@dataclass(frozen=True)
class GridCell:
    """One (optimizer, seed) of the grid, with everything its run request needs."""

    optimizer: str
    seed: int
    preset: str
    out_dir: Path
    cache_dir: Path
    steps: int | None = None
    time_budget_s: float | None = None
    data_root: Path | None = None
    force: bool = False
    command: str | None = None
    threads: int | None = None
    hparams_file: Path | None = None
    hparams_dir: Path | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  # values set beyond the tuned ones
    precision: str | None = None  # None: the preset's, where the device has it

    @property
    def label(self) -> str:
        """``fam`` or ``fam[sampling=random]``: the configuration this cell runs, labelled as
        compare labels its runs."""
        return config_label(self.optimizer, dict(self.overrides))

    def request(self) -> Any:
        """The fambench.training.RunRequest of this cell."""
        from fambench.training import RunRequest

        return RunRequest(
            optimizer=self.optimizer,
            preset=self.preset,
            seed=self.seed,
            steps=self.steps,
            time_budget_s=self.time_budget_s,
            out_dir=self.out_dir,
            cache_dir=self.cache_dir,
            data_root=self.data_root,
            force=self.force,
            command=self.command,
            threads=self.threads,
            hparams_file=self.hparams_file,
            hparams_dir=self.hparams_dir,
            overrides=dict(self.overrides),
            precision=self.precision,
        )


#: Runs one cell and returns an outcome with ``run_dir``, ``status`` (and optionally
#: ``skipped``, ``resumed``), like fambench.training.RunOutcome.
Runner = Callable[[GridCell], Any]


@dataclass(frozen=True)
class GridRun:
    """What happened to one cell of the grid."""

    optimizer: str
    seed: int
    run_dir: Path
    status: str
    skipped: bool  # finished before this grid ran: reported, not rerun
    resumed: bool


@dataclass(frozen=True)
class BenchResult:
    """The grid's runs and the comparison files written from them."""

    runs: tuple[GridRun, ...]
    files: ReportFiles | None  # None when the grid stopped before any run existed
    interrupted: bool  # Ctrl-C stopped the grid; the same command resumes it


def parse_optimizers(text: str) -> list[str]:
    """``"a, b"`` → ``["a", "b"]``; ConfigError when empty or repeated."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError("--optimizers is empty; give comma-separated optimizer names")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--optimizers names {', '.join(repeated)} more than once")
    return names


Variant = tuple[str, tuple[tuple[str, Any], ...]]


def parse_variant(text: str) -> Variant:
    """``"fam:sampling=random,beta=0.95"`` → ``("fam", (("sampling", "random"), ("beta",
    0.95)))``: an extra configuration of an optimizer, its tuned values with these set on top.
    ConfigError naming the problem otherwise."""
    from fambench.key_values import parse_key_values, split_top_level

    name, sep, rest = text.partition(":")
    pairs = split_top_level(rest)
    if not sep or not name.strip() or not pairs:
        raise ConfigError(f"--variant {text!r}: expected OPTIMIZER:key=value[,key=value...]")
    values = parse_key_values(pairs, f"--variant {text!r}:", "--variant fam:sampling=random")
    return name.strip(), tuple(values.items())


def grid_cells(
    preset: str,
    optimizers: Sequence[str],
    seeds: Iterable[int],
    out_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    steps: int | None = None,
    time_budget_s: float | None = None,
    data_root: str | os.PathLike[str] | None = None,
    force: bool = False,
    command: str | None = None,
    threads: int | None = None,
    hparams_file: str | os.PathLike[str] | None = None,
    hparams_dir: str | os.PathLike[str] | None = None,
    variants: Sequence[Variant] = (),
    precision: str | None = None,
) -> list[GridCell]:
    """The grid's cells, seed-major (a grid stopped part-way still compares every optimizer);
    ``variants`` (see parse_variant) run beside the optimizers, seed by seed."""
    seeds = list(seeds)
    if not optimizers:
        raise ConfigError("no optimizers given")
    if not seeds:
        raise ConfigError("no seeds given")
    template = GridCell(
        optimizer="",
        seed=0,
        preset=preset,
        out_dir=Path(out_dir),
        cache_dir=Path(cache_dir),
        steps=steps,
        time_budget_s=time_budget_s,
        data_root=Path(data_root) if data_root is not None else None,
        force=force,
        command=command,
        threads=threads,
        hparams_file=Path(hparams_file) if hparams_file is not None else None,
        hparams_dir=Path(hparams_dir) if hparams_dir is not None else None,
        precision=precision,
    )
    configurations: list[Variant] = [(name, ()) for name in optimizers] + list(variants)
    return [
        dataclasses.replace(template, optimizer=name, seed=int(seed), overrides=overrides)
        for seed in seeds
        for name, overrides in configurations
    ]


def run_grid(
    preset: str,
    optimizers: Sequence[str],
    seeds: Iterable[int],
    out_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    target_wer: float | None = None,
    reference: str,
    progress: Callable[[Any], None] | None = None,
    on_run: OnRun | None = None,
    on_wait: Callable[[str], None] | None = None,
    runner: Runner | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    method: str = DEFAULT_CI_METHOD,
    include_contended: bool = False,
    rerun_contended: bool = False,
    **cell_options: Any,
) -> BenchResult:
    """Train every (optimizer, seed) of ``preset`` into ``out_dir``, then write the comparison.

    ``cell_options`` are grid_cells' (budget, data, threads, tuned values, variants, ...).
    Every request is validated before the first run starts (a typo in the fourth optimizer
    fails at once, not after an hour). Runs go to ``<out_dir>/<run-id>/``; ``comparison.csv``,
    ``comparison.md``, ``pairwise.csv``, ``report.md`` and the PNGs go to ``<out_dir>/`` and
    cover exactly the grid's runs. Ctrl-C inside a run stops the grid after that run is saved
    as interrupted; the report of what exists is still written. ``rerun_contended`` trains
    again a finished run whose timing was contended (same numbers, honest time). ``runner``
    replaces ``run_training`` (called with ``progress``, holding core slots, telling
    ``on_wait`` when it waits for them) for callers that run cells their own way.
    """
    out = Path(out_dir)
    cells = grid_cells(preset, optimizers, seeds, out_dir, cache_dir, **cell_options)
    done, interrupted = run_cells(
        cells,
        runner=runner,
        on_run=on_run,
        progress=progress,
        on_wait=on_wait,
        rerun_contended=rerun_contended,
    )
    return BenchResult(
        runs=tuple(done),
        files=grid_report(
            done,
            out,
            reference=reference,
            hparams_dir=cells[0].hparams_dir,
            target_wer=target_wer,
            n_boot=n_boot,
            method=method,
            include_contended=include_contended,
        ),
        interrupted=interrupted,
    )


def grid_report(
    runs: Sequence[GridRun],
    out: Path,
    *,
    reference: str,
    hparams_dir: Path | None = None,
    **options: Any,
) -> ReportFiles | None:
    """The comparison of the grid's runs that exist, written to ``out`` (None: none exist).
    ``options``: build_report's (target_wer, n_boot, method, include_contended)."""
    # One run directory may serve two cells (a variant equal to the tuned values): once.
    existing = list(dict.fromkeys(r.run_dir for r in runs if (r.run_dir / "config.json").is_file()))
    if not existing:
        return None
    return build_report(
        load_results(existing, hparams_dir=hparams_dir),
        out,
        reference=reference,
        sources=[out],
        **options,
    )


def run_cells(
    cells: Sequence[GridCell],
    *,
    runner: Runner | None = None,
    on_run: OnRun | None = None,
    progress: Callable[[Any], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
    rerun_contended: bool = False,
) -> tuple[list[GridRun], bool]:
    """Run the cells in order (every request validated first); stop after one that was
    interrupted. (runs, interrupted)."""
    runner = runner or _training_runner(cells, progress, on_wait, rerun_contended)
    return _run_cells(cells, runner, on_run)


def runs_on_disk(cells: Sequence[GridCell], run_ids: Sequence[str]) -> list[GridRun]:
    """The cells' runs (run ``run_ids[i]`` of cell i) as their run directories record them;
    status "not started" where there is none."""
    from fambench.rundir import RunFiles
    from fambench.rundir.loading import read_summary

    runs = []
    for cell, run_id in zip(cells, run_ids, strict=True):
        run_dir = cell.out_dir / run_id
        summary = read_summary(RunFiles(run_dir))
        status = summary.status if summary is not None else "not started"
        runs.append(GridRun(cell.optimizer, cell.seed, run_dir, status, False, False))
    return runs


#: The status of a cell another bench process is running: passed over, reported as running.
TAKEN = "running"


@dataclass(frozen=True)
class _Taken:
    run_dir: Path
    status: str = TAKEN
    skipped: bool = True
    resumed: bool = False


@contextmanager
def _claimed(out_dir: Path, run_id: str) -> Iterator[bool]:
    """Hold the grid claim on ``run_id`` while the block runs; yields False when another
    process holds it."""
    claims = out_dir / ".claims"
    claim = FileLock(claims / f"{run_id}.lock", blocking=False)
    try:
        claims.mkdir(parents=True, exist_ok=True)
        mine = claim.acquire()
    except OSError as exc:
        raise ResultsError(f"cannot claim {run_id} under {claims}: {exc.strerror}") from exc
    try:
        yield mine
    finally:
        claim.release()


def _training_runner(
    cells: Sequence[GridCell],
    progress: Callable[[Any], None] | None,
    on_wait: Callable[[str], None] | None,
    rerun_contended: bool = False,
) -> Runner:
    """run_training on each cell, after validating every cell's request (no side effects),
    holding core slots for the run's threads while it trains."""
    from fambench.core_slots import reserved_cores
    from fambench.rundir import FINISHED, RunFiles
    from fambench.rundir.loading import read_summary
    from fambench.training import plan_run, run_training

    plans = {id(cell): plan_run(cell.request()) for cell in cells}  # validates every cell

    def runner(cell: GridCell) -> Any:
        plan = plans.get(id(cell)) or plan_run(cell.request())
        with _claimed(cell.out_dir, plan.run_id) as mine:
            if not mine:
                return _Taken(plan.run_dir)
            summary = None if cell.force else read_summary(RunFiles(plan.run_dir))
            if summary is not None and summary.status in FINISHED:
                if not (rerun_contended and summary.contended is True):
                    return run_training(cell.request(), progress=progress)  # reported
                cell = dataclasses.replace(cell, force=True)
            with reserved_cores(plan.threads, on_wait=on_wait):
                return run_training(cell.request(), progress=progress)

    return runner


def _run_cells(
    cells: Sequence[GridCell], runner: Runner, on_run: OnRun | None
) -> tuple[list[GridRun], bool]:
    """Run the cells in order; stop after one that was interrupted. (runs, interrupted)."""
    done: list[GridRun] = []
    for index, cell in enumerate(cells, start=1):
        label = f"{cell.label} seed {cell.seed}"
        if on_run is not None:
            on_run(index, len(cells), label)
        outcome = runner(cell)
        done.append(
            GridRun(
                optimizer=cell.optimizer,
                seed=cell.seed,
                run_dir=Path(outcome.run_dir),
                status=str(outcome.status),
                skipped=bool(getattr(outcome, "skipped", False)),
                resumed=bool(getattr(outcome, "resumed", False)),
            )
        )
        log.info("%s: %s (%s)", label, outcome.status, outcome.run_dir)
        if outcome.status == "interrupted":
            return done, True
    return done, False
