"""Which running tuning trials have lost their worker, so that another worker takes them over.

Two signs, one per kind of storage:

- **Optuna's heartbeat** (a database storage, RDBStorage): a worker records a heartbeat for its
  trial while the trial runs; a trial whose heartbeat is older than the grace period is failed
  by Optuna and retried (RetryHeartbeatStaleTrialCallback enqueues the same parameters), and
  the next worker to ask gets the retry, which resumes the trial's run from its checkpoint.
  This works across hosts. Optuna's journal file has no heartbeat.
- **The worker's own marks**, which work with every storage: the process (``host:pid``) and, in
  a Slurm task, the job id. A trial whose process has exited is taken over by a worker on its
  host; a trial whose Slurm task is the asking one (requeued after a signal) by that task,
  wherever it now runs.
"""

from __future__ import annotations

import os
import socket
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState


@contextmanager
def quiet() -> Iterator[None]:
    """Optuna marks its heartbeat's functions experimental (the parts used here have been
    stable since 2.9 and are pinned by the tests) and warns when a study with a heartbeat is
    asked outside Study.optimize, which fambench does by design (it counts under its lock)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
        yield


def _beats(storage: Any) -> bool:
    """Whether the storage (an RDBStorage, maybe wrapped in Optuna's cache) has a heartbeat."""
    return hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval() is not None


HEARTBEAT_S = 30
GRACE_S = 180  # a trial's run saves a checkpoint and evaluates between heartbeats: slack


def database_storage(url: str) -> RDBStorage:
    """A database storage whose trials carry a heartbeat and are retried once stale."""
    with quiet():
        return RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
        )


def fail_stale(study: optuna.Study) -> None:
    """Fail (and so retry) the trials whose heartbeat stopped; nothing without a heartbeat."""
    with quiet():
        optuna.storages.fail_stale_trials(study)


def counted(trials: Sequence[FrozenTrial]) -> int:
    """Trials that count towards a study's N: a stale trial that was retried counts once, as
    its retry."""
    with quiet():
        originals = [RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials]
    retried = {number for number in originals if number is not None}
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and t.number in retried))


@contextmanager
def heartbeat(study: optuna.Study, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every HEARTBEAT_S while the block runs (database storages
    only)."""
    storage = study._storage
    if not _beats(storage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            storage.record_heartbeat(trial_id)
            stop.wait(HEARTBEAT_S)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(study: optuna.Study, trial_id: int) -> None:
    """Mark the trial as this worker's (and this Slurm task's, in one)."""
    study._storage.set_trial_user_attr(trial_id, "worker", me())
    if job := os.environ.get("SLURM_JOB_ID"):
        study._storage.set_trial_user_attr(trial_id, "slurm_job", job)


def abandoned(trial: FrozenTrial) -> bool:
    """A running trial whose worker is gone: its Slurm task is this one, requeued, or its
    process on this host has exited (only a worker on its host can tell)."""
    job = trial.user_attrs.get("slurm_job")
    if job is not None and job == os.environ.get("SLURM_JOB_ID"):
        return True
    host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
