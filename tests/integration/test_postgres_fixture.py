"""Optuna's RDBStorage against a real PostgreSQL server (the session's `postgres_url` fixture)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study_name(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"  # the database lives for the whole session


def _dispose(*storages: RDBStorage) -> None:
    for storage in storages:
        storage.engine.dispose()


def test_trials_from_two_handles_read_back_through_a_fresh_storage(postgres_url: str) -> None:
    name = _study_name("roundtrip")
    storages = [RDBStorage(postgres_url) for _ in range(3)]
    try:
        optuna.create_study(study_name=name, storage=storages[0], direction="minimize")
        ran: dict[int, tuple[int, float, str]] = {}

        def objective(handle: str):
            def run(trial: optuna.Trial) -> float:
                x = trial.suggest_int("x", 0, 1000)
                value = x / 2 + trial.number
                trial.set_user_attr("handle", handle)
                ran[trial.number] = (x, value, handle)
                return value

            return run

        first = optuna.load_study(study_name=name, storage=storages[1])
        second = optuna.load_study(study_name=name, storage=storages[2])
        first.optimize(objective("first"), n_trials=2)
        second.optimize(objective("second"), n_trials=1)

        fresh = RDBStorage(postgres_url)
        storages.append(fresh)
        study = optuna.load_study(study_name=name, storage=fresh)
        trials = study.get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
        assert {t.number: (t.params["x"], t.value, t.user_attrs["handle"]) for t in trials} == ran
        assert [ran[n][2] for n in range(3)] == ["first", "first", "second"]
        assert study.best_value == min(value for _, value, _ in ran.values())
    finally:
        _dispose(*storages)


_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import optuna

    url, name, worker, n_workers, n_trials, barrier = sys.argv[1:]
    worker, n_workers, n_trials, barrier = int(worker), int(n_workers), int(n_trials), Path(barrier)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=worker)
    )

    # Start together, so that the two processes' trials really interleave.
    (barrier / f"ready-{worker}").touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < n_workers:
        if time.monotonic() > deadline:
            sys.exit("barrier: the other worker never came")
        time.sleep(0.01)

    def objective(trial):
        trial.set_user_attr("worker", worker)
        x = trial.suggest_float("x", -1.0, 1.0)
        time.sleep(0.2)
        return x * x

    study.optimize(objective, n_trials=n_trials)
    storage.engine.dispose()
    """
)


@pytest.mark.subprocess
def test_two_processes_share_a_study(postgres_url: str, tmp_path: Path) -> None:
    name = _study_name("concurrent")
    storage = RDBStorage(postgres_url)
    try:
        optuna.create_study(study_name=name, storage=storage)  # tables and study exist first
        n_workers, n_trials = 2, 4
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, postgres_url, name]
                + [str(w), str(n_workers), str(n_trials), str(tmp_path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for w in range(n_workers)
        ]
        for proc in workers:
            output, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, output

        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        assert len(trials) == n_workers * n_trials
        assert all(t.state == TrialState.COMPLETE for t in trials)
        assert sorted(t.number for t in trials) == list(range(n_workers * n_trials))
        by_worker = {
            w: [t for t in trials if t.user_attrs["worker"] == w] for w in range(n_workers)
        }
        assert all(len(ts) == n_trials for ts in by_worker.values())
        assert all(t.value == pytest.approx(t.params["x"] ** 2) for t in trials)
        # The two workers ran at the same time, not one after the other.
        spans = [
            (min(t.datetime_start for t in ts), max(t.datetime_complete for t in ts))
            for ts in by_worker.values()
        ]
        assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans
    finally:
        _dispose(storage)
