# Set-up and everyday commands. Every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint fuzz bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Runtime install (re-done when pyproject.toml changes).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

# Development install: runtime + test and lint tools + the optional Dask executor.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[dev,dask]"
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/nnrun train configs/quickstart.yaml

# ruff, then the import-linter contracts of pyproject.toml (layers, no cycles).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check nnrun tests bench
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# Thousands of generated configs, command lines and corrupted data files (fixed seed; tests/test_fuzz.py).
fuzz: $(VENV)/.installed-dev
	NNRUN_FUZZ_PROFILE=fuzz $(BIN)/pytest tests/test_fuzz.py --hypothesis-show-statistics

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache runs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
