#!/usr/bin/env bash
# The GPU checks for a machine with an NVIDIA GPU and CuPy (short-lived lent machines included), in three parts
# that each fit one short call and never stop at a failed item (it is recorded, the next one runs):
#
#   bash bench/gpu_check.sh tests   gpu.txt (the card, driver, memory, library versions, nnrun's imports) and the
#                                   GPU tests, tests/test_gpu.py and tests/test_backend.py (timeout 240 s): tests.log
#   bash bench/gpu_check.sh bench   bench/bench_gpu.py on synthetic data (nnrun with and without its CUDA graph
#                                   against PyTorch eager and PyTorch + CUDA graph, the GEMM peak, the 20-epoch
#                                   run's training time; timeout 200 s): bench.log, bench.json
#   bash bench/gpu_check.sh real    with NNRUN_TEST_CIFAR10 naming the cifar-10-batches-py folder,
#                                   bench/gpu_real.py: cifar10_bn_dropout 20 epochs, cifar10_best, the sweep
#                                   throughput (bench/gpu_sweep.py), cifar10_long 100 epochs, each with its own
#                                   timeout, all in $NNRUN_REAL_BUDGET seconds (default 300): real.log, real.json
#   bash bench/gpu_check.sh recipes configs/cifar10_long.yaml to the end with seeds 0, 1 and 2 (bench/gpu_real.py
#                                   --items long,long-s1,long-s2), in $NNRUN_RECIPES_BUDGET seconds (default 600):
#                                   the recipe's three-seed mean; recipes.log, recipes.json
#   bash bench/gpu_check.sh cores   the thread table of issue-sized CPU work, no GPU needed: bench/bench_cores.py
#                                   at 1, 2, 4, 8 and 16 cores (taskset-style pinning), plain then with BatchNorm
#                                   and dropout (timeout $NNRUN_CORES_BUDGET seconds each, default 280; a timeout
#                                   keeps every core count measured by then): cores.log, cores.json,
#                                   cores-bn-dropout.json. numba's wheels (62 MB, `make cores-wheels`)
#                                   travel alone in .whl-numba/ in a call before it: that call's `bash
#                                   bench/gpu_check.sh cores-install` puts them into /tmp/site
#   bash bench/gpu_check.sh study   with NNRUN_TEST_CIFAR10 set: the notes' claims study at its standard budget on
#                                   the GPU (nnrun study studies/notes.yaml --budget standard --device gpu, --jobs
#                                   $NNRUN_STUDY_JOBS, default 4), for $NNRUN_STUDY_BUDGET seconds (default 540),
#                                   then stopped by SIGTERM: its runs save their state in /tmp/notes-standard, and
#                                   the same part, called again on the warm machine, goes on where it stopped;
#                                   the call that finishes it writes the report. $NNRUN_STUDY_ONLY (ID,...) limits
#                                   the claims, $NNRUN_STUDY_DEVICE (default gpu) the device. study.log, and the
#                                   report, study.json, sessions.json and figures in notes-standard/
#   bash bench/gpu_check.sh         tests, bench and real in order (make gpu-check)
#
# Outputs go to $OUT (else bench/results). Each part ends with a short summary table. Run from the repository
# root. Packages missing there (pydantic, on an image that has NumPy, SciPy, CuPy and PyTorch but not nnrun's
# other dependencies) travel as wheels in .whl/, fetched here with `make gpu-wheels`; they are installed into
# /tmp/site first.
set -uo pipefail
part=${1:-all}
case "$part" in
    tests|bench|real|recipes|cores|cores-install|study|all) ;;
    *) echo "usage: bash bench/gpu_check.sh [tests|bench|real|recipes|cores|cores-install|study|all]" >&2; exit 2 ;;
esac
out=${OUT:-bench/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
summaries=$(mktemp -d)
trap 'rm -rf "$summaries"' EXIT

wheels=.whl
[ "$part" = cores-install ] && wheels=.whl-numba
if compgen -G "$wheels/*.whl" > /dev/null; then
    if "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$wheels"/*.whl; then
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
    else
        echo "gpu_check: installing the wheels of $wheels/ failed; going on without them"
    fi
elif [ -d /tmp/site ]; then  # installed by an earlier part on this machine (the parts may run as separate calls)
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

# The last line of a pytest log that counts tests ("3 passed, 1 skipped in 2.1s"), or "-".
pytest_counts() {
    local line
    line=$(grep -E '[0-9]+ (passed|failed|error|errors|skipped|deselected)|no tests ran' "$1" 2>/dev/null | tail -n 1)
    echo "${line:--}" | sed -e 's/^=* *//' -e 's/ *=*$//'
}

run_tests() {
    echo "== gpu_check tests: the card, versions, then pytest tests/test_gpu.py tests/test_backend.py"
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1 \
            || echo "nvidia-smi failed"
        "$python" - <<'EOF' 2>&1
import importlib, platform
print("python", platform.python_version())
for name in ("numpy", "cupy", "torch", "scipy"):
    try:
        module = importlib.import_module(name)
        extra = ""
        if name == "torch":
            extra = f" (cuda {module.version.cuda}, available {module.cuda.is_available()})"
        if name == "cupy":
            try:
                extra = f" (CUDA runtime {module.cuda.runtime.runtimeGetVersion()}, devices {module.cuda.runtime.getDeviceCount()})"
            except Exception as e:
                extra = f" (no device: {e})"
        print(name, module.__version__ + extra)
    except Exception as e:
        print(name, "NOT IMPORTABLE:", type(e).__name__, e)
missing = []
for name in ("pydantic", "typer", "rich", "yaml", "threadpoolctl", "sklearn", "PIL", "filelock", "matplotlib",
             "pytest"):
    try:
        importlib.import_module(name)
    except Exception:
        missing.append(name)
print("missing modules:", ", ".join(missing) or "none")
try:
    import nnrun.cli  # noqa: F401
    print("nnrun.cli imports: ok")
except Exception as e:
    print("nnrun.cli imports: FAILED:", type(e).__name__, e)
EOF
    } | tee "$out/gpu.txt"
    # Without NNRUN_TEST_CIFAR10: the copy may still be arriving, and these tests use synthetic data.
    env -u NNRUN_TEST_CIFAR10 timeout 240 "$python" -m pytest -q -rfE -p no:cacheprovider -o addopts="" \
        tests/test_gpu.py tests/test_backend.py 2>&1 | tee "$out/tests.log"
    local rc=${PIPESTATUS[0]}
    {
        echo "---- gpu_check tests: summary"
        echo "gpu:      $(awk '/^name, driver_version/ { getline; print; found = 1; exit } END { if (!found) print "? (see gpu.txt)" }' "$out/gpu.txt")"
        grep -E '^(cupy|torch|numpy) ' "$out/gpu.txt" | sed 's/^/version:  /'
        grep -E '^(missing modules|nnrun.cli imports):' "$out/gpu.txt"
        echo "pytest:   $(pytest_counts "$out/tests.log") (exit $rc$([ "$rc" -eq 124 ] && echo ', timed out'))"
    } > "$summaries/tests"
    cat "$summaries/tests"
    return "$rc"
}

run_bench() {
    echo "== gpu_check bench: bench/bench_gpu.py on synthetic data"
    # Synthetic rows only: the real-data runs are the real part's.
    env -u NNRUN_TEST_CIFAR10 timeout 200 "$python" bench/bench_gpu.py --json "$out/bench.json" 2>&1 \
        | tee "$out/bench.log"
    local rc=${PIPESTATUS[0]}
    {
        echo "---- gpu_check bench: summary"
        # bench_gpu.py's own plain summary: from its "summary:" line to the end of its output.
        sed -n '/^summary: /,$p' "$out/bench.log" | tail -n 30
        echo "bench_gpu.py: exit $rc$([ "$rc" -eq 124 ] && echo ', timed out')"
    } > "$summaries/bench"
    cat "$summaries/bench"
    return "$rc"
}

# run_real [NAME ITEMS BUDGET]: bench/gpu_real.py's ITEMS (default: its own list) into NAME.log and NAME.json.
run_real() {
    local name=${1:-real} items=${2:-} budget=${3:-${NNRUN_REAL_BUDGET:-300}} data=${NNRUN_TEST_CIFAR10:-}
    echo "== gpu_check $name: bench/gpu_real.py ${items:+--items $items }on ${data:-(NNRUN_TEST_CIFAR10 not set)}, budget $budget s"
    local rc
    if [ -z "$data" ]; then
        echo "NNRUN_TEST_CIFAR10 is not set: nothing to run on the real data" | tee "$out/$name.log"
        rc=2
    else
        # shellcheck disable=SC2012  # a listing for the log, not parsed
        ls -l "$data" 2>&1 | tee "$out/$name.log"
        # Its progress lines (stderr) to the console, its summary (stdout) to the log with the commands' output
        # (both append).
        # shellcheck disable=SC2094
        timeout $((budget + 90)) "$python" bench/gpu_real.py --data "$data" --budget "$budget" \
            ${items:+--items "$items"} --log "$out/$name.log" --json "$out/$name.json" >> "$out/$name.log"
        rc=$?
    fi
    {
        echo "---- gpu_check $name: summary"
        if grep -q '^real-data summary' "$out/$name.log"; then
            sed -n '/^real-data summary/,$p' "$out/$name.log" | tail -n 30
        elif [ -f "$out/$name.json" ]; then  # cut off before its table: the items it had written
            "$python" -c 'import json, sys
for item in json.load(open(sys.argv[1]))["items"]:
    print(item.get("item"), item.get("status"), "wall", item.get("wall_s"), "test", item.get("test_accuracy"))' \
                "$out/$name.json" 2>&1
        fi
        echo "gpu_real.py: exit $rc$([ "$rc" -eq 124 ] && echo ', timed out')"
    } > "$summaries/$name"
    cat "$summaries/$name"
    return "$rc"
}

run_cores() {
    echo "== gpu_check cores: bench/bench_cores.py at 1, 2, 4, 8, 16 cores, plain and BatchNorm + dropout"
    NNRUN_NUMBA=1 "$python" -c 'from nnrun import cpu_kernels; print("numba kernels loadable:", cpu_kernels.active())' \
        2>&1 \
        | tee "$out/cores.log"
    local rc=0 variant
    for variant in plain bn-dropout; do
        local name=cores$([ "$variant" = plain ] || echo "-$variant")
        timeout "${NNRUN_CORES_BUDGET:-280}" "$python" bench/bench_cores.py --cores 1,2,4,8,16 --repeats 2 \
            --variant "$variant" --json "$out/$name.json" >> "$out/cores.log" 2>&1 || rc=$?
    done
    grep -v '^\[cores' "$out/cores.log" | tail -n 80 > "$summaries/cores"
    cat "$summaries/cores"
    echo "bench_cores.py: exit $rc$([ "$rc" -eq 124 ] && echo ', timed out')"
    return "$rc"
}

run_study() {
    local data=${NNRUN_TEST_CIFAR10:-} dir=${NNRUN_STUDY_DIR:-/tmp/notes-standard} rc
    echo "== gpu_check study: studies/notes.yaml, budget standard, on ${NNRUN_STUDY_DEVICE:-gpu}, resumable in $dir"
    if [ -z "$data" ]; then
        echo "NNRUN_TEST_CIFAR10 is not set: nothing to run on the real data" | tee "$out/study.log"
        return 2
    fi
    # SIGTERM at the budget: the runs in progress save their checkpoints and the next call resumes them.
    timeout --signal=TERM --kill-after=60 "${NNRUN_STUDY_BUDGET:-540}" "$python" -m nnrun study studies/notes.yaml \
        --budget standard --device "${NNRUN_STUDY_DEVICE:-gpu}" --jobs "${NNRUN_STUDY_JOBS:-4}" --threads 1 \
        --set data.root="$(dirname "$data")" --out "$dir" --quiet ${NNRUN_STUDY_ONLY:+--only "$NNRUN_STUDY_ONLY"} \
        > "$out/study.log" 2>&1
    rc=$?
    mkdir -p "$out/notes-standard"
    cp -r "$dir"/report.md "$dir"/study.json "$dir"/sessions.json "$dir"/figures "$out/notes-standard/" 2>/dev/null
    {
        echo "---- gpu_check study: summary"
        tail -n 5 "$out/study.log"
        echo "runs with a summary: $(find "$dir/runs" -name summary.json 2>/dev/null | wc -l)"
        if [ -f "$out/notes-standard/study.json" ]; then
            "$python" -c 'import json, sys
report = json.load(open(sys.argv[1]))
for claim in report["claims"]:
    print(claim["id"].ljust(30), claim["verdict"])' "$out/notes-standard/study.json" 2>&1
        fi
        echo "nnrun study: exit $rc$([ "$rc" -eq 124 ] && echo ', stopped at the budget: call the part again to go on')"
    } > "$summaries/study"
    cat "$summaries/study"
    return "$rc"
}

status=0
case "$part" in
    cores-install) "$python" -c 'import numba; print("numba", numba.__version__)' || status=$? ;;
    cores) run_cores || status=$? ;;
    study) run_study || status=$? ;;
    tests) run_tests || status=$? ;;
    bench) run_bench || status=$? ;;
    real) run_real || status=$? ;;
    recipes) run_real recipes long,long-s1,long-s2 "${NNRUN_RECIPES_BUDGET:-600}" || status=$? ;;
    all)
        run_tests; tests=$?
        run_bench; bench=$?
        run_real; real=$?
        echo "==== gpu_check: all parts"
        cat "$summaries/tests" "$summaries/bench" "$summaries/real"
        echo "gpu_check: tests exit $tests, bench exit $bench, real exit $real"
        [ "$tests" -eq 0 ] && [ "$bench" -eq 0 ] && [ "$real" -eq 0 ] || status=1
        ;;
esac
exit "$status"
