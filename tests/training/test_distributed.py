"""Data-parallel training (DDP on Gloo, CPU): 1 and 2 processes train the same numbers, the
ranks agree bitwise, and a killed 2-process run resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from runs import wait_for_checkpoint

from fambench.data.batching import collate
from fambench.data.features import SpecAugment
from fambench.rundir import load_run
from fambench.training import run_training
from fambench.training.distributed import Ranks, state_digest
from fambench.training.interrupts import AgreedStop, StopRequests
from fambench.training.launch import rank_environment, without_option

PRESET = "smoke-nodropout"


# --- the parts ---------------------------------------------------------------------------


def test_shares_are_contiguous_cover_the_batch_and_differ_by_one_at_most():
    batch = list(range(100, 111))  # 11 utterances
    for world in (1, 2, 3, 4):
        shares = [Ranks(r, world).share(batch) for r in range(world)]
        assert [i for share, _ in shares for i in share] == batch
        sizes = [len(share) for share, _ in shares]
        assert max(sizes) - min(sizes) <= 1 and all(w == 1.0 for _, w in shares)


def test_a_batch_smaller_than_the_ranks_gives_the_rest_a_zero_weight_stand_in():
    shares = [Ranks(r, 4).share([7, 8]) for r in range(4)]
    assert [w for _, w in shares].count(1.0) == 2
    assert sorted(i for share, w in shares if w == 1.0 for i in share) == [7, 8]
    assert all(share == [7] for share, w in shares if w == 0.0)


def test_ranks_come_from_torchrun_s_environment():
    assert Ranks.from_environment({}) == Ranks(0, 1, 0)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert Ranks.from_environment(env) == Ranks(3, 4, 1)
    with pytest.raises(ValueError, match="RANK=4 WORLD_SIZE=4"):
        Ranks.from_environment({"RANK": "4", "WORLD_SIZE": "4", "LOCAL_RANK": "0"})
    assert Ranks(0, 2).seed_of(5) == 5 and Ranks(1, 2).seed_of(5) == 5 + 2**32
    env = rank_environment(1, 2, 29500, threads=1)
    assert (env["RANK"], env["WORLD_SIZE"], env["MASTER_PORT"], env["OMP_NUM_THREADS"]) == (
        "1",
        "2",
        "29500",
        "1",
    )


def test_without_option_drops_the_option_and_its_value():
    argv = ["run", "-o", "fam", "--nproc", "2", "--steps", "5"]
    assert without_option(argv, "--nproc") == ["run", "-o", "fam", "--steps", "5"]
    assert without_option(["run", "--nproc=2", "-o", "sgd"], "--nproc") == ["run", "-o", "sgd"]


def test_a_share_is_its_rows_of_the_whole_batch():
    """SpecAugment is drawn for the whole batch on every rank and the share is padded to the
    batch's longest: the share's rows equal the one-process batch's rows."""
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(n, 8, generator=gen) for n in (40, 55, 61, 38)]
    aug = SpecAugment(freq_masks=2, freq_width=3, time_masks=2, time_width_ratio=0.2)

    def masked(rows: list[int]) -> torch.Tensor:
        g = torch.Generator().manual_seed(1)
        out = {}
        for i, f in enumerate(feats):
            spans = aug.draw(*f.shape, g)
            if i in rows:
                out[i] = aug.apply(f, spans)
        batch = collate([out[i] for i in rows], [[1]] * len(rows), [str(i) for i in rows], 61)
        return batch.feats

    whole = masked([0, 1, 2, 3])
    assert torch.equal(masked([2, 3]), whole[2:])
    assert torch.equal(masked([0, 1]), whole[:2])
    assert not torch.equal(whole[0, :40], feats[0])  # the masks did something
    # the same draws as applying SpecAugment utterance by utterance (the one-process path)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(aug(feats[0], g), whole[0, :40])


def test_state_digest_sees_one_changed_momentum_element():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    before = state_digest(model, optimizer)
    assert before == state_digest(model, optimizer)
    buf = optimizer.state[model.weight]["momentum_buffer"]
    buf[0, 0] = torch.nextafter(buf[0, 0], torch.tensor(2.0))  # one ulp up
    assert state_digest(model, optimizer) != before


def test_on_several_ranks_a_signal_is_held_until_the_ranks_agree_after_a_step():
    votes: list[bool] = []
    others_stop = False

    def agree(held_here: bool) -> bool:  # any_rank, with the other ranks' votes made up
        votes.append(held_here)
        return held_here or others_stop

    stops = StopRequests()
    with stops.installed(), stops.agreeing(agree):
        with stops.step():
            pass
        os.kill(os.getpid(), signal.SIGTERM)  # between steps (an evaluation, say): held
        time.sleep(0.01)
        with pytest.raises(AgreedStop), stops.step():
            pass
        assert votes == [False, True]
        others_stop = True  # another rank holds a signal: this one stops with it
        with pytest.raises(AgreedStop), stops.step():
            pass
        others_stop = False
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        with pytest.raises(KeyboardInterrupt) as second:  # a second signal: at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert not isinstance(second.value, AgreedStop)
    reached = False
    with stops.installed():  # one process: no vote, the signal waits for the step's end
        with pytest.raises(KeyboardInterrupt), stops.step():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            reached = True
    assert reached and votes == [False, True, False]


# --- whole runs ----------------------------------------------------------------------------


def _cli(tmp_out: Path, corpus: Path, cache: Path, optimizer: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fambench",
        "run",
        "--preset",
        PRESET,
        "-o",
        optimizer,
        "--data",
        str(corpus),
        "--cache-dir",
        str(cache),
        "--out",
        str(tmp_out),
        "--threads",
        "1",
        *extra,
    ]


def _train_rows(run_dir: Path) -> pd.DataFrame:
    metrics = load_run(run_dir).metrics
    return metrics[metrics["train_loss"].notna()].reset_index(drop=True)


# fam-fixed is FAMOptimizer's fixed-momentum path, which fam's run covers (its analysis aside).
# Optimizers whose step amplifies the ranks' different float reduction order: SOAP's
# eigenbases, Muon's bf16 Newton-Schulz iteration and Schedule-Free's averaging weights turn a
# last-bit gradient difference into a different path (measured per step, 1 against 2
# processes: SOAP's gradient norm 1e-3 apart at step 3, 3-8% from step 5 on, 18% on another
# machine; Muon's up to 1.1%). For them only the first two steps are compared tightly (the
# split of the data, batch norm, the reduced gradient and one update) and then the trend.
_AMPLIFIES = {"soap", "muon", "sfadamw"}
# Steps that the first update has not yet moved apart.
_TIGHT_STEPS = 2
# Steps whose size does not follow the gradient's (Adam's normalised step, Lion's sign): a
# coordinate whose gradient is zero but for rounding still moves by about the learning rate.
_SCALE_FREE_STEPS = {"adamw", "nadamw", "lion"}


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "optimizer",
    ["adamw", "sgd", "fam", "simple-fam", "nadamw", "sfadamw", "soap", "muon", "lion"],
)
def test_two_processes_train_the_numbers_of_one(
    smoke, synth_corpus, smoke_cache, tmp_path, optimizer
):
    one = run_training(smoke(optimizer, preset=PRESET, out_dir=tmp_path / "one"))
    assert one.status == "completed"
    done = subprocess.run(
        [*_cli(tmp_path / "two", synth_corpus, smoke_cache, optimizer), "--nproc", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two_dir = tmp_path / "two" / one.run_id  # the number of processes is not in the identity
    summary = json.loads((two_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2
    assert len(summary["rank_digests"]) == 2
    assert summary["rank_digests"][0] == summary["rank_digests"][1]  # FAM's momenta included
    config = load_run(two_dir).config
    assert config.provenance["world_size"] == 2

    a, b = _train_rows(one.run_dir), _train_rows(two_dir)
    assert a["step"].tolist() == b["step"].tolist() == list(range(1, 31))
    tight = _TIGHT_STEPS if optimizer in _AMPLIFIES else len(a)

    def close(column: str, rtol: float, rows: slice) -> None:
        torch.testing.assert_close(
            torch.tensor(b[column].values[rows]),
            torch.tensor(a[column].values[rows]),
            rtol=rtol,
            atol=0,
        )

    # the same curve up to float reduction order (a different batch norm would be ~1e-2 off,
    # gradients summed instead of averaged 2x on the gradient norm)
    close("train_loss", 5e-4, slice(0, tight))
    close("grad_norm", 5e-3, slice(0, tight))
    if optimizer in _AMPLIFIES:  # the same trend: the last ten steps' mean loss
        last = slice(len(a) - 10, len(a))
        mean_a, mean_b = a["train_loss"].values[last].mean(), b["train_loss"].values[last].mean()
        assert abs(mean_b / mean_a - 1) < 2e-2, (mean_a, mean_b)
    assert a["train_loss"].iloc[-1] < a["train_loss"].iloc[0]  # it did train

    dev_a, dev_b = (
        m[m["dev_loss"].notna()] for m in (load_run(one.run_dir).metrics, load_run(two_dir).metrics)
    )
    torch.testing.assert_close(
        torch.tensor(dev_b["dev_loss"].values),
        torch.tensor(dev_a["dev_loss"].values),
        rtol=3e-2 if optimizer in _AMPLIFIES else 1e-3,
        atol=0,
    )

    ckpt_one = torch.load(one.run_dir / "checkpoint.pt", weights_only=False)
    ckpt_two = torch.load(two_dir / "checkpoint.pt", weights_only=False)
    assert ckpt_two["world_size"] == 2 and len(ckpt_two["rng"]["ranks"]) == 2
    state_one, state_two = ckpt_one["optimizer"]["state"], ckpt_two["optimizer"]["state"]
    assert state_one.keys() == state_two.keys()
    if optimizer in _SCALE_FREE_STEPS or optimizer in _AMPLIFIES:
        # Not comparable state by state: a bias right before batch norm (or a key bias before
        # softmax) has a gradient that is zero but for rounding, and a scale-free step turns
        # that rounding into lr-sized steps, so such coordinates wander apart while the loss
        # stays the same; the amplifying optimizers move their states apart the same way.
        return
    compared = 0
    for key, values in state_one.items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() > 1:
                gap = (state_two[key][name] - value).norm()
                # Rounding differences, grown over 30 steps: a few percent at most on a small
                # momentum (the CPU's kernels reduce in another order for another batch size),
                # where a wrong reduction, e.g. gradients summed instead of averaged, is ~100%;
                # the absolute part is for biases before batch norm, whose gradient is zero but
                # for rounding.
                assert gap <= 3e-2 * value.norm() + 1e-5, (key, name, float(gap))
                compared += 1
    assert compared >= len(state_one)  # every parameter's momentum (and more) was compared


def _start_two(command: list[str], output: Path) -> subprocess.Popen:
    """The launcher of a 2-process run, in a session of its own (killpg reaches the ranks);
    its stdout and stderr go to `output`.out / .err (a pipe nobody reads could fill up)."""
    with open(f"{output}.out", "w") as out, open(f"{output}.err", "w") as err:
        return subprocess.Popen(
            [*command, "--nproc", "2"], stdout=out, stderr=err, start_new_session=True
        )


def _resume_to_the_end(command: list[str], run_dir: Path, steps: int) -> None:
    resumed = subprocess.run(
        [*command, "--nproc", "2"], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from a checkpoint" in resumed.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == steps
    assert summary["rank_digests"][0] == summary["rank_digests"][1]
    rows = _train_rows(run_dir)
    assert rows["step"].tolist() == list(range(1, steps + 1))  # no step lost or logged twice


@pytest.mark.subprocess
def test_a_killed_two_process_run_resumes_and_finishes(synth_corpus, smoke_cache, tmp_path):
    command = _cli(tmp_path / "runs", synth_corpus, smoke_cache, "fam", "--steps", "60")
    launcher = _start_two(command, tmp_path / "launcher")
    try:
        run_dir = wait_for_checkpoint(tmp_path / "runs", 15, lambda: launcher.poll() is None)
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and both ranks, at once
        launcher.wait()
    killed_at = json.loads((run_dir / "summary.json").read_text())["steps"]
    assert 15 <= killed_at < 60

    refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert "resumes only with --nproc 2" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1  # one line, no traceback
    _resume_to_the_end(command, run_dir, 60)


@pytest.mark.subprocess
def test_a_stop_signal_stops_every_rank_at_one_step_which_is_saved(
    synth_corpus, smoke_cache, tmp_path
):
    """SIGTERM (what Slurm sends) to a 2-process run: the ranks agree on a step, save it
    together and exit 130; the same command resumes from exactly that step."""
    command = _cli(tmp_path / "runs", synth_corpus, smoke_cache, "fam", "--steps", "45")
    launcher = _start_two(command, tmp_path / "launcher")
    try:
        run_dir = wait_for_checkpoint(tmp_path / "runs", 15, lambda: launcher.poll() is None)
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=300)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    out, err = (Path(f"{tmp_path / 'launcher'}.{end}").read_text() for end in ("out", "err"))
    assert launcher.returncode == 130, err[-3000:]
    assert "rank" not in err  # no rank failed or was stopped by the launcher
    summary = json.loads((run_dir / "summary.json").read_text())
    stopped = summary["steps"]
    assert summary["status"] == "interrupted" and 15 < stopped < 45
    # the step it stopped at is the checkpoint's, not the last evaluation's (step 15 or 30)
    assert f"interrupted at step {stopped}; run the same command to resume" in out
    assert "from the last checkpoint" not in out
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["progress"]["step"] == stopped
    assert summary["rank_digests"][0] == summary["rank_digests"][1]
    assert _train_rows(run_dir)["step"].tolist() == list(range(1, stopped + 1))
    _resume_to_the_end(command, run_dir, 45)
