"""Why bf16 needs length buckets on a CPU: forward + backward time per batch against batch shapes.

The preset's model (default: synth) trains on N batches of random lengths within the preset's
frame budget, each padded to its own longest utterance (a new shape nearly every batch), and
then on the same batches padded to multiples of --bucket frames (a few shapes); each set is
timed twice (the second pass meets shapes it has seen), in fp32 and in bf16 autocast.

    .venv/bin/python benchmarks/batch_shapes.py [--preset synth] [--batches 150]
        [--bucket 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from fambench.data.batching import padded_length
from fambench.model import ConformerCTC
from fambench.workloads import get_preset
from fambench.workloads.precision import autocast, backward_products


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="synth")
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--bucket", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    model = ConformerCTC(preset.model.replace(vocab_size=30))
    device = torch.device("cpu")
    budget = preset.batch_frames
    rng = random.Random(0)
    lengths = [rng.randint(200, 1000) for _ in range(args.batches)]
    exact = [(budget // n, n) for n in lengths]
    bucketed = [
        (budget // padded_length(n, args.bucket), padded_length(n, args.bucket)) for n in lengths
    ]

    def step(batch: int, frames: int, precision: str) -> None:
        feats = torch.randn(batch, frames, preset.model.n_mels)
        with autocast(precision, device):
            log_probs, _ = model(feats, torch.full((batch,), frames))
        with backward_products(precision, device):
            log_probs.float().sum().backward()

    def ms_per_batch(shapes: list[tuple[int, int]], precision: str) -> float:
        started = time.perf_counter()
        for batch, frames in shapes:
            step(batch, frames, precision)
        return 1000 * (time.perf_counter() - started) / len(shapes)

    print(
        f"{args.preset} model, {args.threads} thread(s), {args.batches} batches of 200-1000 "
        f"frames within {budget} frames; ms per batch (forward + backward)"
    )
    print("| precision | shapes | distinct shapes | first pass | second pass |")
    print("|---|---|---:|---:|---:|")
    for precision in ("fp32", "bf16"):
        step(10, 300, precision)
        for name, shapes in (("exact", exact), (f"{args.bucket}-frame buckets", bucketed)):
            first, second = ms_per_batch(shapes, precision), ms_per_batch(shapes, precision)
            print(f"| {precision} | {name} | {len(set(shapes))} | {first:.0f} | {second:.0f} |")


if __name__ == "__main__":
    main()
