#!/usr/bin/env bash
# The field's baselines tuned with the budget fam, fam-fixed, adamw and sgd had on the tuning
# workload: `fambench tune --preset ci`, 1 study x 8 quasi-random trials at the preset's step
# budget, one thread per trial, into results/sweeps/ci-<optimizer>-tune/ beside theirs; the best
# values go into the tuned-values files the package ships (HPARAMS_DIR: this script maintains
# them; a user's own tuning writes results/hparams instead). Two workers share each study (two 1-thread
# trials on the 2 cores). Resumable: run it again and finished trials are kept, an interrupted
# one resumes from its checkpoint. Then each optimizer's values are transferred to the workloads
# that take ci's (TRANSFER_TO), by the rule the others' were: ci's values, not tuned there.
#
#   benchmarks/tune_baselines.sh                       # nadamw sfadamw soap muon lion
#   OPTIMIZERS="muon lion" benchmarks/tune_baselines.sh
set -uo pipefail
FAMBENCH=${FAMBENCH:-.venv/bin/fambench}
PYTHON=${PYTHON:-.venv/bin/python}
PRESET=${PRESET:-ci}
TRIALS=${TRIALS:-8}
STUDIES=${STUDIES:-1}
OPTIMIZERS=${OPTIMIZERS:-"nadamw sfadamw soap muon lion"}
TRANSFER_TO=${TRANSFER_TO:-"ci-deep ci-subword digits commands-deep commands-small"}
WORKERS=${WORKERS:-$(nproc)}
HPARAMS_DIR=${HPARAMS_DIR:-fambench/workloads}

transfer() {  # transfer OPTIMIZER: PRESET's tuned values recorded for every TRANSFER_TO preset
  $PYTHON - "$1" "$HPARAMS_DIR" "$PRESET" $TRANSFER_TO <<'PY'
import sys
from fambench.hparams_dirs import tuned_path
from fambench.workloads.tuned import load_tuned, record_tuned
optimizer, directory, tuned_on, *presets = sys.argv[1:]
tuned = load_tuned(tuned_on, tuned_path(directory, tuned_on))
values = tuned.for_optimizer(optimizer)
if not values:
    sys.exit(f"{optimizer}: no tuned values on {tuned_on}")
for preset in presets:
    record_tuned(preset, optimizer, values, tuned.source_of(optimizer),
                 f"transferred from {tuned_on}: its tuned values, not tuned on this preset",
                 directory)
print(f"{optimizer}: {tuned_on}'s values transferred to {', '.join(presets)}")
PY
}

for optimizer in $OPTIMIZERS; do
  out="results/sweeps/$PRESET-$optimizer-tune"
  mkdir -p "$out"
  pids=() status=0
  for n in $(seq 1 "$WORKERS"); do
    $FAMBENCH tune --preset "$PRESET" --optimizer "$optimizer" --studies "$STUDIES" \
      --trials "$TRIALS" --threads 1 --out "$out" --hparams-dir "$HPARAMS_DIR" >> "$out/.worker$n.log" 2>&1 & pids+=($!)
    sleep 5
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  [ $status -eq 0 ] || { echo "a tune worker for $optimizer failed: see $out/.worker*.log"; exit 1; }
  tail -n 3 "$out/$PRESET-$optimizer-trials.md"
  transfer "$optimizer" || exit 1
done
