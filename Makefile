# Set-up and everyday commands. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint format proto bench bench-setup clean

install: $(STAMP)

# torch is pinned to the exact CPU build first, so the project's own "torch" requirement
# is already satisfied and pip never reaches for a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(PY) -m serve --config serve.yaml

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# TorchServe 0.12 gets its own venv (its top-level `ts` package would shadow ours). torch comes
# first, pinned to the CPU build, for the same reason as above.
TS_VENV := benchmarks/.venv-torchserve
TS_STAMP := $(TS_VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
BENCH_ARGS ?=

bench-setup: $(TS_STAMP) $(BENCH_STAMP)

$(TS_STAMP):
	$(PYTHON) -m venv $(TS_VENV)
	$(TS_VENV)/bin/pip install --quiet torch==2.13.0
	$(TS_VENV)/bin/pip install --quiet torchserve==0.12.0 torch-model-archiver==0.12.0 pyyaml numpy pillow
	touch $@

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

# The default matrix (about 15 minutes); e.g. `make bench BENCH_ARGS="--suite quick"`.
# wrk drives the load when installed (apt-get install wrk), else the built-in asyncio client.
bench: install bench-setup
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) model_store .pytest_cache .mypy_cache .ruff_cache
