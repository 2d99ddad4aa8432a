"""Training throughput, fp32 against bf16 autocast, with and without length buckets.

Each configuration (optimizer x precision x length bucket) is a short run of the preset
(default: synth, 300 steps) trained by the real trainer, one after the other in this process,
so that the ratios between rows are measured side by side. Per row: steps/s, audio seconds
trained per second, the padded share of the frames trained, the model's arithmetic rate and
its fraction of this machine's GEMM rate (a 2048 x 2048 matrix product, timed here at the
same thread count in fp32 and in bf16), the share of wall time spent evaluating, and where
the training time goes (forward + CTC loss, backward + clipping, optimizer + scheduler,
batch assembly).

The model's FLOPs per padded frame are counted once by torch's FlopCounterMode on a forward +
backward pass at three batch shapes of the preset's frame budget (their mean); a run's FLOPs
are that times the padded frames it trained.

    .venv/bin/python benchmarks/training_throughput.py [--preset synth] [--steps 300]
        [--optimizers adamw] [--precisions fp32,bf16] [--buckets 0,64] [--threads N]
        [--cache-dir data] [--data ROOT] [--prefetch default|on|off|both]

Runs go to a temporary directory (deleted afterwards); the corpus and feature caches are
reused from --cache-dir (the first call generates them).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from fambench.machine import usable_cores
from fambench.model import ConformerCTC
from fambench.training import RunRequest, run_training
from fambench.workloads import get_preset

GEMM_SIZE = 2048


def gemm_rate(precision: str, repeats: int = 20) -> float:
    """FLOP/s of a GEMM_SIZE² matrix product in ``precision`` on this process's threads."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(GEMM_SIZE, GEMM_SIZE, dtype=dtype)
    b = torch.randn(GEMM_SIZE, GEMM_SIZE, dtype=dtype)
    for _ in range(3):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * GEMM_SIZE**3 * repeats / (time.perf_counter() - started)


def flops_per_padded_frame(preset_name: str, vocab_size: int) -> float:
    """Forward + backward FLOPs per padded input frame, the mean over three batch shapes."""
    preset = get_preset(preset_name)
    model = ConformerCTC(preset.model.replace(vocab_size=vocab_size))
    per_frame = []
    for frames in (256, 512, 1024):
        batch = max(1, preset.batch_frames // frames)
        feats = torch.randn(batch, frames, preset.model.n_mels)
        lengths = torch.full((batch,), frames)
        counter = FlopCounterMode(display=False)
        with counter:
            log_probs, _ = model(feats, lengths)
            log_probs.sum().backward()
        per_frame.append(counter.get_total_flops() / (batch * frames))
    return sum(per_frame) / len(per_frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="synth")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--optimizers", default="adamw")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument(
        "--buckets", default="0,64", help="length buckets in frames to compare (0: none)"
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("data"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", type=Path, default=None, help="an existing corpus root")
    parser.add_argument(
        "--prefetch", default="default", choices=("default", "on", "off", "both"),
        help="batches made one ahead on a background thread (both: each configuration twice)",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    threads = args.threads or min(usable_cores(), 16)
    torch.set_num_threads(threads)
    precisions = args.precisions.split(",")
    gemm = {p: gemm_rate(p) for p in precisions}

    rows = []
    with tempfile.TemporaryDirectory(prefix="fambench-throughput-") as out:
        modes = {"default": [None], "on": [True], "off": [False], "both": [False, True]}
        runs = [
            (name, precision, int(bucket), prefetch)
            for name in args.optimizers.split(",")
            for precision in precisions
            for bucket in args.buckets.split(",")
            for prefetch in modes[args.prefetch]
        ]
        flops_per_frame = None
        for name, precision, bucket, prefetch in runs:
            outcome = run_training(
                RunRequest(
                    optimizer=name,
                    preset=args.preset,
                    steps=args.steps,
                    out_dir=Path(out),
                    cache_dir=args.cache_dir,
                    data_root=args.data,
                    threads=threads,
                    force=True,
                    command="benchmarks/training_throughput.py",
                    prefetch=prefetch,
                    precision=precision,
                    length_bucket_frames=bucket,
                )
            )
            config = json.loads((outcome.run_dir / "config.json").read_text())
            if flops_per_frame is None:
                vocab = int(config["model"]["vocab_size"])
                flops_per_frame = flops_per_padded_frame(args.preset, vocab)
            t, s = outcome.timings, outcome.summary
            train_s = t["train_s"]
            hop_s = config["data"]["features"]["hop_ms"] / 1000
            padded_frames = s["audio_s_per_s"] * train_s / hop_s / (1 - s["padded_share"])
            rate = flops_per_frame * padded_frames / train_s
            rows.append(
                {
                    "optimizer": name,
                    "precision": precision,
                    "bucket": str(bucket),
                    "prefetch": {None: "default", True: "on", False: "off"}[prefetch],
                    "steps/s": f"{s['steps_per_s']:.2f}",
                    "audio s/s": f"{s['audio_s_per_s']:.1f}",
                    "padded %": f"{100 * s['padded_share']:.1f}",
                    "GFLOP/s": f"{rate / 1e9:.0f}",
                    "of fp32 GEMM": f"{rate / gemm.get('fp32', gemm[precision]):.2f}",
                    "of own GEMM": f"{rate / gemm[precision]:.2f}",
                    "eval % wall": f"{100 * s['eval_s'] / (s['eval_s'] + train_s):.1f}",
                    "forward %": f"{100 * t['forward_s'] / train_s:.1f}",
                    "backward %": f"{100 * t['backward_s'] / train_s:.1f}",
                    "optim %": f"{100 * t['optimizer_s'] / train_s:.1f}",
                    "batching %": f"{100 * t['data_s'] / train_s:.2f}",
                }
            )
    print(
        f"training throughput: preset {args.preset}, {args.steps} steps per row, "
        f"{threads} thread(s); GEMM {GEMM_SIZE}²: "
        + ", ".join(f"{p} {gemm[p] / 1e9:.0f} GFLOP/s" for p in precisions)
    )
    print(f"model FLOPs per padded frame (forward + backward): {flops_per_frame / 1e6:.2f} M")
    _print_table(rows)
    print(
        "GFLOP/s: the model's forward + backward FLOPs over training seconds (optimizer and "
        "batching included); of fp32 / own GEMM: that rate over the GEMM rate in fp32 / in the "
        "row's precision"
    )


def _print_table(rows: list[dict[str, str]]) -> None:
    headers = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
    print("| " + " | ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(r[h].rjust(w) for h, w in zip(headers, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
