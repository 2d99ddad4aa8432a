# fambench: `make run` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint run benchmark bench-optim bench-data bench-train gpu-check gpu-wheels clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -c "import torch, torchaudio" || { echo "error: torch/torchaudio do not load together; see docs/installing.md"; exit 1; }
	touch $(STAMP)

# Two test processes per two cores (tests train with one torch thread each).
test: install
	$(BIN)/pytest -n auto

# The tests that neither train nor start processes (markers: pyproject.toml): a quick loop.
test-fast: install
	$(BIN)/pytest -n auto -m "not slow" --durations=5

lint: install
	$(BIN)/ruff check fambench tests benchmarks
	$(BIN)/ruff format --check fambench tests benchmarks

run: install
	$(BIN)/fambench run --optimizer fam

# The CI-sized comparison: every optimizer, two seeds, the `ci` preset. Two grids of one thread
# each share the two cores (more throughput than one two-thread grid: docs/tuning.md), then one
# report covers all their runs. Their timings come from runs sharing the machine: not
# measurements.
BENCH = $(BIN)/fambench bench --preset ci --seeds 2 --threads 1 --out results/ci
benchmark: install
	$(BENCH) --optimizers fam,fam-fixed & first=$$!; \
	$(BENCH) --optimizers adamw,sgd; second=$$?; \
	wait $$first; first=$$?; \
	test $$first -eq 0 && test $$second -eq 0
	$(BIN)/fambench report results/ci

bench-optim: install
	$(BIN)/python benchmarks/optimizer_step.py

bench-data: install
	$(BIN)/python benchmarks/data_pipeline.py

bench-train: install
	$(BIN)/python benchmarks/training_throughput.py

# On a machine with one CUDA GPU: throughput, memory, phase shares and host syncs per optimizer.
# It runs with that machine's own Python and CUDA torch (no .venv: the CPU wheels pinned here
# are not what a GPU machine wants); `pip install --no-deps -e .` and the missing pure-Python
# dependencies first.
gpu-check:
	PYTHONPATH=$(CURDIR) $(PYTHON) benchmarks/gpu_check.py

# Wheels for a GPU machine without a package registry: see benchmarks/gpu_session.sh.
gpu-wheels: install
	bash benchmarks/gpu_wheels.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
