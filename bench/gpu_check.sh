#!/usr/bin/env bash
# The GPU checks in one prepared run, for a machine with an NVIDIA GPU and CuPy (short-lived lent machines
# included): the GPU tests (tests/test_gpu.py, and tests/test_backend.py there too), then the GPU benchmark
# part (bench/bench_gpu.py: nnrun vs PyTorch eager on the same GPU, the GEMM peak, the 20-epoch run; with
# $NNRUN_TEST_CIFAR10 set, on the real data against the CPU run). Outputs go to $OUT (else bench/results):
# gpu.txt (the card), gpu_tests.log, gpu_bench.log and gpu_bench.json.
#
# Run from the repository root: bash bench/gpu_check.sh. Packages missing there (pydantic, on an image
# that has NumPy, SciPy, CuPy and PyTorch but not nnrun's other dependencies) travel as wheels in .whl/,
# fetched here with `make gpu-wheels`; they are installed into /tmp/site first.
set -uo pipefail
out=${OUT:-bench/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  "$python" -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)" 2>&1; } \
    | tee "$out/gpu.txt"
timeout 300 "$python" -m pytest -q -p no:cacheprovider -o addopts="" tests/test_gpu.py tests/test_backend.py \
    2>&1 | tee "$out/gpu_tests.log"
tests=${PIPESTATUS[0]}
timeout 420 "$python" bench/bench_gpu.py --json "$out/gpu_bench.json" 2>&1 | tee "$out/gpu_bench.log"
bench=${PIPESTATUS[0]}
echo "gpu_check: tests exit $tests, bench exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
