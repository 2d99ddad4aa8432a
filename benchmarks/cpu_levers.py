"""The CPU levers fambench's training step does not use, each timed where the study trains: two
1-thread runs side by side on the 2 cores.

Per variant, two processes train the preset's model at one thread each, at the same time, on
the same fixed batches (random lengths within the preset's frame budget, padded to its length
buckets), forward + backward + AdamW, one untimed pass first; printed: ms per batch (mean of
the two processes, and the faster/slower pass over --repeats). Variants:

- plain: the step as fambench trains it;
- pinned: each process bound to a core of its own (os.sched_setaffinity);
- channels-last: the convolutional front end's weights and input in channels-last format;
- interop-1: torch's inter-op pool cut to one thread.

Then the share of a dev evaluation spent in greedy decoding (what a batched decoder could
save), on the preset's own dev set when its corpus is in --cache-dir.

    .venv/bin/python benchmarks/cpu_levers.py [--preset commands-small] [--batches 40]
        [--repeats 2] [--cache-dir data]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("plain", "pinned", "channels-last", "interop-1")


def worker(preset_name: str, variant: str, batches: int, core: int) -> None:
    import torch

    if variant == "interop-1":
        torch.set_num_interop_threads(1)
    torch.set_num_threads(1)
    if variant == "pinned":
        os.sched_setaffinity(0, {core})
    from fambench.data.batching import padded_length
    from fambench.model import ConformerCTC
    from fambench.workloads import get_preset

    preset = get_preset(preset_name)
    torch.manual_seed(0)
    model = ConformerCTC(preset.model.replace(vocab_size=30))
    if variant == "channels-last":
        model.frontend.conv.to(memory_format=torch.channels_last)
        model.frontend.conv.register_forward_pre_hook(
            lambda module, inputs: tuple(
                x.contiguous(memory_format=torch.channels_last) for x in inputs
            )
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    rng = random.Random(0)
    bucket = preset.length_bucket_frames or 1
    shapes = []
    for _ in range(batches):
        frames = padded_length(rng.randint(200, 1000), bucket)
        shapes.append((max(1, preset.batch_frames // frames), frames))
    generator = torch.Generator().manual_seed(0)

    def one_pass() -> float:
        started = time.perf_counter()
        for batch, frames in shapes:
            feats = torch.randn(batch, frames, preset.model.n_mels, generator=generator)
            log_probs, _ = model(feats, torch.full((batch,), frames))
            optimizer.zero_grad(set_to_none=True)
            log_probs.sum().neg().backward()
            optimizer.step()
        return 1000 * (time.perf_counter() - started) / len(shapes)

    one_pass()  # kernels prepared for every shape
    print(json.dumps({"ms": one_pass()}))


def side_by_side(preset: str, variant: str, batches: int) -> float:
    """Mean ms per batch of two 1-thread processes training at the same time."""
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                variant,
                "--preset",
                preset,
                "--batches",
                str(batches),
                "--core",
                str(core),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for core in range(2)
    ]
    times = [json.loads(p.communicate()[0])["ms"] for p in processes]
    if any(p.returncode for p in processes):
        sys.exit(f"a {variant} worker failed")
    return sum(times) / len(times)


def decoding_share(preset_name: str, cache_dir: Path) -> str:
    import torch

    from fambench.training import RunRequest, plan_run
    from fambench.workloads import load_workload_data, recognition

    torch.set_num_threads(1)
    plan = plan_run(
        RunRequest(optimizer="adamw", preset=preset_name, cache_dir=cache_dir,
                   out_dir=Path("/tmp"), threads=1)
    )  # fmt: skip
    data = load_workload_data(plan.preset, cache_dir, plan.data_root)
    model = recognition.build_model(plan.preset, data)
    decoding = [0.0]
    decode = recognition.greedy_decode

    def timed_decode(*args, **kwargs):
        started = time.perf_counter()
        try:
            return decode(*args, **kwargs)
        finally:
            decoding[0] += time.perf_counter() - started

    recognition.greedy_decode = timed_decode
    try:
        started = time.perf_counter()
        recognition.evaluate(model, data.dev, data, "fp32", torch.device("cpu"))
        total = time.perf_counter() - started
    finally:
        recognition.greedy_decode = decode
    return (
        f"dev evaluation ({data.dev.utterances} utterances, 1 thread): {total:.2f} s, of which "
        f"greedy decoding {decoding[0]:.3f} s ({100 * decoding[0] / total:.1f} %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="commands-small")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=Path("data"))
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.preset, args.worker, args.batches, args.core)
        return
    print(
        f"{args.preset} model, two 1-thread processes side by side, {args.batches} batches, "
        f"fp32, forward + backward + AdamW; ms per batch (mean of the two processes)"
    )
    print("| variant | ms per batch (each repeat) | x plain |")
    print("|---|---|---:|")
    rows = {}
    for _ in range(args.repeats):  # interleaved, so that drift hits every variant alike
        for variant in VARIANTS:
            rows.setdefault(variant, []).append(side_by_side(args.preset, variant, args.batches))
    plain = min(rows["plain"])
    for variant, times in rows.items():
        shown = ", ".join(f"{t:.0f}" for t in times)
        print(f"| {variant} | {shown} | {plain / min(times):.3f} |")
    try:
        print(decoding_share(args.preset, args.cache_dir))
    except Exception as exc:  # no corpus here: say so, the timings above stand
        print(f"decoding share not measured: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
