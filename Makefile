# Set-up and everyday commands. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run digits test lint format proto bench bench-setup clean

install: $(STAMP)

# torch is pinned to the exact CPU build first, so the project's own "torch" requirement
# is already satisfied and pip never reaches for a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install model_store/digits.mar
	@echo
	@echo "Serving the digits model (examples/digits). Once it is ready, try from another shell:"
	@echo "  curl -X POST http://127.0.0.1:8080/predictions/digits -T examples/digits/sample_7.png"
	@echo
	$(PY) -m serve --config serve.yaml

# The bundled example: train the digits CNN (a few seconds, no download) and archive it with
# our archiver. Rebuilt only when its sources change.
DIGITS_SOURCES := $(wildcard examples/digits/*.py) examples/digits/model-config.yaml \
	examples/digits/index_to_name.json

digits: model_store/digits.mar

model_store/digits.mar: $(DIGITS_SOURCES) | $(STAMP)
	$(PY) examples/digits/train.py --out-dir build/digits
	@mkdir -p model_store
	$(PY) -m serve.archiver --model-name digits --version 1.0 \
		--model-file examples/digits/model.py --serialized-file build/digits/digits.pt \
		--handler image_classifier --extra-files examples/digits/index_to_name.json \
		--config-file examples/digits/model-config.yaml --export-path model_store --force

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: install run digits test lint format proto bench bench-setup clean

clean:
	rm -rf $(VENV) model_store build .pytest_cache .mypy_cache .ruff_cache
