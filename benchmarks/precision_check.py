"""fp32 against bf16 autocast on one preset: does bf16 train as well, and how much faster?

For each seed, the fp32 run and the bf16 run of the same command train at one thread each
(`fambench run --threads 1`): side by side (--jobs 2, the default), so each pair meets the
same machine state, or one after the other (--jobs 1, beside something else that takes the
other core). Runs are ordinary run directories under --out/PRESET/fp32 and --out/PRESET/bf16
(apart, because `fambench compare` pools runs by optimizer and hyperparameters, not by
precision): running the script again reports finished runs and resumes interrupted ones. With
--reuse DIR, a finished run of the same command already under DIR (e.g. the workload's
baseline grid, trained in its default precision) is used instead of training it again; its
training seconds then come from another session, so no speedup is printed (measure it side by
side with `benchmarks/training_throughput.py --preset PRESET`). Prints, per seed, final dev
WER and CER and training seconds of both, then the mean per-seed WER and CER difference
(bf16 − fp32) with its paired t-interval, and the speedup (fp32 seconds / bf16 seconds: the
geometric mean over seeds with the paired t-interval of the log ratio), n = the seeds.

    .venv/bin/python benchmarks/precision_check.py [--preset synth] [--optimizer adamw]
        [--seeds 3] [--out results/precision] [--cache-dir data] [--length-bucket N] [--jobs 2]
        [--reuse results/workloads/PRESET]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from fambench.analysis.stats import paired_t_interval
from fambench.rundir import load_run
from fambench.training import RunRequest, plan_run

PRECISIONS = ("fp32", "bf16")


def main() -> None:
    args = _arguments()
    runs, reused = _train_pairs(args)
    rows = {key: load_run(path).summary for key, path in runs.items()}
    _print_runs(args, rows, reused)
    _print_differences(args, rows, reused)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="synth")
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/precision"))
    parser.add_argument("--cache-dir", type=Path, default=Path("data"))
    parser.add_argument("--length-bucket", type=int, default=None)
    parser.add_argument("--jobs", type=int, choices=(1, 2), default=2)
    parser.add_argument("--reuse", type=Path, default=None, help="finished runs to take from")
    return parser.parse_args()


Runs = dict[tuple[int, str], Path]


def _train_pairs(args: argparse.Namespace) -> tuple[Runs, set[tuple[int, str]]]:
    """Every (seed, precision) run, trained or taken from --reuse: (run dirs, those reused)."""
    out = args.out / args.preset
    reused: set[tuple[int, str]] = set()
    runs: Runs = {}
    for seed in range(args.seeds):
        commands = []
        for precision in PRECISIONS:
            earlier = _finished_run(args.reuse, args.preset, args.optimizer, seed, precision)
            if earlier is not None:
                runs[seed, precision] = earlier
                reused.add((seed, precision))
                continue
            request = RunRequest(
                optimizer=args.optimizer, preset=args.preset, seed=seed, out_dir=out / precision,
                cache_dir=args.cache_dir, threads=1, precision=precision,
                length_bucket_frames=args.length_bucket,
            )  # fmt: skip
            runs[seed, precision] = plan_run(request).run_dir
            commands.append(_run_command(args, out, seed, precision))
        if commands:
            _run_side_by_side(commands, out, seed, args.jobs)
    return runs, reused


def _run_command(args: argparse.Namespace, out: Path, seed: int, precision: str) -> list[str]:
    command = [
        sys.executable, "-m", "fambench", "run", "--optimizer", args.optimizer,
        "--preset", args.preset, "--seed", str(seed), "--threads", "1",
        "--precision", precision, "--out", str(out / precision),
        "--cache-dir", str(args.cache_dir),
    ]  # fmt: skip
    if args.length_bucket is not None:
        command += ["--length-bucket", str(args.length_bucket)]
    return command


def _run_side_by_side(commands: list[list[str]], out: Path, seed: int, jobs: int) -> None:
    """The runs of one seed, side by side (``jobs`` 2) or one after the other."""
    log = out / f".seed{seed}.log"
    out.mkdir(parents=True, exist_ok=True)
    with log.open("a") as sink:
        if jobs == 2:
            processes = [subprocess.Popen(c, stdout=sink, stderr=sink) for c in commands]
            codes = [p.wait() for p in processes]
        else:
            codes = [subprocess.call(c, stdout=sink, stderr=sink) for c in commands]
    if any(codes):
        sys.exit(f"seed {seed}: a run failed (exit codes {codes}); see {log}")


def _print_runs(args: argparse.Namespace, rows: dict, reused: set[tuple[int, str]]) -> None:
    print(
        f"{args.preset}, {args.optimizer}: fp32 against bf16 autocast, {args.seeds} seeds, "
        f"length bucket {args.length_bucket if args.length_bucket is not None else 'preset'}, "
        + ("each pair side by side" if args.jobs == 2 else "one after the other")
        + " at 1 thread"
        + (f"; reused from {args.reuse}: " + ", ".join(f"seed {s} {p}" for s, p in sorted(reused))
           if reused else "")
    )  # fmt: skip
    print("| seed | fp32 WER | bf16 WER | fp32 CER | bf16 CER | fp32 train s | bf16 train s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for seed in range(args.seeds):
        a, b = rows[seed, "fp32"], rows[seed, "bf16"]
        print(
            f"| {seed} | {a.final_dev_wer:.4f} | {b.final_dev_wer:.4f} | {a.final_dev_cer:.4f} "
            f"| {b.final_dev_cer:.4f} | {a.train_s:.0f} | {b.train_s:.0f} |"
        )


def _print_differences(args: argparse.Namespace, rows: dict, reused: set[tuple[int, str]]) -> None:
    """bf16 − fp32 per metric with its paired t-interval, then the speedup unless reused."""
    seeds = list(range(args.seeds))
    for metric in ("final_dev_wer", "final_dev_cer"):
        fp32 = np.array([getattr(rows[s, "fp32"], metric) for s in seeds])
        bf16 = np.array([getattr(rows[s, "bf16"], metric) for s in seeds])
        low, high = paired_t_interval(bf16, fp32)
        print(
            f"{metric} bf16 − fp32: {float(np.mean(bf16 - fp32)):+.4f} "
            f"[{low:+.4f}, {high:+.4f}] (95% paired t-interval, n={len(seeds)})"
        )
    if reused:
        print("speedup: not shown (reused runs were timed in another session)")
        return
    logs = np.log([rows[s, "fp32"].train_s / rows[s, "bf16"].train_s for s in seeds])
    low, high = paired_t_interval(logs, np.zeros_like(logs))
    print(
        f"speedup fp32 s / bf16 s: {math.exp(float(logs.mean())):.3f}x "
        f"[{math.exp(low):.3f}, {math.exp(high):.3f}] (geometric mean, 95% t-interval of the "
        f"log ratio, n={len(seeds)})"
    )


def _finished_run(
    where: Path | None, preset: str, optimizer: str, seed: int, precision: str
) -> Path | None:
    """A completed run under `where` of this preset, optimizer (with the hyperparameters a fresh
    run would use), seed and precision; found by what it recorded, since a bf16 run cannot be
    planned on a CPU without bf16 dot products."""
    if where is None:
        return None
    today = plan_run(
        RunRequest(optimizer=optimizer, preset=preset, seed=seed, out_dir=where, threads=1,
                   precision="fp32")
    )  # fmt: skip
    for path in sorted(where.glob(f"{preset}-{optimizer}-s{seed}-*")):
        run = load_run(path)
        if (
            run.status == "completed"
            and run.summary.precision == precision
            and run.config.get("hparams_key") == today.hparams_key
            and run.config.get("steps") == today.total_steps
        ):
            return path
    return None


if __name__ == "__main__":
    main()
