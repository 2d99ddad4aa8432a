"""Learning-rate sweep for a preset: which peak lr does each optimizer want?

Trains every (optimizer, lr) cell of a grid once (seed 0) on the preset's data and model with a
shortened step budget (the schedule keeps its shape: warmup, hold, cosine), then prints and
writes a table of final and best dev WER per cell and the lr with the best final dev WER per
optimizer. The chosen values go into the preset's tuned-hyperparameter file,
`fambench/workloads/tuned/<preset>.json`, which `fambench run` reads.

    python benchmarks/lr_sweep.py --preset synth --steps 500 --out results/sweeps

`--grid "fam=0.5,0.75;sgd=0.1,0.15"` replaces the default grids (e.g. to check the chosen
values and a neighbour at the full budget), and `--name` the table's file stem.

Runs land in `<out>/runs/` (resumable: rerunning skips finished cells); the table is
`<out>/<preset>-lr-sweep.csv` and `.md`. This script measures and reports; it never fails on
a bad result.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from fambench.compare import to_markdown
from fambench.rundir import find_run_dirs, load_run
from fambench.training import RunRequest, run_training

GRIDS: dict[str, list[float]] = {
    "fam": [0.1, 0.2, 0.5, 1.0, 2.0],
    "fam-fixed": [0.1, 0.2, 0.5, 1.0, 2.0],
    "sgd": [0.01, 0.02, 0.05, 0.1, 0.2],
    "adamw": [5e-4, 1e-3, 2e-3, 4e-3, 8e-3],
}


def parse_grid(text: str) -> dict[str, list[float]]:
    """Parse --grid: "fam=0.5,0.75;sgd=0.1" -> {"fam": [0.5, 0.75], "sgd": [0.1]}."""
    grids: dict[str, list[float]] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, _, values = item.partition("=")
        try:
            lrs = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise SystemExit(f"error: --grid {item!r}: expected name=lr,lr,...") from None
        if not lrs:
            raise SystemExit(f"error: --grid {item!r}: no learning rates")
        grids[name.strip()] = lrs
    return grids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="synth")
    parser.add_argument("--steps", type=int, default=500, help="steps per cell")
    parser.add_argument("--optimizers", default=",".join(GRIDS))
    parser.add_argument(
        "--grid", default=None, help='lrs per optimizer, e.g. "fam=0.5,0.75;sgd=0.1,0.15"'
    )
    parser.add_argument("--name", default=None, help="table file stem (default <preset>-lr-sweep)")
    parser.add_argument("--out", type=Path, default=Path("results/sweeps"))
    parser.add_argument("--cache-dir", type=Path, default=Path("data"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument(
        "--report-only", action="store_true", help="only tabulate the runs already there"
    )
    args = parser.parse_args()
    grids = (
        parse_grid(args.grid) if args.grid else {o: GRIDS[o] for o in args.optimizers.split(",")}
    )

    if not args.report_only:
        for optimizer, lrs in grids.items():
            for lr in lrs:
                started = time.perf_counter()
                outcome = run_training(
                    RunRequest(
                        optimizer=optimizer,
                        preset=args.preset,
                        overrides={"lr": lr},
                        steps=args.steps,
                        out_dir=args.out / "runs",
                        cache_dir=args.cache_dir,
                        threads=args.threads,
                        command=" ".join(sys.argv),
                    )
                )
                elapsed = time.perf_counter() - started
                print(optimizer, lr, outcome.status, f"({elapsed:.0f} s)", flush=True)

    # The table is built from the run directories, so cells trained by several processes
    # (e.g. two of this script, one per optimizer pair) land in one table.
    rows = []
    sweep_dirs = find_run_dirs([args.out / "runs"]) if (args.out / "runs").is_dir() else []
    for run_dir in sweep_dirs:
        run = load_run(run_dir)
        config, summary = run.config, run.summary
        if summary is None or config["preset"] != args.preset or config["steps"] != args.steps:
            continue
        if config["optimizer"] not in grids:
            continue
        rows.append(
            {
                "optimizer": config["optimizer"],
                "lr": config["optimizer_hparams"].get("lr"),
                "status": summary.status,
                "steps": summary.steps,
                "final_dev_wer": summary.final_dev_wer,
                "best_dev_wer": summary.best_dev_wer,
                "final_dev_cer": summary.final_dev_cer,
                "train_s": summary.train_s,
                "run_id": run.run_id,
            }
        )
    if not rows:
        print(f"no finished sweep runs under {args.out / 'runs'}")
        return 1
    table = pd.DataFrame(rows).drop_duplicates(["optimizer", "lr"])
    table = table.sort_values(["optimizer", "lr"]).reset_index(drop=True)
    ok = table[table["status"] == "completed"].dropna(subset=["final_dev_wer"])
    best = ok.loc[ok.groupby("optimizer")["final_dev_wer"].idxmin()]
    table["chosen"] = table["run_id"].isin(best["run_id"])
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (args.name or f"{args.preset}-lr-sweep")
    table.to_csv(stem.with_suffix(".csv"), index=False)
    shown = table.drop(columns=["run_id"]).round(
        {"final_dev_wer": 3, "best_dev_wer": 3, "final_dev_cer": 3, "train_s": 0}
    )
    header = (
        f"# Learning-rate sweep: preset `{args.preset}`, {args.steps} steps per cell, seed 0\n\n"
        "Chosen (`chosen`): the lr with the lowest final dev WER per optimizer. Cells may run\n"
        "several at a time (one thread each) on a shared machine: train_s is indicative only.\n\n"
    )
    stem.with_suffix(".md").write_text(header + to_markdown(shown) + "\n")
    print(shown.to_string(index=False))
    print("\nchosen:", {r.optimizer: r.lr for r in best.itertuples()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
