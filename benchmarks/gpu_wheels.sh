#!/usr/bin/env bash
# Fetch, on a machine that reaches PyPI, the wheels benchmarks/gpu_session.sh installs on a GPU
# machine that reaches no package registry: the dependencies of fambench its image lacks (it has
# torch, torchaudio, pandas, pyarrow, matplotlib, scipy, typer, rich, sentencepiece, psutil,
# pytest), built for CPython 3.12 on x86-64 Linux, at the versions of this checkout's .venv where
# it has them. They land in .whl/ (ignored by git; the device tool carries it).
set -euo pipefail
PACKAGES="jiwer rapidfuzz soundfile cffi pycparser espeakng-loader optuna alembic sqlalchemy mako colorlog
  schedulefree pytorch-optimizer submitit cloudpickle"
pins=()
for name in $PACKAGES; do
  version=$(.venv/bin/python -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
  pins+=("$name${version:+==$version}")
done
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "${pins[@]}"
echo "$(ls .whl | wc -l) wheels in .whl/ ($(du -sh .whl | cut -f1)): ${pins[*]}"
