#!/usr/bin/env bash
# The measured answer (issue 12): every tuned configuration, with SEEDS seeds, on every CPU
# workload; then each workload's target (AlgoPerf: median of the best tuned baseline's seeds)
# and one report across the workloads (performance profiles, speedups, ΔWER with n and method).
#
# Resumable: run it again and finished runs are reported, interrupted ones resume. WORKERS bench
# processes of one thread each (default: the usable cores) work on the same grids, each taking
# the cells no other holds; core slots keep anything else fambench starts from oversubscribing
# the cores. A run that other processes slowed down anyway is marked contended and its time
# left out; EXTRA=--rerun-contended trains such runs again for an honest time.
#
#   benchmarks/study.sh                      # ci, ci-deep, ci-subword, synth; 5 seeds; results/study
#   WORKLOADS="ci" SEEDS=5 benchmarks/study.sh
set -uo pipefail
FAMBENCH=${FAMBENCH:-.venv/bin/fambench}
OUT=${OUT:-results/study}
SEEDS=${SEEDS:-5}
WORKLOADS=${WORKLOADS:-"ci ci-deep ci-subword synth"}
WORKERS=${WORKERS:-$(nproc)}
EXTRA=${EXTRA:-}

worker() {  # worker N: every workload's grid, one after the other
  local status=0
  for w in $WORKLOADS; do
    $FAMBENCH bench --preset "$w" --seeds "$SEEDS" --threads 1 --out "$OUT/$w" $EXTRA \
      --optimizers fam,fam-fixed,adamw,sgd --variant fam:sampling=random \
      > "$OUT/.worker$1-$w.log" 2>&1 || { echo "worker $1 on $w failed: see $OUT/.worker$1-$w.log"; status=1; }
  done
  return $status
}

mkdir -p "$OUT"
pids=()
for n in $(seq 1 "$WORKERS"); do
  worker "$n" & pids+=($!)
  sleep 5
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ $failed -eq 0 ] || exit 1

for w in $WORKLOADS; do
  $FAMBENCH target "$OUT/$w" --preset "$w" || exit 1
done
$FAMBENCH report "$OUT"
