#!/usr/bin/env bash
# The study workloads' own measurement: the baselines (adamw, sgd: every registry optimizer that
# is neither FAM nor its ablation) with SEEDS seeds on each study workload; then, per workload,
# the best of them (the lowest median final dev WER) to TARGET_SEEDS seeds, its target
# (AlgoPerf: the median final dev WER of the best tuned baseline's seeds, which needs 5) and one
# report with the dev WER and CER curves against training time, in results/workloads.
#
# Two 1-thread bench processes share each grid (each takes the cells the other does not hold),
# as the study runs them. Resumable: run it again and finished runs are reported, interrupted
# ones resume.
#
#   benchmarks/workloads.sh                          # digits, commands-deep, commands-small
#   WORKLOADS="digits" SEEDS=3 benchmarks/workloads.sh
set -uo pipefail
FAMBENCH=${FAMBENCH:-.venv/bin/fambench}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-results/workloads}
SEEDS=${SEEDS:-3}
TARGET_SEEDS=${TARGET_SEEDS:-5}
BASELINES=${BASELINES:-adamw,sgd}
WORKLOADS=${WORKLOADS:-"digits commands-deep commands-small"}
WORKERS=${WORKERS:-$(nproc)}

grid() {  # grid WORKLOAD OPTIMIZERS SEEDS: WORKERS bench processes on one grid
  local pids=() status=0
  for n in $(seq 1 "$WORKERS"); do
    $FAMBENCH bench --preset "$1" --optimizers "$2" --seeds "$3" --threads 1 --out "$OUT/$1" \
      >> "$OUT/.worker$n-$1.log" 2>&1 & pids+=($!)
    sleep 5
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  [ $status -eq 0 ] || echo "a bench process on $1 failed: see $OUT/.worker*-$1.log"
  return $status
}

best() {  # best WORKLOAD: the baseline with the lowest median final dev WER over its seeds
  $PYTHON - "$OUT/$1" <<'EOF'
import sys
from fambench.analysis import load_results
runs = load_results([sys.argv[1]]).runs
done = runs[runs["status"] == "completed"]
print(done.groupby("optimizer")["final_dev_wer"].median().idxmin())
EOF
}

mkdir -p "$OUT"
for w in $WORKLOADS; do
  grid "$w" "$BASELINES" "$SEEDS" || exit 1
  grid "$w" "$(best "$w")" "$TARGET_SEEDS" || exit 1
  $FAMBENCH target "$OUT/$w" --preset "$w" || exit 1
done
$FAMBENCH report "$OUT"
