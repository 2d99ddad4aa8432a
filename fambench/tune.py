"""`fambench tune`: the same tuning budget for every optimizer (AlgoPerf's external tuning).

K studies of N trials each over the optimizer's search space: scrambled Sobol points through
Optuna's QMCSampler (a grid through GridSampler), studies kept in an Optuna storage. Every
trial is an ordinary run (`fambench.training.run_training`), so resume, skip-if-done and
`compare` apply. A trial's score is its final dev WER at the end of the budget; a diverged or
failed trial is a miss (Optuna state FAIL) and never stops the study. The workload score is the
median over studies of each study's best (a study without a completed trial counts as +inf).

Several workers may work on one study: processes on one machine, Slurm jobs (fambench.slurm),
or machines that share the output directory and the storage (a journal file under ``--out`` by
default, or a database URL). Asking for a trial and counting trials happen under a lock file in
the output directory, so a study gets exactly its N trials and no QMC point is handed out
twice: Optuna cannot ask on a condition ("only while the study has fewer than N trials"), and
its own limits (``n_trials``, MaxTrialsCallback) count per worker or after a trial ends, so
workers started together would overshoot. A trial whose worker died is taken over by another,
which resumes its run: on a database through Optuna's heartbeat and retry, otherwise by the
worker's marks (fambench.trial_liveness).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from fambench import trial_liveness as liveness
from fambench.core_slots import reserved_cores
from fambench.errors import ConfigError, FambenchError
from fambench.fileio import write_text
from fambench.filelock import FileLock
from fambench.hparams_dirs import DEFAULT_USER_DIR, portable_source
from fambench.optim import Dimension, apply_point, get_optimizer_spec, resolve_search_space
from fambench.training import RunRequest, plan_run, run_training
from fambench.training.plan import default_threads
from fambench.workloads.tuned import record_tuned

optuna.logging.set_verbosity(optuna.logging.WARNING)

_ONE_MINUS = "1-"  # a log1m dimension is sampled as 1 − value, log-uniformly


@dataclass(frozen=True)
class TuneRequest:
    """One tuning job: which optimizer on which preset, and the budget."""

    preset: str
    optimizer: str
    trials: int = 5
    studies: int = 1
    seed: int = 0
    storage: str | None = None  # an Optuna storage URL; default: a journal file under out_dir
    out_dir: Path = Path("results/tune")
    cache_dir: Path = Path("data")
    data_root: Path | None = None
    steps: int | None = None
    search_space: Path | None = None
    grid: Mapping[str, Sequence[float]] | None = None  # a grid instead of quasi-random points
    threads: int | None = None
    command: str | None = None
    write_tuned: bool = True  # record the best values as the preset's tuned values
    hparams_dir: Path = DEFAULT_USER_DIR  # where they are recorded (and read, before shipped)

    @property
    def runs_dir(self) -> Path:
        return Path(self.out_dir) / "trials"

    def study_name(self, index: int) -> str:
        return f"{self.preset}-{self.optimizer}-seed{self.seed}-study{index}"


@dataclass(frozen=True)
class TuneResult:
    """The trials of every study, each study's best, the workload score and files written."""

    trials: pd.DataFrame
    study_bests: pd.DataFrame
    score: float  # median over studies of the study's best final dev WER
    best: dict[str, Any]  # hyperparameters of the best trial over all studies
    files: dict[str, Path] = field(default_factory=dict)
    interrupted: bool = False


# ---------------------------------------------------------------------------- search space


def distributions(space: Mapping[str, Dimension]) -> dict[str, BaseDistribution]:
    """Optuna distributions of a search space (log1m dimensions as 1 − value, log scale)."""
    out: dict[str, BaseDistribution] = {}
    for name, dim in space.items():
        if dim.scale == "log1m":
            out[_ONE_MINUS + name] = FloatDistribution(1 - dim.high, 1 - dim.low, log=True)
        elif dim.integer:
            out[name] = IntDistribution(int(dim.low), int(dim.high), log=dim.scale == "log")
        else:
            out[name] = FloatDistribution(dim.low, dim.high, log=dim.scale == "log")
    return out


def point_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's parameters back in the search space's own names and values."""
    return {
        (k[len(_ONE_MINUS) :] if k.startswith(_ONE_MINUS) else k): (
            1 - v if k.startswith(_ONE_MINUS) else v
        )
        for k, v in params.items()
    }


def _space(request: TuneRequest) -> dict[str, Dimension]:
    try:
        space = resolve_search_space(request.optimizer, request.search_space)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if request.grid:
        unknown = sorted(set(request.grid) - set(space))
        if unknown:
            raise ConfigError(f"--grid {unknown[0]}: not in the search space ({', '.join(space)})")
        space = {name: space[name] for name in request.grid}
    return space


def _sampler(request: TuneRequest, index: int) -> optuna.samplers.BaseSampler:
    if request.grid:
        return optuna.samplers.GridSampler(
            {name: list(values) for name, values in request.grid.items()}, seed=request.seed
        )
    with (
        warnings.catch_warnings()
    ):  # Optuna marks QMCSampler experimental; the interface used here is stable
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(
            qmc_type="sobol", scramble=True, seed=request.seed + index
        )


def open_storage(request: TuneRequest) -> Any:
    """The request's storage: a database URL as given, else a journal file under out_dir."""
    if request.storage:
        # One worker at a time: on a fresh database, two creating Optuna's tables at once
        # collide (duplicate type "studydirection" on PostgreSQL).
        with _tuning_lock(Path(request.out_dir)):
            return liveness.database_storage(request.storage)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(request.out_dir).mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(Path(request.out_dir) / "studies.journal")))


# ---------------------------------------------------------------------------- the workers


def _tuning_lock(out_dir: Path) -> FileLock:
    """Serialises asking and counting among every worker that shares ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(out_dir / ".tune.lock")


def _next_trial(study: optuna.Study, request: TuneRequest, dists: dict) -> tuple[int, dict] | None:
    """(trial number, params) to work on: an abandoned trial first, else a new one while the
    study has fewer than its N trials; None when there is nothing left to do."""
    with _tuning_lock(Path(request.out_dir)):
        liveness.fail_stale(study)  # stale trials come back as waiting retries, asked first
        trials = study.get_trials(deepcopy=False)
        for trial in trials:
            if trial.state == TrialState.RUNNING and liveness.abandoned(trial):
                liveness.claim(study, trial._trial_id)
                return trial.number, dict(trial.params)
        if liveness.counted(trials) >= request.trials and not any(
            t.state == TrialState.WAITING for t in trials
        ):
            return None
        with liveness.quiet():
            trial = study.ask(dists)
        liveness.claim(study, trial._trial_id)
        return trial.number, dict(trial.params)


def _run_request(request: TuneRequest, index: int, point: Mapping[str, Any]) -> RunRequest:
    defaults = get_optimizer_spec(request.optimizer).defaults
    return RunRequest(
        optimizer=request.optimizer,
        preset=request.preset,
        overrides=apply_point(defaults, point),
        seed=request.seed + index,
        steps=request.steps,
        out_dir=request.runs_dir,
        cache_dir=Path(request.cache_dir),
        data_root=request.data_root,
        threads=request.threads,
        command=request.command,
        hparams_dir=Path(request.hparams_dir),
    )


def _work_on(study, request, index, number, params, progress) -> bool:
    """Run one trial and tell the study its outcome; False when the run was interrupted."""
    run = _run_request(request, index, point_of(params))
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    study._storage.set_trial_user_attr(trial_id, "run_id", plan_run(run).run_id)
    try:
        with liveness.heartbeat(study, trial_id):
            outcome = run_training(run, progress=progress)
    except FambenchError as exc:  # the run recorded itself as failed: a miss
        study._storage.set_trial_user_attr(trial_id, "status", "failed")
        study._storage.set_trial_user_attr(trial_id, "message", str(exc))
        study.tell(number, state=TrialState.FAIL)
        return True
    if outcome.status == "interrupted":
        return False  # left running: the next worker (or this command again) resumes it
    summary = outcome.summary
    study._storage.set_trial_user_attr(trial_id, "status", outcome.status)
    study._storage.set_trial_user_attr(trial_id, "time_to_target_s", summary["time_to_target_s"])
    score = summary.get("final_dev_wer")
    if outcome.status == "completed" and score is not None and math.isfinite(score):
        study.tell(number, float(score))
    else:
        study.tell(number, state=TrialState.FAIL)
    return True


def run_worker(
    request: TuneRequest,
    progress: Callable[[Any], None] | None = None,
    on_trial: Callable[[str, int], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> bool:
    """Work on every study until each has its N trials; False if interrupted.

    Each trial holds core slots for its threads (fambench.core_slots), taken before the trial
    is asked for: workers started side by side wait for free cores instead of sharing them.
    """
    check_request(request)
    dists = distributions(_space(request))
    if request.grid:  # GridSampler hands out exactly these values
        dists = {k: CategoricalDistribution(list(v)) for k, v in request.grid.items()}
    storage = open_storage(request)
    for index in range(request.studies):
        # One worker at a time: on a fresh database, two creating Optuna's tables at once
        # collide (duplicate type "studydirection" on PostgreSQL).
        with _tuning_lock(Path(request.out_dir)):
            study = optuna.create_study(
                study_name=request.study_name(index),
                storage=storage,
                sampler=_sampler(request, index),
                direction="minimize",
                load_if_exists=True,
            )
        while True:
            with reserved_cores(request.threads or default_threads(), on_wait=on_wait):
                if (job := _next_trial(study, request, dists)) is None:
                    break
                number, params = job
                if on_trial is not None:
                    on_trial(request.study_name(index), number)
                if not _work_on(study, request, index, number, params, progress):
                    return False
    return True


def check_request(request: TuneRequest) -> None:
    """ConfigError for a request that cannot run (checked before any trial starts)."""
    if request.trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {request.trials}")
    if request.studies < 1:
        raise ConfigError(f"--studies must be at least 1, got {request.studies}")
    if request.grid and request.studies != 1:
        raise ConfigError("--grid runs one study (a grid has no randomness to repeat)")
    plan_run(_run_request(request, 0, {}))  # preset, optimizer, data, --out: checked up front


def studies_complete(request: TuneRequest) -> bool:
    """Whether every study has its N trials, each finished (complete or failed)."""
    storage = open_storage(request)
    for index in range(request.studies):
        try:
            study = optuna.load_study(study_name=request.study_name(index), storage=storage)
        except KeyError:
            return False
        trials = study.get_trials(deepcopy=False)
        if liveness.counted(trials) < request.trials or any(
            not t.state.is_finished() for t in trials
        ):
            return False
    return True


# ---------------------------------------------------------------------------- the outcome


def trials_table(request: TuneRequest) -> pd.DataFrame:
    """One row per trial of every study: study, trial, status, score, time to target, values."""
    storage = open_storage(request)
    rows = []
    for index in range(request.studies):
        try:
            study = optuna.load_study(study_name=request.study_name(index), storage=storage)
        except KeyError:
            continue
        for trial in study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            status = attrs.get("status") or trial.state.name.lower()
            rows.append(
                {
                    "study": index,
                    "trial": trial.number,
                    "status": status,
                    "final_dev_wer": trial.value if trial.state == TrialState.COMPLETE else np.nan,
                    "time_to_target_s": attrs.get("time_to_target_s"),
                    **point_of(trial.params),
                    "run_id": attrs.get("run_id", ""),
                }
            )
    return pd.DataFrame(rows)


def study_bests(trials: pd.DataFrame, studies: int) -> tuple[pd.DataFrame, float]:
    """Each study's best trial, and the median of the study bests (a study without a completed
    trial scores +inf: it found nothing)."""
    bests = []
    for index in range(studies):
        done = trials[(trials["study"] == index) & trials["final_dev_wer"].notna()]
        if done.empty:
            bests.append({"study": index, "trial": None, "final_dev_wer": math.inf})
        else:
            bests.append(done.loc[done["final_dev_wer"].idxmin()].to_dict())
    frame = pd.DataFrame(bests)
    return frame, float(np.median(frame["final_dev_wer"]))


def summarize(request: TuneRequest, interrupted: bool = False) -> TuneResult:
    """Build the tables, write them (and the tuned values) and return them."""
    from fambench.analysis.tables import to_markdown

    trials = trials_table(request)
    if trials.empty:
        raise ConfigError(f"{request.out_dir}: no trials yet")
    bests, score = study_bests(trials, request.studies)
    out = Path(request.out_dir)
    stem = f"{request.preset}-{request.optimizer}"
    files = {
        "trials_csv": out / f"{stem}-trials.csv",
        "trials_md": out / f"{stem}-trials.md",
    }
    write_text(files["trials_csv"], trials.to_csv(index=False))
    best: dict[str, Any] = {}
    finite = bests[np.isfinite(bests["final_dev_wer"])]
    if not finite.empty:
        row = finite.loc[finite["final_dev_wer"].idxmin()]
        space = _space(request)
        point = {name: row[name] for name in space if name in row and pd.notna(row[name])}
        point = {k: (int(v) if space[k].integer else float(v)) for k, v in point.items()}
        best = apply_point(get_optimizer_spec(request.optimizer).defaults, point)
    text = _report(request, trials, bests, score, best, to_markdown)
    write_text(files["trials_md"], text)
    if best and request.write_tuned and not interrupted:
        files["tuned"] = record_tuned(
            request.preset,
            request.optimizer,
            best,
            source=portable_source(files["trials_md"]),
            method=_method(request, score),
            directory=Path(request.hparams_dir),
        )
    return TuneResult(trials, bests, score, best, files, interrupted)


def _method(request: TuneRequest, score: float) -> str:
    kind = "grid" if request.grid else "scrambled-Sobol quasi-random search (Optuna QMCSampler)"
    steps = f"{request.steps} steps" if request.steps else "the preset's step budget"
    return (
        f"fambench tune: {kind}, {request.studies} studies x {request.trials} trials at {steps}, "
        f"seeds {request.seed}..{request.seed + request.studies - 1}; the best trial's values; "
        f"median of study bests {score:.4f} (final dev WER)"
    )


def _report(request, trials, bests, score, best, to_markdown) -> str:
    shown = trials.copy()
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(lambda v: "—" if pd.isna(v) else f"{v:.4g}")
    lines = [
        f"# Tuning {request.optimizer} on {request.preset}",
        "",
        _method(request, score) + ".",
        "",
        to_markdown(shown),
        "## Study bests",
        "",
        to_markdown(bests[["study", "trial", "final_dev_wer"]].astype(str)),
        f"Median of study bests (the workload score): **{score:.4f}**",
        "",
        "Best values: " + (", ".join(f"`{k}={v}`" for k, v in best.items()) or "none"),
        "",
    ]
    return "\n".join(lines)
