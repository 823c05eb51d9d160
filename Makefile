# Set-up and everyday commands. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint format proto bench clean

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

# gRPC code from proto/ (betterproto2, grpclib client + server), committed under serve/grpc/gen;
# tests/test_proto_fresh.py fails when it is stale. The protoc plugin lives in the venv's bin.
proto: install
	rm -rf serve/grpc/gen
	mkdir -p serve/grpc/gen
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m grpc_tools.protoc -I proto \
		--python_betterproto2_out=serve/grpc/gen \
		--python_betterproto2_opt=client_generation=async,server_generation=async \
		proto/inference.proto proto/management.proto

clean:
	rm -rf $(VENV) model_store .pytest_cache .mypy_cache .ruff_cache
