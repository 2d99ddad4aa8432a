#!/usr/bin/env bash
# The study workloads' own measurement: the baselines (adamw, sgd: every registry optimizer that
# is neither FAM nor its ablation) with SEEDS seeds on each study workload, then each workload's
# target (AlgoPerf: the median final dev WER of the best tuned baseline's seeds, which needs 5)
# and one report with the dev WER and CER curves against training time, in results/workloads.
#
# Two 1-thread bench processes share the grids (each takes the cells the other does not hold),
# as the study runs them. Resumable: run it again and finished runs are reported, interrupted
# ones resume. BEST_SEEDS more seeds of BEST (default adamw) give the target its 5 seeds.
#
#   benchmarks/workloads.sh                          # digits, commands-deep, commands-small
#   WORKLOADS="digits" SEEDS=3 benchmarks/workloads.sh
set -uo pipefail
FAMBENCH=${FAMBENCH:-.venv/bin/fambench}
OUT=${OUT:-results/workloads}
SEEDS=${SEEDS:-3}
BEST=${BEST:-adamw}
BEST_SEEDS=${BEST_SEEDS:-5}
WORKLOADS=${WORKLOADS:-"digits commands-deep commands-small"}
WORKERS=${WORKERS:-$(nproc)}

worker() {  # worker N: every workload's grids, one after the other
  local status=0
  for w in $WORKLOADS; do
    $FAMBENCH bench --preset "$w" --seeds "$SEEDS" --threads 1 --out "$OUT/$w" \
      --optimizers adamw,sgd > "$OUT/.worker$1-$w.log" 2>&1 &&
    $FAMBENCH bench --preset "$w" --seeds "$BEST_SEEDS" --threads 1 --out "$OUT/$w" \
      --optimizers "$BEST" >> "$OUT/.worker$1-$w.log" 2>&1 ||
      { echo "worker $1 on $w failed: see $OUT/.worker$1-$w.log"; status=1; }
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
