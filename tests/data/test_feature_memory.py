"""Training from a feature cache larger than the memory the process may use: the features are
memory-mapped, so what a run holds does not grow with the corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fambench.data.features import FeatureCache, FeatureSettings, FeatureStore, write_feature_file
from fambench.data.librispeech import load_manifest
from fambench.rundir import load_run

COPIES = 170  # the tiny corpus's training subset, this many times over (~195 MB of features)
SMALL_COPIES = 10  # ... and this many (~12 MB)
# What 170 copies may add to a run's resident anonymous memory over 10 copies: the peak of a
# 20-step run varies by up to ~40 MB between runs and machines, while holding the extra ~180 MB
# of features would add at least that much (float16) and ~3x that once normalised.
CAP_MB = 80

# Imports everything first, then runs the CLI in this process while a thread samples the
# resident anonymous memory (RssAnon: heap and private mappings; memory-mapped file pages are
# RssFile, shared with every process reading the file and given back under pressure).
CHILD = r"""
import runpy, sys, threading, time
import torch, torchaudio, fambench.cli, fambench.training, fambench.workloads  # noqa
import pandas, numpy, soundfile, jiwer, sentencepiece  # noqa
def rss_anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
base = peak = rss_anon()
done = False
def sample():
    global peak
    while not done:
        peak = max(peak, rss_anon())
        time.sleep(0.005)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
sys.argv = ["fambench", *sys.argv[1:]]
try:
    runpy.run_module("fambench", run_name="__main__")
finally:
    done = True
    sampler.join()
    print("rss-anon-growth-mb", (max(peak, rss_anon()) - base) / 2**20, flush=True)
"""


def _replicated_corpus(base: Path, out: Path, copies: int) -> Path:
    """A LibriSpeech-layout corpus whose train-synth is `copies` renamed copies of base's
    (audio hard-linked, transcripts rewritten); dev and test are base's."""
    root = out / "LibriSpeech"
    for subset in ("dev-synth", "test-synth"):
        (root / subset).parent.mkdir(parents=True, exist_ok=True)
        (root / subset).symlink_to(base / subset)
    for speaker_dir in sorted((base / "train-synth").iterdir()):
        if not speaker_dir.is_dir():
            continue
        for chapter_dir in sorted(p for p in speaker_dir.iterdir() if p.is_dir()):
            speaker, chapter = speaker_dir.name, chapter_dir.name
            lines = (chapter_dir / f"{speaker}-{chapter}.trans.txt").read_text().splitlines()
            for k in range(copies):
                new_speaker = str(int(speaker) + 100_000 * (k + 1))
                target = root / "train-synth" / new_speaker / chapter
                target.mkdir(parents=True)
                renamed = []
                for line in lines:
                    utt_id, text = line.split(" ", 1)
                    new_id = f"{new_speaker}-{utt_id.split('-', 1)[1]}"
                    os.link(chapter_dir / f"{utt_id}.flac", target / f"{new_id}.flac")
                    renamed.append(f"{new_id} {text}")
                (target / f"{new_speaker}-{chapter}.trans.txt").write_text(
                    "\n".join(renamed) + "\n"
                )
    return root


def _growth_training_on(synth_corpus: Path, out: Path, copies: int) -> tuple[float, int, dict]:
    """Train 20 steps on `copies` x the tiny corpus: (resident anonymous growth in MB, the
    training subset's feature-file size in bytes, the run's config)."""
    corpus = _replicated_corpus(synth_corpus, out / "corpus", copies)
    settings = FeatureSettings()
    cache = FeatureCache(out / "cache" / "features", settings)
    # Write the subset's cache from the base features (the same audio, so the same values
    # extraction would give), sparing the test `copies` x the extraction time.
    base = cache.compute(load_manifest(synth_corpus, "train-synth"))
    manifest = load_manifest(corpus, "train-synth")
    path = cache.path_for(manifest)
    path.parent.mkdir(parents=True)
    features = (
        (utt_id, base[f"{int(utt_id.split('-')[0]) % 100_000}-{utt_id.split('-', 1)[1]}"])
        for utt_id in manifest["utt_id"]
    )
    write_feature_file(path, features, settings.n_mels)
    assert len(FeatureStore.open(path)) == len(manifest)
    args = [
        "run", "--preset", "smoke", "-o", "sgd", "--steps", "20", "--threads", "1",
        "--data", str(corpus), "--cache-dir", str(out / "cache"), "--out", str(out / "results"),
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert len(list(path.parent.glob("feats-*"))) == 3  # train (ours), dev, test: no recompute
    (run_dir,) = [p for p in (out / "results").iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 20
    assert pd.read_csv(run_dir / "metrics.csv")["train_loss"].notna().sum() == 20
    config = load_run(run_dir).config
    return float(done.stdout.split("rss-anon-growth-mb")[-1]), path.stat().st_size, config


@pytest.mark.subprocess
def test_resident_memory_does_not_grow_with_the_feature_cache(synth_corpus, tmp_path):
    small, small_bytes, _ = _growth_training_on(synth_corpus, tmp_path / "small", SMALL_COPIES)
    big, big_bytes, config = _growth_training_on(synth_corpus, tmp_path / "big", COPIES)
    assert config.data["train_utterances"] > COPIES * 10
    extra_mb = (big_bytes - small_bytes) / 2**20
    # Held in memory, the extra features would add ~3x their file (float16 read + float32
    # normalised): ~540 MB here. Memory-mapped, the run's own memory stays within the cap.
    assert extra_mb > 2 * CAP_MB
    print(
        f"resident growth: {small:.1f} MB (x{SMALL_COPIES}), {big:.1f} MB (x{COPIES}); {extra_mb:.0f} MB more features"
    )
    assert big - small < CAP_MB, (small, big, extra_mb)
