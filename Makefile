# trajden: two entry points, each bootstraps the pinned environment in .venv when missing.
#   make demo   process the bundled LAMMPS example with the shipped model (defaults: in-process for this small input),
#               after compiling the model's layers for this machine's CPU (once; trajden models --compile)
#   make test   lint + test suite
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
DEMO_STORE ?= demo.zarr

.PHONY: demo test test-slow env clean-env

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU wheel of torch unless a torch is already in the venv (GPU users: install a CUDA torch first)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c requirements-lock.txt -e ".[test,pipelines]"
	touch $@

demo: env
	# the default model's layers compiled for this CPU (once per machine, about a minute; then milliseconds)
	$(BIN)/trajden models --compile
	$(BIN)/trajden process trajden/data/cu_solidification.dump --timestep 0.002 --out $(DEMO_STORE)
	$(BIN)/trajden fractions $(DEMO_STORE)

test: env
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: env
	$(BIN)/python -m pytest -q -m slow

clean-env:
	rm -rf $(VENV)
