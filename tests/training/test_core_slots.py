"""Core slots: no more concurrent runs than the cores allow, freed when a holder dies."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fambench.core_slots import busy_slots, reserved_cores
from fambench.machine import usable_cores

_TRY_ONE = (
    "from fambench.core_slots import reserved_cores\n"
    "try:\n"
    "    with reserved_cores(1, timeout_s={timeout}, poll_s=0.05):\n"
    "        print('got')\n"
    "except TimeoutError as exc:\n"
    "    print('timeout', exc)\n"
)


def _try_one(timeout: float) -> str:
    code = _TRY_ONE.format(timeout=timeout)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.subprocess
def test_all_cores_held_makes_another_run_wait_until_released():
    cores = usable_cores()
    with reserved_cores(cores + 3) as held:  # more threads than cores: all of them
        assert held == cores
        assert busy_slots() == cores
        assert _try_one(0.3).startswith(f"timeout 1 of {cores} cores did not come free")
    assert busy_slots() == 0
    assert _try_one(5) == "got"


@pytest.mark.subprocess
def test_slots_left_free_are_taken_by_others():
    cores = usable_cores()
    if cores < 2:
        pytest.skip("needs two cores")
    with reserved_cores(cores - 1):
        assert _try_one(5) == "got"


@pytest.mark.subprocess
def test_waiting_is_told_once():
    cores = usable_cores()
    told: list[str] = []
    code = (
        "import time\nfrom fambench.core_slots import reserved_cores\n"
        f"with reserved_cores({cores}):\n    time.sleep(0.6)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while busy_slots() < cores and time.monotonic() < deadline:
        time.sleep(0.02)
    with reserved_cores(1, on_wait=told.append, poll_s=0.05) as held:
        assert held == 1
    proc.wait(timeout=30)
    assert told == [f"waiting for 1 free core: other fambench runs hold {cores} of {cores}"]


@pytest.mark.subprocess
def test_a_killed_holder_frees_its_cores():
    cores = usable_cores()
    code = (
        "import sys, time\nfrom fambench.core_slots import reserved_cores\n"
        f"with reserved_cores({cores}):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    assert busy_slots() == cores
    proc.kill()
    proc.wait(timeout=30)
    with reserved_cores(cores, timeout_s=5, poll_s=0.05) as held:
        assert held == cores


@pytest.mark.subprocess
def test_a_grid_waits_for_cores_other_runs_hold(synth_corpus, smoke_cache, tmp_path):
    from fambench.bench import run_grid

    cores = usable_cores()
    code = (
        "import sys\nfrom fambench.core_slots import reserved_cores\n"
        f"with reserved_cores({cores}):\n    print('held', flush=True)\n    sys.stdin.readline()\n"
    )  # holds every core until told to let go
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    told: list[str] = []

    def waiting(text: str) -> None:
        told.append(text)
        holder.stdin.write("go\n")
        holder.stdin.flush()

    result = run_grid(
        "smoke", ["sgd"], [0], tmp_path / "out", smoke_cache, data_root=synth_corpus,
        threads=1, reference="sgd", on_wait=waiting,
    )  # fmt: skip
    holder.wait(timeout=30)
    assert told == [f"waiting for 1 free core: other fambench runs hold {cores} of {cores}"]
    assert [run.status for run in result.runs] == ["completed"]
    assert busy_slots() == 0


@pytest.mark.subprocess
def test_two_grid_processes_share_one_grid(synth_corpus, smoke_cache, tmp_path):
    """A second bench process on the same grid passes over the cell the first one holds."""
    from fambench.bench import _claimed, run_grid
    from fambench.training import RunRequest, plan_run

    out = tmp_path / "out"
    request = RunRequest(optimizer="sgd", preset="smoke", seed=0, out_dir=out,
                         cache_dir=smoke_cache, data_root=synth_corpus, threads=1)  # fmt: skip
    run_id = plan_run(request).run_id
    code = (
        "import sys\nfrom pathlib import Path\nfrom fambench.bench import _claimed\n"
        f"with _claimed(Path({str(out)!r}), {run_id!r}) as mine:\n"
        "    print(mine, flush=True)\n    sys.stdin.readline()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "True"
    result = run_grid(
        "smoke", ["sgd"], [0, 1], out, smoke_cache, data_root=synth_corpus, threads=1,
        reference="sgd",
    )  # fmt: skip
    assert [(r.seed, r.status, r.skipped) for r in result.runs] == [
        (0, "running", True),
        (1, "completed", False),
    ]
    holder.communicate("go\n", timeout=30)
    with _claimed(out, run_id) as mine:  # released when its holder let go
        assert mine
    again = run_grid(
        "smoke", ["sgd"], [0, 1], out, smoke_cache, data_root=synth_corpus, threads=1,
        reference="sgd",
    )  # fmt: skip
    assert [(r.seed, r.status, r.skipped) for r in again.runs] == [
        (0, "completed", False),
        (1, "completed", True),
    ]
