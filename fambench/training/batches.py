"""The training step's batches: made when the step asks, or one ahead on a background thread.

Both sources leave the trainee's data stream and SpecAugment generator exactly where making the
batches one by one on the spot leaves them, so checkpoints, resumes and every trained number
are the same whichever source a run uses.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import Protocol

import torch

from fambench.data.batching import Batch
from fambench.training.distributed import Ranks
from fambench.training.state import BatchStream, Trainee
from fambench.workloads import WorkloadData


@dataclass
class PreparedBatch:
    """One step's batch on the host: this rank's share, and what the step counts."""

    batch: Batch
    weight: float  # this rank's share of the batch's mean loss
    audio_frames: int  # of the whole batch (every rank)
    padded_frames: int  # the whole batch's frames with its padding (utterances x padded length)
    tokens: int
    stream_after: dict[str, int]  # the data stream's position after this batch
    generator_after: torch.Tensor  # the SpecAugment generator's state after this batch


def prepare_batch(
    data: WorkloadData, stream: BatchStream, generator: torch.Generator, ranks: Ranks, pin: bool
) -> PreparedBatch:
    """The next batch of ``stream``, with its SpecAugment drawn from ``generator``; ``pin``:
    in page-locked memory, so that copying it to a GPU does not wait for the GPU."""
    indices = stream.next()
    share, weight = ranks.share(indices)
    batch = data.train_batch(indices, generator, share)
    if pin:
        batch = batch.pin_memory()
    audio_frames, tokens = data.frames_and_tokens(indices)
    padded_frames = len(indices) * data.padded_length(indices)
    return PreparedBatch(
        batch, weight, audio_frames, padded_frames, tokens, stream.state(), generator.get_state()
    )


class BatchSource(Protocol):
    def next(self) -> PreparedBatch: ...

    def close(self) -> None: ...


class OnTheSpot:
    """Makes each batch when the step asks for it, with the trainee's own stream and generator
    (the step's copy to a GPU pins it: `host_to_device`)."""

    def __init__(self, data: WorkloadData, trainee: Trainee) -> None:
        self._data, self._trainee = data, trainee

    def next(self) -> PreparedBatch:
        trainee = self._trainee
        return prepare_batch(self._data, trainee.stream, trainee.specaug_gen, trainee.ranks, False)

    def close(self) -> None:
        pass


class Prefetched:
    """Makes batch k+1 on a background thread while step k trains, pinned for a GPU there too.

    The thread works on copies of the trainee's stream and generator, taken when this source
    is made (after a resume has loaded them); taking a batch moves the trainee's own to where
    that batch left the copies. A failure while making a batch is raised by the ``next()``
    that would have returned it; one for a batch no step takes is dropped by ``close()``.
    """

    def __init__(self, data: WorkloadData, trainee: Trainee) -> None:
        self._trainee = trainee
        stream = BatchStream(trainee.stream.batcher)
        stream.load(trainee.stream.state())
        generator = torch.Generator()
        generator.set_state(trainee.specaug_gen.get_state())
        pin = trainee.device.type == "cuda"
        self._make = lambda: prepare_batch(data, stream, generator, trainee.ranks, pin)
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batches")
        self._pending = self._pool.submit(self._make)

    def next(self) -> PreparedBatch:
        prepared = self._pending.result()
        self._pending = self._pool.submit(self._make)
        self._trainee.stream.load(prepared.stream_after)
        self._trainee.specaug_gen.set_state(prepared.generator_after)
        return prepared

    def close(self) -> None:
        self._pending.cancel()
        self._pool.shutdown(wait=True)


def batch_source(data: WorkloadData, trainee: Trainee, prefetch: bool) -> BatchSource:
    """The source a run's steps take their batches from."""
    return Prefetched(data, trainee) if prefetch else OnTheSpot(data, trainee)
