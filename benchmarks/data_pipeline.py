"""Time the speech data pipeline: corpus generation, manifest, feature extraction, cache hits.

Generates a synthetic corpus of `--hours` training audio (plus small dev/test subsets) with
eSpeak NG, then builds the train manifest and extracts its log-mel features twice (the second
run reads the on-disk caches). Per-hour figures are the measured times divided by the measured
hours of audio, i.e. scaled linearly from the smaller run.

    python benchmarks/data_pipeline.py [--hours 0.25] [--workers 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from fambench.data.features import FeatureCache, FeatureSettings
from fambench.data.librispeech import load_manifest
from fambench.data.synth import SUBSETS, SynthSettings, generate_corpus, read_marker


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=0.25, help="hours of train audio")
    parser.add_argument("--utterances", type=int, default=50, help="dev and test utterances")
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    parser.add_argument("--out", type=Path, default=None, help="keep the corpus here")
    args = parser.parse_args()

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        settings = SynthSettings(
            hours=args.hours, dev_utterances=args.utterances, test_utterances=args.utterances
        )
        root, gen_s = _timed(lambda: generate_corpus(out, settings, args.workers or None))
        marker = read_marker(root)
        gen_hours = sum(marker["subsets"][s]["seconds"] for s in SUBSETS) / 3600

        manifest, manifest_s = _timed(lambda: load_manifest(root, "train-synth"))
        _, manifest_cached_s = _timed(lambda: load_manifest(root, "train-synth"))
        train_hours = float(manifest["duration"].sum()) / 3600

        cache = FeatureCache(out / "features", FeatureSettings())
        _, feat_s = _timed(lambda: cache.load(manifest))
        _, feat_cached_s = _timed(lambda: cache.load(manifest))
        cache_mb = cache.path_for(manifest).stat().st_size / 2**20

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"data pipeline benchmark — {platform.processor() or platform.machine()}, "
        f"{cores} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load_before:.2f} at start"
    )
    print(
        f"corpus: {gen_hours:.3f} h generated ({train_hours:.3f} h train, "
        f"{args.utterances} dev + {args.utterances} test utterances); "
        "per-hour figures are scaled linearly from these measurements\n"
    )
    rows = [
        ("generate corpus (eSpeak NG, 16 kHz FLAC)", gen_s, gen_s / gen_hours),
        ("train manifest, first build (decodes every file)", manifest_s, manifest_s / train_hours),
        ("train manifest, cached (parquet)", manifest_cached_s, manifest_cached_s / train_hours),
        ("log-mel features, first run (extract + save)", feat_s, feat_s / train_hours),
        ("log-mel features, second run (cached .pt)", feat_cached_s, feat_cached_s / train_hours),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  {'measured s':>10}  {'s per hour':>10}")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 10}")
    for name, seconds, per_hour in rows:
        print(f"{name:<{width}}  {seconds:>10.2f}  {per_hour:>10.2f}")
    print(
        f"\nfeature cache: {cache_mb:.1f} MiB for {train_hours:.3f} h "
        f"({cache_mb / train_hours:.0f} MiB per hour, float16)"
    )


if __name__ == "__main__":
    main()
