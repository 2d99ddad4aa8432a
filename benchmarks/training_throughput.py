"""Training throughput: audio seconds trained per second, and where the training time goes.

For each optimizer, a short run of the preset (default: synth, 150 steps, so that FAM's
frequency analysis, which starts after step 100, is part of it) is trained with the real
trainer, which times every step's phases (batch assembly incl. SpecAugment, forward + CTC
loss, backward + clipping, optimizer + scheduler step). The table shows the
share of training wall-clock spent outside forward, backward and optimizer step (goal < 5%).

    .venv/bin/python benchmarks/training_throughput.py [--preset synth] [--steps 150]
        [--optimizers adamw,fam] [--cache-dir data] [--data ROOT] [--threads N]
        [--prefetch default|on|off|both]

Runs go to a temporary directory (deleted afterwards); the corpus and feature caches are
reused from --cache-dir (the first call generates them).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from fambench.training import RunRequest, run_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="synth")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--optimizers", default="adamw,fam")
    parser.add_argument("--cache-dir", type=Path, default=Path("data"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", type=Path, default=None, help="an existing corpus root")
    parser.add_argument(
        "--prefetch", default="default", choices=("default", "on", "off", "both"),
        help="batches made one ahead on a background thread (both: each optimizer twice)",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    rows = []
    with tempfile.TemporaryDirectory(prefix="fambench-throughput-") as out:
        modes = {"default": [None], "on": [True], "off": [False], "both": [False, True]}
        runs = [(n, p) for n in args.optimizers.split(",") for p in modes[args.prefetch]]
        for name, prefetch in runs:
            outcome = run_training(
                RunRequest(
                    optimizer=name,
                    preset=args.preset,
                    steps=args.steps,
                    out_dir=Path(out),
                    cache_dir=args.cache_dir,
                    data_root=args.data,
                    threads=args.threads,
                    force=True,
                    command="benchmarks/training_throughput.py",
                    prefetch=prefetch,
                )
            )
            t = outcome.timings
            s = outcome.summary
            train_s = t["train_s"]
            inside = t["forward_s"] + t["backward_s"] + t["optimizer_s"]
            rows.append(
                {
                    "optimizer": name,
                    "prefetch": {None: "default", True: "on", False: "off"}[prefetch],
                    "steps": s["steps"],
                    "train s": f"{train_s:.1f}",
                    "steps/s": f"{s['steps_per_s']:.2f}",
                    "audio s/s": f"{s['audio_s_per_s']:.1f}",
                    "forward %": f"{100 * t['forward_s'] / train_s:.1f}",
                    "backward %": f"{100 * t['backward_s'] / train_s:.1f}",
                    "optim %": f"{100 * t['optimizer_s'] / train_s:.1f}",
                    "batching %": f"{100 * t['data_s'] / train_s:.2f}",
                    "outside %": f"{100 * (train_s - inside) / train_s:.2f}",
                }
            )
    headers = list(rows[0])
    widths = [
        max(len(h), *(len(r[h]) if isinstance(r[h], str) else len(str(r[h])) for r in rows))
        for h in headers
    ]
    print(f"training throughput: preset {args.preset}, {args.steps} steps per optimizer")
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[h]).rjust(w) for h, w in zip(headers, widths, strict=True)))
    print(
        "outside % = share of training wall-clock outside forward, backward and optimizer "
        "step (goal < 5%); batching % is the part of it spent assembling batches"
    )


if __name__ == "__main__":
    main()
