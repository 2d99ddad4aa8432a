#!/usr/bin/env bash
# The measured answer: every tuned configuration, with SEEDS seeds, on every study workload;
# then each workload's target (AlgoPerf: median of the best tuned baseline's seeds) and one
# report across the workloads (performance profiles, speedups, ΔWER with n and method).
#
# Resumable: run it again and finished runs are reported, interrupted ones resume; a larger
# SEEDS adds seeds to the grids already run (screening: SEEDS=3 for every configuration, then
# SEEDS=5 with OPTIMIZERS narrowed to the ones a verdict needs). WORKERS bench processes of one
# thread each (default: the usable cores) work on the same grids, each taking the cells no
# other holds; core slots keep anything else fambench starts from oversubscribing the cores. A
# run that other processes slowed down anyway is marked contended and its time left out;
# EXTRA=--rerun-contended trains such runs again for an honest time. The targets go to
# HPARAMS_DIR (default: the package's shipped targets, which this script maintains), and the
# report reads them from there.
#
#   benchmarks/study.sh                          # the study workloads, every optimizer, 5 seeds
#   SEEDS=3 benchmarks/study.sh                  # the screening pass
#   WORKLOADS="ci ci-deep ci-subword synth" OPTIMIZERS=fam,fam-fixed,adamw,sgd \
#     OUT=results/study-ci benchmarks/study.sh   # the earlier study, of the ci-sized workloads
set -uo pipefail
FAMBENCH=${FAMBENCH:-.venv/bin/fambench}
OUT=${OUT:-results/study}
SEEDS=${SEEDS:-5}
WORKLOADS=${WORKLOADS:-"digits commands-deep commands-small"}
OPTIMIZERS=${OPTIMIZERS:-fam,fam-fixed,adamw,nadamw,sfadamw,soap,muon,lion,sgd}
VARIANTS=${VARIANTS:-"fam:sampling=random"}
HPARAMS_DIR=${HPARAMS_DIR:-fambench/workloads}
WORKERS=${WORKERS:-$(nproc)}
EXTRA=${EXTRA:-}
# Each workload's precision, pinned: it is part of a run's identity, and the study spans
# sessions on machines that differ. A CPU without AVX512_BF16 or AMX runs a bf16 workload in
# bf16's arithmetic with fp32 products and its runs' times are left out (docs/scaling.md), so a
# second, fp32 grid never starts beside the first. commands-small started on such a CPU: fp32.
PRECISIONS=${PRECISIONS:-"digits=bf16 commands-deep=bf16 commands-small=fp32"}
TUNING_RUNS=${TUNING_RUNS:-results/sweeps}  # the trials the report's compute ledger counts

precision_of() {  # precision_of WORKLOAD: its --precision option (none: the preset's default)
  local pair
  for pair in $PRECISIONS; do
    [ "${pair%%=*}" = "$1" ] && { echo "--precision ${pair#*=}"; return; }
  done
}

worker() {  # worker N: every workload's grid, one after the other
  local status=0
  for w in $WORKLOADS; do
    $FAMBENCH bench --preset "$w" --seeds "$SEEDS" --threads 1 --out "$OUT/$w" $EXTRA \
      $(precision_of "$w") \
      --hparams-dir "$HPARAMS_DIR" \
      --optimizers "$OPTIMIZERS" $(printf -- '--variant %s ' $VARIANTS) \
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
  $FAMBENCH target "$OUT/$w" --preset "$w" --hparams-dir "$HPARAMS_DIR" || exit 1
done
# The report's compute ledger counts the tuning trials report.json names (see
# fambench/report_settings.py), so that `fambench report $OUT` alone regenerates it.
[ -f "$OUT/report.json" ] ||
  printf '{"tuning_runs": ["%s"]}\n' "$(realpath --relative-to="$OUT" "$TUNING_RUNS")" > "$OUT/report.json"
$FAMBENCH report "$OUT" --hparams-dir "$HPARAMS_DIR"
