"""Batches made one ahead on a background thread (--prefetch) train the same numbers, leave
checkpoints a run without them resumes, and report a failure as the run's own."""

from __future__ import annotations

import dataclasses
import threading

import pandas as pd
import pytest
import torch
from runs import comparable, interrupt_at

from fambench.errors import DataError
from fambench.rundir import RunFiles, load_run
from fambench.training import run_training
from fambench.training.runner import RunFailed
from fambench.workloads import WorkloadData


def test_prefetched_batches_train_and_checkpoint_what_batches_made_on_the_spot_do(smoke, tmp_path):
    whole = run_training(smoke("fam", steps=40, out_dir=tmp_path / "whole", prefetch=False))
    # Prefetching up to an interruption at step 22 (after the step-15 checkpoint, whose data
    # position and SpecAugment generator come from the prefetching session), then on without.
    split = smoke("fam", steps=40, out_dir=tmp_path / "split", prefetch=True)
    first = run_training(split, progress=interrupt_at(22))
    assert first.status == "interrupted"
    second = run_training(dataclasses.replace(split, prefetch=False))
    assert second.status == "completed" and second.resumed and second.run_id == whole.run_id
    a, b = load_run(whole.run_dir), load_run(second.run_dir)
    pd.testing.assert_frame_equal(comparable(a.metrics), comparable(b.metrics))
    assert a.summary.final_dev_wer == b.summary.final_dev_wer
    state_a = torch.load(RunFiles(whole.run_dir).checkpoint, weights_only=False)
    state_b = torch.load(RunFiles(second.run_dir).checkpoint, weights_only=False)
    assert state_a["stream"] == state_b["stream"]
    assert torch.equal(state_a["rng"]["specaug"], state_b["rng"]["specaug"])
    assert not [t for t in threading.enumerate() if t.name.startswith("batches")]


def test_a_batch_that_cannot_be_made_fails_the_run_at_its_step(smoke, monkeypatch):
    real = WorkloadData.train_batch
    calls = []

    def failing(self, indices, generator, share=None):
        calls.append(len(indices))
        if len(calls) == 6:
            raise DataError("features of utterance x are unreadable")
        return real(self, indices, generator, share)

    monkeypatch.setattr(WorkloadData, "train_batch", failing)
    with pytest.raises(RunFailed, match="failed at step 5: features of utterance x"):
        run_training(smoke("sgd", steps=20, prefetch=True))
    assert not [t for t in threading.enumerate() if t.name.startswith("batches")]
