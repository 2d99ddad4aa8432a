"""`fambench tune`: quasi-random studies with Optuna, every trial an ordinary run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

import fambench.cli as cli
from fambench.optim import resolve_search_space
from fambench.rundir import find_run_dirs, load_run
from fambench.tune import TuneRequest, distributions, point_of, run_worker, summarize
from fambench.workloads import load_tuned


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tune-cache")


def invoke(*args) -> tuple[int, str]:
    cli._register_commands()
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    return result.exit_code, result.output


def test_qmc_points_lie_in_the_declared_ranges_with_the_declared_scales():
    space = resolve_search_space("adamw")
    dists = distributions(space)
    assert dists["lr"].log and dists["1-betas.0"].log and not dists["warmup_fraction"].log
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        sampler = optuna.samplers.QMCSampler(scramble=True, seed=0)
    study = optuna.create_study(sampler=sampler)
    points = [point_of(study.ask(dists).params) for _ in range(32)]
    for name, dim in space.items():
        values = np.array([p[name] for p in points])
        assert ((dim.low <= values) & (values <= dim.high)).all(), name
        # The declared scale: points spread evenly on it (quartiles near 1/4 and 3/4 of it).
        if dim.scale == "log":
            unit = (np.log(values) - np.log(dim.low)) / (np.log(dim.high) - np.log(dim.low))
        elif dim.scale == "log1m":
            unit = (np.log(1 - values) - np.log(1 - dim.high)) / (
                np.log(1 - dim.low) - np.log(1 - dim.high)
            )
        else:
            unit = (values - dim.low) / (dim.high - dim.low)
        q1, q3 = np.quantile(unit, [0.25, 0.75])
        assert 0.12 < q1 < 0.38 and 0.62 < q3 < 0.88, (name, q1, q3)


def test_tune_acceptance_command(synth_corpus, cache, tmp_path, hparams_dir):
    out = tmp_path / "tune"
    args = ["tune", "--preset", "smoke", "--optimizer", "adamw", "--trials", "3",
            "--data", synth_corpus, "--cache-dir", cache, "--out", out, "--threads", "1",
            "--hparams-dir", hparams_dir]  # fmt: skip
    code, output = invoke(*args)
    assert code == 0, output
    runs = find_run_dirs([out / "trials"])
    assert len(runs) == 3 and {load_run(r).status for r in runs} == {"completed"}
    trials = pd.read_csv(out / "smoke-adamw-trials.csv")
    assert list(trials["trial"]) == [0, 1, 2] and set(trials["status"]) == {"completed"}
    assert trials["final_dev_wer"].notna().all()
    assert len({tuple(r) for r in trials[["lr", "weight_decay"]].to_numpy()}) == 3  # distinct
    best = trials.loc[trials["final_dev_wer"].idxmin()]
    recorded = json.loads((hparams_dir / "tuned" / "smoke.json").read_text())
    assert set(recorded["optimizers"]) == {"adamw"}
    assert recorded["optimizers"]["adamw"]["lr"] == pytest.approx(best["lr"])
    # Named without the temporary directory's machine-specific path.
    assert recorded["sources"]["adamw"]["source"] == "tune/smoke-adamw-trials.md"
    merged = load_tuned("smoke", user_dir=hparams_dir)
    assert merged.for_optimizer("sgd") == {"lr": 0.1}  # the shipped values of the others
    assert merged.for_optimizer("adamw")["lr"] == pytest.approx(best["lr"])

    stamps = {r: (r / "summary.json").stat().st_mtime_ns for r in runs}
    code, output = invoke(*args)  # again: nothing is redone
    assert code == 0, output
    assert {r: (r / "summary.json").stat().st_mtime_ns for r in runs} == stamps
    assert len(pd.read_csv(out / "smoke-adamw-trials.csv")) == 3

    run_out = tmp_path / "results"
    code, output = invoke("run", "--optimizer", "adamw", "--preset", "smoke", "--data",
                          synth_corpus, "--cache-dir", cache, "--out", run_out, "--threads", "1",
                          "--hparams-dir", hparams_dir)  # fmt: skip
    assert code == 0, output
    (run_dir,) = find_run_dirs([run_out])
    config = load_run(run_dir).config
    assert config.optimizer_hparams["lr"] == pytest.approx(best["lr"])
    assert config.schedule["warmup_fraction"] == pytest.approx(best["warmup_fraction"])
    assert config.tuned_from == "tune/smoke-adamw-trials.md"


def test_a_search_space_file_replaces_the_registry_and_diverged_trials_are_misses(
    synth_corpus, cache, tmp_path, hparams_dir
):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"min": 1e5, "max": 1e6, "scaling": "log"}}))
    request = TuneRequest(
        preset="smoke", optimizer="adamw", trials=2, out_dir=tmp_path / "tune",
        cache_dir=cache, data_root=synth_corpus, search_space=space, threads=1,
        hparams_dir=hparams_dir,
    )  # fmt: skip
    assert run_worker(request)
    result = summarize(request)
    assert list(result.trials["status"]) == ["diverged", "diverged"]
    assert result.trials["final_dev_wer"].isna().all()
    assert (result.trials["lr"] >= 1e5).all() and "weight_decay" not in result.trials
    assert math.isinf(result.score) and result.best == {}
    assert "tuned" not in result.files and not hparams_dir.exists()  # nothing to record
    study = optuna.load_study(study_name=request.study_name(0), storage=_journal(tmp_path / "tune"))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2


def _journal(out: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(out / "studies.journal")))


def _workers(synth_corpus, cache, out, storage=None, n=2, trials=4):
    args = [sys.executable, "-m", "fambench", "tune", "--preset", "smoke", "--optimizer", "sgd",
            "--trials", str(trials), "--steps", "4", "--data", str(synth_corpus), "--cache-dir",
            str(cache), "--out", str(out), "--threads", "1", "--no-write-tuned"]  # fmt: skip
    if storage:
        args += ["--storage", storage]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(n)]  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]
    return outputs


def _assert_distinct_trials(out: Path, trials: int) -> None:
    table = pd.read_csv(out / "smoke-sgd-trials.csv")
    assert sorted(table["trial"]) == list(range(trials))
    assert table["run_id"].nunique() == trials and set(table["status"]) == {"completed"}
    assert len(find_run_dirs([out / "trials"])) == trials


@pytest.mark.subprocess
def test_two_workers_on_one_journal_study_share_its_trials(synth_corpus, cache, tmp_path):
    # Fill the feature cache first, so that the two workers do not both compute it.
    _workers(synth_corpus, cache, tmp_path / "warm", n=1, trials=1)
    out = tmp_path / "tune"
    _workers(synth_corpus, cache, out)
    _assert_distinct_trials(out, 4)


@pytest.mark.subprocess
def test_two_workers_on_one_postgresql_study_share_its_trials(
    synth_corpus, cache, tmp_path, postgres_url
):
    _workers(synth_corpus, cache, tmp_path / "warm", n=1, trials=1)
    out = tmp_path / "tune"
    _workers(synth_corpus, cache, out, storage=postgres_url)
    _assert_distinct_trials(out, 4)
    study = optuna.load_study(study_name="smoke-sgd-seed0-study0", storage=postgres_url)
    assert len(study.trials) == 4


def test_an_interrupted_study_continues_without_redoing_finished_trials(
    synth_corpus, cache, tmp_path
):
    request = TuneRequest(
        preset="smoke", optimizer="sgd", trials=3, steps=6, out_dir=tmp_path / "tune",
        cache_dir=cache, data_root=synth_corpus, threads=1, write_tuned=False,
    )  # fmt: skip
    seen = []

    def stop_in_the_second_trial(event):
        if event.phase == "train" and event.step == 4:
            seen.append(event)
            if len(seen) == 2:
                raise KeyboardInterrupt

    assert not run_worker(request, progress=stop_in_the_second_trial)
    study = optuna.load_study(study_name=request.study_name(0), storage=_journal(request.out_dir))
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]
    first = find_run_dirs([request.runs_dir])
    stamps = {r: (r / "summary.json").stat().st_mtime_ns for r in first}
    # The worker is gone (here: its record says so): the next worker takes its trial over.
    trial = study.trials[1]
    study._storage.set_trial_user_attr(trial._trial_id, "worker", f"{os.uname().nodename}:999999")
    assert run_worker(request)
    table = summarize(request).trials
    assert list(table["trial"]) == [0, 1, 2] and set(table["status"]) == {"completed"}
    interrupted = load_run(request.runs_dir / table.loc[1, "run_id"])
    assert interrupted.status == "completed"
    done_first = [r for r in first if load_run(r).run_id == table.loc[0, "run_id"]][0]
    assert (done_first / "summary.json").stat().st_mtime_ns == stamps[done_first]  # not redone
    assert len(find_run_dirs([request.runs_dir])) == 3


def test_on_a_database_a_trial_whose_heartbeat_stopped_is_retried_and_counted_once(
    synth_corpus, cache, tmp_path, postgres_url, monkeypatch
):
    """A worker on another host died in trial 0 (its heartbeat stops; no pid check can see
    it): Optuna fails the trial once the grace period is over and enqueues its parameters
    again; the next worker runs that retry, which counts in trial 0's place."""
    from fambench import trial_liveness
    from fambench.tune import open_storage, studies_complete

    monkeypatch.setattr(trial_liveness, "HEARTBEAT_S", 1)
    monkeypatch.setattr(trial_liveness, "GRACE_S", 2)
    request = TuneRequest(
        preset="smoke", optimizer="adamw", trials=2, steps=6, seed=7, out_dir=tmp_path / "tune",
        cache_dir=cache, data_root=synth_corpus, threads=1, write_tuned=False,
        storage=postgres_url,
    )  # fmt: skip
    study = optuna.create_study(study_name=request.study_name(0), storage=open_storage(request))
    dists = distributions(resolve_search_space("adamw"))
    dead = study.ask(dists)
    dead.set_user_attr("worker", "another-host:1")
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(3)

    assert run_worker(request)
    trials = optuna.load_study(study_name=request.study_name(0), storage=postgres_url).trials
    states = [t.state.name for t in trials]
    assert states == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].params == dead.params  # the retry: the dead trial's point
    assert trials[2].params != dead.params
    assert trial_liveness.counted(trials) == 2 and studies_complete(request)
    table = summarize(request).trials
    assert table[table["status"] == "completed"]["run_id"].is_unique
