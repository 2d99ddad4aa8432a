#!/usr/bin/env bash
# The measured answer (issue 12): every tuned configuration, with SEEDS seeds, on every CPU
# workload; then each workload's target (AlgoPerf: median of the best tuned baseline's seeds)
# and one report across the workloads (performance profiles, speedups, ΔWER with n and method).
#
# Resumable: run it again and finished runs are reported, interrupted ones resume. Two grids
# of one thread each share the two cores (core slots keep anything else fambench starts from
# oversubscribing them); a run that other processes slowed down anyway is marked contended and
# its time left out, and --rerun-contended trains it again for an honest time.
#
#   benchmarks/study.sh                      # ci, ci-deep, ci-subword; 5 seeds; results/study
#   WORKLOADS="ci" SEEDS=5 benchmarks/study.sh
set -uo pipefail
FAMBENCH=${FAMBENCH:-.venv/bin/fambench}
OUT=${OUT:-results/study}
SEEDS=${SEEDS:-5}
WORKLOADS=${WORKLOADS:-"ci ci-deep ci-subword"}
EXTRA=${EXTRA:-}

grid() {  # grid NAME ARGS...: one grid per workload, one after the other
  local name=$1 status=0
  shift
  for w in $WORKLOADS; do
    $FAMBENCH bench --preset "$w" --seeds "$SEEDS" --threads 1 --out "$OUT/$w" $EXTRA "$@" \
      > "$OUT/.$name-$w.log" 2>&1 || { echo "grid $name on $w failed: see $OUT/.$name-$w.log"; status=1; }
  done
  return $status
}

mkdir -p "$OUT"
grid fam --optimizers fam --variant fam:sampling=random & first=$!
grid baselines --optimizers fam-fixed,adamw,sgd; second=$?
wait $first; first=$?
[ $first -eq 0 ] && [ $second -eq 0 ] || exit 1

for w in $WORKLOADS; do
  $FAMBENCH target "$OUT/$w" --preset "$w" || exit 1
done
$FAMBENCH report "$OUT"
