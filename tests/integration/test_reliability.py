"""Issue 10's findings, one test each with its exact command: bad input gives one line and
writes nothing, errors while training are recorded, --force never loses results, resumes with
settings that change the numbers are refused, the lock has one owner, files are fsynced."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fambench.cli as cli
import fambench.fileio as fileio
from fambench.errors import FileWriteError, ResultsError
from fambench.rundir import RunFiles, RunLock, load_run
from fambench.training import plan_run, run_training
from fambench.training.runner import RunFailed


@pytest.fixture
def cache(smoke_cache) -> Path:
    """The feature cache the `smoke` requests use (conftest)."""
    return smoke_cache


def invoke(*args) -> tuple[int, str]:
    cli._register_commands()
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    return result.exit_code, result.output


def run_args(synth_corpus, cache, out, *extra) -> list:
    return ["run", "--preset", "smoke", "--data", synth_corpus, "--cache-dir", cache, "--out", out,
            "--threads", "1", *extra]  # fmt: skip


# ------------------------------------------------------------------------ bad input, one line


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
        (["--seed", str(2**64)], f"--seed must be in [0, 4294967295], got {2**64}"),
        (["--optimizer", "torch.optim:LBFGS"], "a probe step failed"),
        (["--optimizer", "torch.optim:SparseAdam"], "a probe step failed"),
    ],
)
def test_bad_runs_are_one_line_and_write_nothing(synth_corpus, cache, tmp_path, extra, message):
    out = tmp_path / "results"
    args = run_args(synth_corpus, cache, out, *extra)
    if "--optimizer" not in extra:
        args += ["--optimizer", "sgd"]
    code, output = invoke(*args)
    assert code == 2, output
    flat = output.replace("\n", "")
    assert flat.startswith("error: ") and message in flat and "Traceback" not in output
    assert not out.exists()


def _plugin(tmp_path: Path, monkeypatch, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name}:Plugin"


@pytest.mark.parametrize(
    "name,body,message",
    [
        ("raises_on_import", "raise RuntimeError('no GPU driver')\n",
         "importing 'raises_on_import' raised RuntimeError: no GPU driver"),
        ("raises_in_init",
         "import torch\nclass Plugin(torch.optim.SGD):\n"
         "    def __init__(self, params, lr=0.1):\n        raise KeyError('broken')\n",
         "failed to construct: KeyError: 'broken'"),
    ],
)  # fmt: skip
def test_broken_plugins_are_one_line(
    synth_corpus, cache, tmp_path, monkeypatch, name, body, message
):
    optimizer = _plugin(tmp_path, monkeypatch, name, body)
    out = tmp_path / "results"
    code, output = invoke(*run_args(synth_corpus, cache, out, "--optimizer", optimizer))
    assert code == 2 and message in output.replace("\n", "") and "Traceback" not in output
    assert not out.exists()


# ----------------------------------------------------------------- errors while training


def test_an_error_while_training_is_recorded_as_failed_and_resumes(smoke, monkeypatch):
    import fambench.training.step as step

    real = step.ctc_loss_sum
    calls = [0]

    def flaky(*args):
        calls[0] += 1
        if calls[0] == 20:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(*args)

    monkeypatch.setattr(step, "ctc_loss_sum", flaky)
    with pytest.raises(RunFailed, match=r"failed at step 19: RuntimeError: CUDA error") as err:
        run_training(smoke())
    assert "\n" not in str(err.value)
    run_dir = plan_run(smoke()).run_dir
    run = load_run(run_dir)
    assert run.status == "failed" and run.summary.message.startswith("failed at step 19")
    assert run.metrics["step"].max() == 19 and RunFiles(run_dir).checkpoint.is_file()
    monkeypatch.setattr(step, "ctc_loss_sum", real)
    again = run_training(smoke())
    assert again.status == "completed" and again.resumed


def _full_disk_under(monkeypatch, root: Path, after: int) -> list[int]:
    """ENOSPC for every file written under ``root`` after ``after`` successful writes there."""
    real = fileio._fsync
    writes = [0]

    def fsync(path: Path) -> None:
        if Path(path).resolve().is_relative_to(root.resolve()) and Path(path).is_file():
            writes[0] += 1
            if writes[0] > after:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path)

    monkeypatch.setattr(fileio, "_fsync", fsync)
    return writes


def test_a_full_disk_under_out_is_one_line_keeps_the_checkpoint_and_resumes(
    smoke, synth_corpus, cache, tmp_path, monkeypatch
):
    out = tmp_path / "results"
    reference = run_training(smoke(out_dir=tmp_path / "reference"))
    # Writes of a run: config, tokenizer, summary; then at step 15 checkpoint, metrics x2,
    # summary. The disk fills after those: the step-30 checkpoint cannot be written.
    _full_disk_under(monkeypatch, out, after=7)
    code, output = invoke(*run_args(synth_corpus, cache, out, "--optimizer", "sgd"))
    assert code == 2 and "No space left on device" in output and "Traceback" not in output
    assert output.count("error:") == 1
    run_dir = plan_run(smoke()).run_dir
    checkpoint = RunFiles(run_dir).checkpoint
    assert checkpoint.is_file()  # the step-15 checkpoint, intact
    import torch

    assert torch.load(checkpoint, weights_only=False)["progress"]["step"] == 15
    assert not list(out.rglob("*.tmp"))
    monkeypatch.undo()  # space is back
    resumed = run_training(smoke())
    assert resumed.status == "completed" and resumed.resumed
    assert resumed.summary["final_dev_wer"] == reference.summary["final_dev_wer"]


def test_a_full_disk_under_the_cache_is_one_line_and_leaves_nothing(
    synth_corpus, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    _full_disk_under(monkeypatch, cache, after=0)
    out = tmp_path / "results"
    code, output = invoke(*run_args(synth_corpus, cache, out, "--optimizer", "sgd"))
    assert code == 2 and "No space left on device" in output and str(cache) in output
    assert not list(cache.rglob("*.tmp")) and not list(cache.rglob("feats-*"))
    assert not out.exists()


# ------------------------------------------------------------------------------- resumes


def test_resuming_with_other_threads_is_refused(smoke, synth_corpus, cache, tmp_path):
    def stop(event):
        if event.phase == "train" and event.step == 20:
            raise KeyboardInterrupt

    first = run_training(smoke(threads=1), progress=stop)
    assert first.status == "interrupted"
    before = {p.name: p.read_bytes() for p in first.run_dir.iterdir() if p.is_file()}
    out = tmp_path / "results"
    args = run_args(synth_corpus, cache, out, "--optimizer", "sgd")
    args[args.index("--threads") + 1] = "2"
    code, output = invoke(*args)
    assert code == 2
    assert "was started with threads 1; resuming with 2 would change its numbers" in output.replace(
        "\n", " "
    )
    after = {p.name: p.read_bytes() for p in first.run_dir.iterdir() if p.is_file()}
    assert after == before
    assert run_training(smoke(threads=1)).status == "completed"


def test_force_keeps_the_old_results_until_the_new_run_has_a_checkpoint(smoke, monkeypatch):
    import fambench.training.step as step

    first = run_training(smoke())
    files = RunFiles(first.run_dir)
    old_summary = files.summary.read_bytes()
    real = step.ctc_loss_sum
    calls = [0]

    def crash(*args):
        calls[0] += 1
        if calls[0] == 5:
            raise MemoryError("out of memory")
        return real(*args)

    monkeypatch.setattr(step, "ctc_loss_sum", crash)
    with pytest.raises(RunFailed, match="MemoryError"):
        run_training(smoke(force=True))
    assert files.previous.is_dir() and not files.checkpoint.exists()
    monkeypatch.setattr(step, "ctc_loss_sum", real)
    again = run_training(smoke())  # the forced run died before its first checkpoint
    assert again.skipped and again.status == "completed"
    assert files.summary.read_bytes() == old_summary and not files.previous.exists()
    forced = run_training(smoke(force=True))  # this time it gets through
    assert forced.status == "completed" and not forced.skipped
    assert not files.previous.exists() and files.summary.read_bytes() != old_summary


# ------------------------------------------------------------------------ lock and files


def _contend(path: str, marker: str, barrier, results) -> None:
    barrier.wait()
    try:
        lock = RunLock(Path(path))
        lock.acquire()
    except ResultsError:
        results.put("refused")
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        results.put("two owners")
        lock.release()
        return
    time.sleep(0.02)
    os.close(fd)
    os.unlink(marker)
    lock.release()
    results.put("owner")


def test_a_stale_lock_taken_by_many_processes_at_once_has_one_owner_at_a_time(tmp_path):
    context = multiprocessing.get_context("fork")
    contenders, trials = 4, 50
    outcomes: list[str] = []
    for trial in range(trials):
        path = tmp_path / f"run{trial}.lock"
        path.write_text(f"{os.uname().nodename} 999999\n")  # left by a process long gone
        barrier, results = context.Barrier(contenders), context.Queue()
        procs = [
            context.Process(
                target=_contend, args=(str(path), str(tmp_path / f"m{trial}"), barrier, results)
            )
            for _ in range(contenders)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(30)
        outcomes += [results.get(timeout=5) for _ in procs]
    assert "two owners" not in outcomes
    assert outcomes.count("owner") >= trials  # every trial had an owner


def test_atomic_writes_fsync_the_file_and_its_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = fileio.write_json(tmp_path / "summary.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert len(synced) == 2
    assert Path(synced[0]).name.startswith(".summary.json.") and synced[0].endswith(".tmp")
    assert synced[1] == str(tmp_path)


def test_temporaries_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    dead = tmp_path / ".checkpoint.pt.999999-abcd1234.tmp"
    live = tmp_path / f".checkpoint.pt.{os.getpid()}-abcd1234.tmp"
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    assert fileio.sweep_temporaries(tmp_path) == [dead]
    assert live.exists() and not dead.exists()


def test_file_write_errors_name_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FileWriteError, match=str(blocker / "out.json")):
        fileio.write_json(blocker / "out.json", {})


@pytest.mark.parametrize("command", ["compare", "report"])
def test_compare_and_report_to_an_unwritable_place_are_one_line(tmp_path, command):
    from rundirs import write_run

    write_run(tmp_path / "runs", optimizer="sgd")
    blocker = tmp_path / "read-only"
    blocker.write_text("a file where a directory should be")
    target = blocker / ("table.csv" if command == "compare" else "report")
    code, output = invoke(command, tmp_path / "runs", "--out", target)
    assert code == 2, output
    assert output.count("error:") == 1 and "Traceback" not in output
    assert f"cannot write {blocker}" in output.replace("\n", "")
    assert blocker.read_text() == "a file where a directory should be"
