"""The GPU check (issue 13): throughput, memory, phase shares and host syncs per optimizer.

Needs only this repository and one CUDA GPU; makes its own data: a clearly labelled *synthetic
feature stream* (random 80-bin log-mel frames, utterance lengths drawn around LibriSpeech's mean of
12.3 s, random subword targets), because the question here is the speed of the training step, not
what it learns. For the ``librispeech-100`` model shape and batch it prints, per optimizer (the
study's nine, or ``--optimizers``; the preset's tuned values where it has them): steps/s, seconds of
audio per second, peak GPU memory, the share of step time in data/forward/backward/optimizer (CUDA
events), and host synchronisations per step (``torch.cuda.set_sync_debug_mode("warn")`` counts them)
with the phase they happen in — torch's CUDA CTC loss copies small host arrays to the device with
blocking copies in its forward and backward, which no caller can avoid; then the optimizer step
alone — fam, fam-fixed, fused and foreach AdamW, foreach SGD-momentum — on the same parameters.

    python benchmarks/gpu_check.py                 # on a GPU machine (make gpu-check)
    python benchmarks/gpu_check.py --device cpu --preset smoke --steps 3   # a dry run

Then a one-GPU ``torchrun`` run end to end: ``fambench run --preset smoke-nodropout`` under
``torchrun --standalone --nproc-per-node 1`` (DDP on NCCL; the smoke corpus is generated with
eSpeak NG first), its status, steps/s and the rank digests from its summary. On CUDA, last,
adamw with the model under ``torch.compile`` (dynamic shapes) against eager, or why compiling
failed: whether a compile switch would pay is measured there first (what compiling does on
the CPU machine: docs/scaling.md#gpus).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings

import torch

from fambench.model import ConformerCTC
from fambench.optim import build_optimizer
from fambench.optim.capabilities import has_evaluation_modes
from fambench.workloads import get_preset, load_tuned
from fambench.workloads.precision import autocast, resolve_precision
from fambench.workloads.recognition import ctc_loss_sum

HOP_S = 0.01
MEAN_FRAMES, SD_FRAMES = 1230, 400  # LibriSpeech utterances: about 12.3 s ± 4 s


# The optimizers of the study (docs/methodology.md#the-study), adamw first as the reference.
STUDY_OPTIMIZERS = ("adamw", "nadamw", "sfadamw", "soap", "muon", "lion", "sgd", "fam", "fam-fixed")


def synthetic_batches(frames_per_batch: int, n_mels: int, vocab: int, seed: int, count: int):
    """``count`` padded batches of random features and targets: (feats, lens, targets, tlens,
    max_frames, audio_frames), all on the host."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        lengths: list[int] = []
        while True:
            n = int(torch.normal(float(MEAN_FRAMES), float(SD_FRAMES), (1,), generator=gen))
            n = max(200, min(n, 3000))
            if (len(lengths) + 1) * max([n, *lengths]) > frames_per_batch and lengths:
                break
            lengths.append(n)
        longest = max(lengths)
        feats = torch.randn(len(lengths), longest, n_mels, generator=gen)
        tlens = [max(1, n // 40) for n in lengths]  # ~2.5 subwords per second
        targets = torch.randint(1, vocab, (len(lengths), max(tlens)), generator=gen)
        batches.append(
            (feats, torch.tensor(lengths), targets, torch.tensor(tlens), longest, sum(lengths))
        )
    return batches


class SyncCounter(contextlib.AbstractContextManager):
    """Counts the host synchronisations CUDA reports while active (sync debug mode "warn")."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.count = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            self._catch = warnings.catch_warnings(record=True)
            self._records = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
            self.count = sum("synchroniz" in str(w.message) for w in self._records)
            self._catch.__exit__(*exc)
        return False


def _event(device: torch.device):
    if device.type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


def _elapsed(start, end) -> float:
    return start.elapsed_time(end) / 1000.0 if hasattr(start, "elapsed_time") else end - start


def train_steps(
    name: str, preset, device: torch.device, batches, steps: int, compile_model: bool = False
) -> dict:
    """Time ``steps`` training steps of ``name`` after one warm-up step per batch shape; with
    ``compile_model`` the forward runs through ``torch.compile`` (dynamic shapes), and the
    seconds of the warm-up steps, which compile it, are returned as ``warm-up s``.

    The warm-up meets every shape because the first step at a new shape pays for cuDNN's and
    cuBLAS's algorithm choice and the allocator's growth, once per process: with fewer, the
    first optimizer timed pays for shapes that every later one finds cached."""
    torch.manual_seed(0)
    settings = preset.model.replace(vocab_size=preset.data.vocab_size or 256)
    model = ConformerCTC(settings).to(device).train()
    forward = torch.compile(model, dynamic=True) if compile_model else model
    tuned = {
        k: v
        for k, v in load_tuned(preset.name).for_optimizer(name).items()
        if k != "warmup_fraction"
    }
    optimizer = build_optimizer(name, model, **tuned)
    if has_evaluation_modes(optimizer):
        optimizer.train()  # as the trainer does: such an optimizer steps in its train mode
    precision = resolve_precision(None, preset.amp, device)
    phases = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    syncs = dict.fromkeys(phases, 0)
    audio_frames, wall, warm_up = 0, 0.0, 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        batches = [tuple(_pinned(t) for t in batch) for batch in batches]
    warm_steps = len(batches)
    for i in range(warm_steps + steps):
        feats, lens, targets, tlens, _, frames = batches[i % len(batches)]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        counters = {phase: SyncCounter(device) for phase in phases}
        e0 = _event(device)
        with counters["data"]:
            x, xl, y = (t.to(device, non_blocking=True) for t in (feats, lens, targets))
        e1 = _event(device)
        with counters["forward"]:
            with autocast(precision, device):
                log_probs, _ = forward(x, xl)
            # CTC lengths from the host, as fambench's training step gives them.
            out_lens = model.output_lengths(lens, log_probs.shape[1])
            loss = ctc_loss_sum(log_probs, out_lens, y, tlens) / float(tlens.sum())
        e2 = _event(device)
        with counters["backward"]:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), preset.grad_clip)
        e3 = _event(device)
        with counters["optimizer"]:
            optimizer.step()
        e4 = _event(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i < warm_steps:
            warm_up += time.perf_counter() - started
            continue
        wall += time.perf_counter() - started
        for phase, counter in counters.items():
            syncs[phase] += counter.count
        audio_frames += frames
        for key, (a, b) in zip(phases, ((e0, e1), (e1, e2), (e2, e3), (e3, e4)), strict=True):
            phases[key] += _elapsed(a, b)
    total = sum(phases.values()) or 1.0
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    )
    return {
        "optimizer": name,
        "steps/s": steps / wall,
        "audio s/s": audio_frames * HOP_S / wall,
        "peak GiB": peak,
        **{f"{k} %": 100 * v / total for k, v in phases.items()},
        "syncs/step": sum(syncs.values()) / steps,
        # Where they happen; torch's CUDA CTC loss makes some in forward and backward.
        "syncs by phase": " ".join(f"{k[:3]} {v / steps:g}" for k, v in syncs.items()),
        "warm-up s": warm_up,
    }


def compile_check(preset, device: torch.device, batches, steps: int, eager: dict) -> str:
    """One line: adamw with the model under ``torch.compile`` against ``eager`` (its row), or
    why compiling failed. fambench has no compile switch: this measures whether one would
    pay."""
    try:
        row = train_steps("adamw", preset, device, batches, steps, compile_model=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the compiler is the answer here
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return f"torch.compile (adamw, dynamic shapes): FAILED: {type(exc).__name__}: {first}"
    return (
        f"torch.compile (adamw, dynamic shapes): {row['steps/s']:.3g} steps/s "
        f"({row['steps/s'] / eager['steps/s']:.2f}x eager), {row['audio s/s']:.3g} audio s/s, "
        f"compiling + {len(batches)} warm-up steps {row['warm-up s']:.0f} s"
    )


def _pinned(value):
    return value.pin_memory() if isinstance(value, torch.Tensor) else value


def optimizer_steps(preset, device: torch.device, repeats: int) -> list[tuple[str, float]]:
    """Median seconds of step() alone, each optimizer on its own copy of the same parameters."""
    settings = preset.model.replace(vocab_size=preset.data.vocab_size or 256)
    rows = []
    variants = {
        "fam": lambda m: build_optimizer("fam", m, fam_start_step=1),
        "fam-fixed": lambda m: build_optimizer("fam-fixed", m),
        # The baselines straight from torch: the registry's adamw is foreach, never fused.
        "adamw (fused)": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True),
        "adamw (foreach)": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, foreach=True),
        "sgd-momentum (foreach)": lambda m: torch.optim.SGD(
            m.parameters(), lr=0.1, momentum=0.9, nesterov=False, foreach=True
        ),
    }
    for label, make in variants.items():
        torch.manual_seed(0)
        model = ConformerCTC(settings).to(device)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        try:
            optimizer = make(model)
        except (RuntimeError, TypeError, ValueError) as exc:  # e.g. no fused AdamW here
            print(f"  {label}: skipped ({exc})")
            continue
        times = []
        for i in range(repeats + 3):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 3:
                times.append(time.perf_counter() - started)
        rows.append((label, statistics.median(times)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="librispeech-100")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument(
        "--optimizers", default=",".join(STUDY_OPTIMIZERS),
        help="comma-separated optimizers whose training steps are timed (default: the study's)",
    )  # fmt: skip
    parser.add_argument(
        "--data", help="LibriSpeech root of an existing smoke corpus for the torchrun run "
        "(default: one is generated in a temporary directory)",
    )  # fmt: skip
    parser.add_argument("--cache-dir", help="feature cache for the torchrun run (with --data)")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="also time adamw with torch.compile (default: on CUDA only)",
    )  # fmt: skip
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: no CUDA device; --device cpu runs a dry run")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    preset = get_preset(args.preset)
    vocab = preset.data.vocab_size or 256
    print(f"preset {preset.name}: synthetic feature stream (random log-mels, LibriSpeech-like "
          f"lengths), {preset.batch_frames} frames per batch")  # fmt: skip
    batches = synthetic_batches(preset.batch_frames, preset.model.n_mels, vocab, 0, 4)
    header, rows = None, {}
    for name in args.optimizers.split(","):
        row = rows[name] = train_steps(name, preset, device, batches, args.steps)
        if header is None:
            header = list(row)
            print(" | ".join(header))
        print(" | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()))
    print("optimizer step alone (median ms):")
    steps = optimizer_steps(preset, device, args.repeats)
    sgd = dict(steps).get("sgd-momentum (foreach)")
    fused = dict(steps).get("adamw (fused)")
    for label, seconds in steps:
        ratios = []
        if sgd:
            ratios.append(f"{seconds / sgd:.2f}x foreach SGD-momentum")
        if fused:
            ratios.append(f"{seconds / fused:.2f}x fused AdamW")
        print(f"  {label}: {seconds * 1e3:.3f} ms ({', '.join(ratios)})")
    torchrun_check(args.device, data=args.data, cache_dir=args.cache_dir)
    # Last: compiling may take minutes, and everything above must come out regardless.
    if args.compile if args.compile is not None else device.type == "cuda":
        eager = rows.get("adamw") or train_steps("adamw", preset, device, batches, args.steps)
        print(compile_check(preset, device, batches, args.steps, eager))


def torchrun_check(
    device: str, steps: int = 60, data: str | None = None, cache_dir: str | None = None
) -> None:
    """``fambench run`` under torchrun on one process, end to end; prints what it recorded."""
    import json
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
            "-m", "fambench", "run", "--preset", "smoke-nodropout", "-o", "fam",
            "--steps", str(steps), "--out", str(out),
            "--cache-dir", cache_dir or str(Path(tmp) / "data"),
        ]  # fmt: skip
        if data:
            command += ["--data", data]
        env = dict(os.environ)
        if device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        wall = time.perf_counter() - started
        summaries = list(out.glob("*/summary.json"))
        if done.returncode != 0 or not summaries:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            print(f"torchrun (1 process): FAILED (exit {done.returncode}): " + " | ".join(tail))
            return
        summary = json.loads(summaries[0].read_text())
        config = json.loads((summaries[0].parent / "config.json").read_text())
        print(
            f"torchrun (1 process, {config['provenance']['device']}): {summary['status']}, "
            f"{summary['steps']} steps, {summary['steps_per_s']:.1f} steps/s, "
            f"world_size {summary['world_size']}, "
            f"{wall:.0f} s{'' if data else ' with corpus generation'}"
        )


if __name__ == "__main__":
    main()
