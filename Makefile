# Set-up and everyday commands. Every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint fuzz bench gpu-check gpu-wheels cores-wheels kernel-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Runtime install (re-done when pyproject.toml changes), with numba for the compiled element-wise kernels
# (nnrun/cpu_kernels.py). Where numba has no wheel for this Python or platform, nnrun installs without it and
# runs the same steps in NumPy, to the same bytes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[numba]" || { echo "numba did not install: the element-wise work runs in NumPy"; $(PIP) install -e .; }
	touch $@

# Development install: runtime + test and lint tools + the optional Dask and SLURM (submitit) executors,
# Optuna search (sweep --search, --prune) and numba (the compiled CPU kernels, tested bit for bit against NumPy).
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[dev,dask,slurm,search,numba]"
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/nnrun train configs/quickstart.yaml

# ruff, then the import-linter contracts of pyproject.toml (layers, no cycles).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check nnrun tests bench
	$(BIN)/lint-imports

# The suite on every core (pytest-xdist, one worker per CPU): 2 workers take it from about 390 s to 220 s on
# 2 cores. In-process tests use one BLAS thread each (tests/conftest.py); runs in subprocesses share the cores
# by nnrun's own thread policy, as on any busy machine.
test: lint
	$(BIN)/pytest -n auto

# Thousands of generated configs, command lines and corrupted data files (fixed seed; tests/test_fuzz.py).
fuzz: $(VENV)/.installed-dev
	NNRUN_FUZZ_PROFILE=fuzz $(BIN)/pytest tests/test_fuzz.py --hypothesis-show-statistics

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run_all.py

# On a machine with an NVIDIA GPU and CuPy (pip install -e ".[gpu]"): the GPU tests and the GPU benchmark.
gpu-check: $(VENV)/.installed-dev
	PYTHON=$(BIN)/python bash bench/gpu_check.sh

# Wheels of the dependencies a GPU image with NumPy, SciPy, CuPy and PyTorch lacks (Python 3.12, x86-64),
# into .whl/ (git-ignored) for bench/gpu_check.sh to install there.
GPU_WHEELS := pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
gpu-wheels: | $(BIN)/python
	$(PIP) download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		--platform any -d .whl $(GPU_WHEELS)

# numba and llvmlite for the 16-core thread table on the lent GPU machine (bench/gpu_check.sh cores-install).
cores-wheels: | $(BIN)/python
	$(PIP) download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl-numba numba==0.68.1 llvmlite==0.50.0

# Compile every GPU kernel with CuPy's own code generator and NVRTC for an H200 (sm_90), no GPU needed. In an
# environment of its own: CuPy with its CUDA toolkit wheels is large, and nnrun's venv never needs it.
KERNEL_VENV ?= .venv-kernels
kernel-check:
	test -x $(KERNEL_VENV)/bin/python || $(PYTHON) -m venv $(KERNEL_VENV)
	$(KERNEL_VENV)/bin/python -m pip --disable-pip-version-check -q install "cupy-cuda13x[ctk]==14.2.0"
	$(KERNEL_VENV)/bin/python bench/kernel_check/compile_kernels.py .

clean:
	rm -rf $(VENV) $(KERNEL_VENV) build *.egg-info .pytest_cache .ruff_cache runs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
