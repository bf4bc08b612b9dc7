"""Every benchmark script parses its options: `--help` exits 0 (a clash between a part's options and the
shared ones in bench/common.py fails here, not in the middle of `make bench`). No timing is measured."""

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "common.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bench_script_answers_help(script):
    result = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                            timeout=120, cwd=BENCH.parent)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout.lower()


# ---- the GPU session's scripts: bench/gpu_sweep.py, bench/gpu_real.py, bench/gpu_check.sh, bench_gpu.py's pieces --

def bench_module(name: str):
    """Import a bench script as a module (bench/ is not a package)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def test_the_sweep_has_the_notes_study_shape_and_16_points():
    gpu_sweep = bench_module("gpu_sweep")
    config = gpu_sweep.notes_config()
    assert config["model"]["hidden"] == [100]
    assert config["data"]["train_size"] == 4000 and config["train"]["epochs"] == 5
    sizes = [len(grid.split("=", 1)[1].split(",")) for grid in gpu_sweep.GRID]
    assert sizes[0] * sizes[1] == gpu_sweep.POINTS == 16


def test_sweep_jobs_option_parses_and_refuses_bad_values():
    gpu_sweep = bench_module("gpu_sweep")
    assert gpu_sweep.parse_jobs("1,2,4,8") == [1, 2, 4, 8]
    for bad in ("0", "a,b", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            gpu_sweep.parse_jobs(bad)


def test_sweep_command_carries_device_jobs_and_data_root(tmp_path):
    gpu_sweep = bench_module("gpu_sweep")
    args = argparse.Namespace(python="python3", device="gpu", threads=None, data_root="/data", dry_run=False)
    cmd = gpu_sweep.sweep_command(args, tmp_path / "c.yaml", tmp_path / "runs", 4)
    assert cmd[:4] == ["python3", "-m", "nnrun", "sweep"]
    assert cmd[cmd.index("--device") + 1] == "gpu" and cmd[cmd.index("--jobs") + 1] == "4"
    assert "data.root=/data" in cmd and "--threads" not in cmd and "--dry-run" not in cmd


@pytest.fixture
def small_cifar(tmp_path):
    """A CIFAR-10-format folder large enough for the notes shape (4,000 train + 1,000 val images)."""
    from tests.cifar_fixtures import write_cifar_folder

    return write_cifar_folder(tmp_path / "data", per_batch=1100)


def test_sweep_dry_run_plans_every_jobs_value(small_cifar, tmp_path):
    result = subprocess.run([sys.executable, str(BENCH / "gpu_sweep.py"), "--dry-run", "--cpu", "--jobs", "1,2",
                             "--data-root", str(small_cifar), "--json", str(tmp_path / "s.json")],
                            capture_output=True, text=True, timeout=300, cwd=BENCH.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert [(r["jobs"], r["planned"]) for r in rows] == [(1, 16), (2, 16)]
    assert result.stdout.splitlines()[-1].split()[:1] == ["2"]  # the table is the last output


def test_real_part_dry_run_validates_every_command(small_cifar, tmp_path):
    result = subprocess.run([sys.executable, str(BENCH / "gpu_real.py"), "--dry-run", "--data", str(small_cifar),
                             "--json", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=300, cwd=BENCH.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert [item["item"] for item in report["items"]] == ["warm-up", "bn_dropout", "best", "sweep", "long"]
    long = next(item for item in report["items"] if item["item"] == "long")
    assert "configs/cifar10_long.yaml" in long["command"] and "--device gpu" in long["command"]


def test_real_part_runs_the_long_recipe_over_three_seeds_and_reports_their_mean():
    gpu_real = bench_module("gpu_real")
    specs = gpu_real.item_specs("gpu")
    assert [spec["set"][-1] for name, spec in specs.items() if name in gpu_real.LONG_SEEDS] == \
        ["seed=0", "seed=1", "seed=2"]
    assert all(specs[name]["config"] == "configs/cifar10_long.yaml" for name in gpu_real.LONG_SEEDS)
    items = [{"item": name, "status": "ok", "test_accuracy": acc} for name, acc in
             zip(gpu_real.LONG_SEEDS, (0.64, 0.66, 0.665), strict=True)]
    lines = gpu_real.summary_lines({"device": "gpu", "data": "d", "budget_s": 600, "items": items})
    assert "cifar10_long over 3 seeds: test 65.50% +- 1.32% (target mean >= 65 %: ok)" in lines
    one = gpu_real.summary_lines({"device": "gpu", "data": "d", "budget_s": 600, "items": items[:1]})
    assert not any("over" in line for line in one)           # no mean of a single seed


def test_real_part_without_data_fails_with_its_summary(tmp_path):
    result = subprocess.run([sys.executable, str(BENCH / "gpu_real.py"), "--data", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=BENCH.parent)
    assert result.returncode == 1
    assert "lacks data_batch_1" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("item")  # the (empty) table still ends the output


def test_gpu_check_parses_and_refuses_an_unknown_part():
    script = str(BENCH / "gpu_check.sh")
    assert subprocess.run(["bash", "-n", script], capture_output=True, timeout=60).returncode == 0
    result = subprocess.run(["bash", script, "nope"], capture_output=True, text=True, timeout=60, cwd=BENCH.parent)
    assert result.returncode == 2 and "usage:" in result.stderr


def test_gpu_check_real_part_without_data_still_prints_its_summary(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NNRUN_TEST_CIFAR10"}
    result = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "real"], capture_output=True, text=True,
                            timeout=120, cwd=BENCH.parent, env={**env, "OUT": str(tmp_path), "PYTHON": sys.executable})
    assert result.returncode == 2
    assert result.stdout.splitlines()[-1] == "gpu_real.py: exit 2"
    assert (tmp_path / "real.log").is_file()


def test_bench_gpu_reads_the_step_path_defensively():
    bench_gpu = bench_module("bench_gpu")
    assert bench_gpu.step_path_of(SimpleNamespace(step_path="cuda graph", rows=[])) == "cuda graph"
    assert bench_gpu.step_path_of(SimpleNamespace(rows=[{"step_path": "uncaptured: x"}])) == "uncaptured: x"
    assert bench_gpu.step_path_of(SimpleNamespace(step_path=None, rows=[{"epoch": 1}])) == "?"
    assert bench_gpu.step_path_of(object()) == "?"


def test_bench_gpu_summary_gives_ratios_to_target_and_graph():
    bench_gpu = bench_module("bench_gpu")
    rows = [{"name": "nnrun GPU (fit, default)", "variant": "plain", "seconds": 0.045, "ratio": 0.9,
             "target_ms": 50.0, "step_path": "cuda graph"},
            {"name": "PyTorch + CUDA graph GPU", "variant": "plain", "seconds": 0.05, "ratio": 1.0}]
    checks = [{"name": "nnrun ms", "ok": True}, {"name": "other", "ok": False}]
    lines = bench_gpu.summary_lines("GPU", 5, rows, checks, ["extra line"])
    nnrun_line = next(line for line in lines if line.startswith("nnrun GPU"))
    assert "45.0" in nnrun_line and "0.90x" in nnrun_line and nnrun_line.endswith("cuda graph")
    assert lines[-2] == "extra line" and lines[-1].startswith("targets: 1 of 2 met; MISSED: other")


# ---- the cores part (bench/bench_cores.py) ---------------------------------------------------------------------

def test_cores_part_measures_every_thread_count_on_each_core_count():
    cores = bench_module("bench_cores")
    assert cores.core_counts(None, 16) == [1, 2, 4, 8, 16]
    assert cores.core_counts(None, 6) == [1, 2, 4, 6]
    assert cores.core_counts("16,1,2,99", 16) == [1, 2, 16]  # counts the machine lacks are left out
    assert cores.thread_counts(1) == [1]
    assert cores.thread_counts(2) == [1, 2]
    assert cores.thread_counts(16) == [1, 2, 3, 4, 8, 16]
    assert cores.measuring_order([1, 2, 4, 8, 16]) == [16, 2, 8, 4, 1]  # the targets' core counts first


def test_cores_part_summarizes_the_core_counts_measured_so_far():
    """A run stopped in its first round (a timeout on a lent machine) still gives the rows and checks of the core
    counts it finished, and says how many rounds it finished."""
    cores = bench_module("bench_cores")
    best = {(1, "1"): 4.4, (1, "default"): 4.3, (1, "NumPy"): 4.6, (1, "parallel numba"): 4.4, (1, "products"): 4.0,
            (2, "1"): 4.3, (2, "2"): 2.5, (2, "default"): 2.4, (2, "NumPy"): 2.7, (2, "parallel numba"): 2.6,
            (2, "products"): 2.2, (2, "torch"): 3.0}
    result = cores.summary("cores", "t", [2, 1], (0, 3), best, {1: "1 (x)", 2: "2 (x)"}, 2)
    names = [row["name"] for row in result["rows"]]
    assert names[0] == "1 cores, --threads 1" and "2 cores, PyTorch CPU (2 threads)" in names
    assert not any(name.startswith("1 cores, PyTorch") for name in names)  # no PyTorch figure: no row, no ratio
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["2 cores: nnrun's default epoch / PyTorch's"]["value"] == pytest.approx(0.8)
    assert checks["2 cores: the products' share of nnrun's default epoch"]["value"] == pytest.approx(2.2 / 2.4)
    assert checks["1 cores: default policy / best fixed --threads (1)"]["value"] == pytest.approx(4.3 / 4.4)
    assert result["notes"][-1].startswith("rounds finished: 0 of 3")


def test_cores_part_pins_a_child_to_the_first_cpus():
    cores = bench_module("bench_cores")
    result = subprocess.run([sys.executable, "-c", "import os; print(len(os.sched_getaffinity(0)))"],
                            capture_output=True, text=True, preexec_fn=cores.pinned(1), timeout=60)
    assert result.stdout.strip() == "1"
