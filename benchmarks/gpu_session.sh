#!/usr/bin/env bash
# Everything issue 13 measures on a GPU, as one command for a GPU machine that reaches no
# package registry (the machines the device tool lends: torch and torchaudio preinstalled).
# Prepare on a machine that reaches PyPI:   make gpu-wheels      (fills .whl/)
# then run on the GPU machine, carrying .whl:  bash benchmarks/gpu_session.sh
# It installs the wheels into /tmp/site, prints the device, runs the CUDA tests (FAM on the GPU
# against the CPU, with torch's sync debug mode raising on any host synchronisation inside a
# step), `make gpu-check`'s script and the trainer with and without --prefetch, keeping each
# output in $OUT (default gpu-out/). About 5-9 minutes; every part runs even when an earlier
# one fails.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "installing .whl/ failed"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
status=0
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, torchaudio; print('torch', torch.__version__, 'torchaudio',
  torchaudio.__version__, 'cuda', torch.cuda.is_available())"; } 2>&1 | tee "$OUT/device.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/optim/test_fam.py 2>&1 \
  | tee "$OUT/cuda_tests.txt" || status=1
timeout 420 python3 benchmarks/gpu_check.py 2>&1 | tee "$OUT/gpu_check.txt" || status=1
# Whether making batches on a background thread (--prefetch, on by default on a GPU) pays:
# the real trainer on the smoke corpus, each way.
timeout 120 python3 benchmarks/training_throughput.py --preset smoke --steps 200 \
  --optimizers adamw --prefetch both --cache-dir /tmp/fambench-data 2>&1 \
  | tee "$OUT/prefetch.txt" || status=1
exit $status
