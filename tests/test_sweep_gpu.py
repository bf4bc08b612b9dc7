"""Several sweep and study runs on one GPU, without a GPU: the fake CuPy of tests/fake_cupy.py in this process
(the sweep's checks) and, for the spawned workers, a `cupy` package on their path that turns itself into one.

What is checked: GPU runs get one BLAS thread and may outnumber the cores; their memory estimate is the one a
run checks itself against; `--jobs` GPU runs must fit the GPU's free memory (exit 2 with the figures and the
largest --jobs that fits, nothing written); each worker caps CuPy's pool at its share."""

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from nnrun.config import validate_config
from nnrun.errors import UserInputError
from nnrun.experiment import (
    MEMORY_SHARE,
    build_loss,
    gpu_bytes,
    load_data,
    prepare_data,
    preprocessed_width,
    select_targets,
)
from nnrun.resources import human_bytes
from nnrun.sweep import gpu as sweep_gpu
from nnrun.sweep.gpu import CONTEXT_BYTES, threads_by_device
from nnrun.sweep.plan import plan_sweep
from nnrun.workers import thread_budget
from tests import fake_cupy
from tests.helpers import invoke

REPO = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "seed": 0, "data": {"dataset": "digits"}, "model": {"hidden": [8]},
        "optim": {"name": "momentum", "lr": 0.05}, "train": {"epochs": 2, "batch_size": 128}}
GRID = ["--grid", "optim.lr=0.02,0.05", "--grid", "regularization.l2=0,1e-4"]
ROOMY = 8 << 30
"""Free bytes of a fake GPU on which tiny runs fit many at a time."""

SHIM = '''"""A fake CuPy for spawned test workers: tests/fake_cupy.py's module, with a default memory pool."""
import sys

sys.path.insert(0, {repo!r})
from tests.fake_cupy import make_module  # noqa: E402


class _Pool:
    def __init__(self):
        self.limit = 0

    def set_limit(self, size=None, fraction=None):
        self.limit = int(size)

    def get_limit(self):
        return self.limit

    def free_all_blocks(self):
        pass


_pool = _Pool()
module = make_module(free_bytes={free})
module.get_default_memory_pool = lambda: _pool
sys.modules[__name__] = module
'''


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture
def fake_gpu(tmp_path, monkeypatch):
    """`fake_gpu(free_bytes)`: a fake GPU with that much free memory, for this process and its spawned workers."""
    def install(free_bytes: int):
        shim = tmp_path / "fake-cupy"
        (shim / "cupy").mkdir(parents=True)
        (shim / "cupy" / "__init__.py").write_text(SHIM.format(repo=str(REPO), free=free_bytes))
        # spawned workers start with PYTHONPATH, then take over this process's sys.path: give them both
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(shim), str(REPO), os.environ.get("PYTHONPATH", "")]))
        monkeypatch.syspath_prepend(str(shim))
        return fake_cupy.install(monkeypatch, free_bytes=free_bytes)
    return install


# ---- threads ------------------------------------------------------------------------------------------

def test_gpu_runs_take_one_thread_and_may_outnumber_the_cores_while_cpu_rules_stay():
    assert thread_budget(4, None, cores=2, gpu=True) == 1
    assert thread_budget(8, None, cores=16, gpu=True) == 1
    assert thread_budget(4, 1, cores=2, gpu=True) == 1
    assert thread_budget(2, 4, cores=16, gpu=True) == 4
    with pytest.raises(UserInputError, match="--jobs 4 x --threads 2 exceeds the 2 CPU cores.*leave --threads out"):
        thread_budget(4, 2, cores=2, gpu=True)
    assert thread_budget(8, None, cores=16) == 2                   # CPU runs: unchanged
    with pytest.raises(UserInputError, match="use at most --jobs 2"):
        thread_budget(4, None, cores=2)


def test_a_sweep_with_any_cpu_point_keeps_the_cpu_rule(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr("nnrun.workers.available_cores", lambda: 2)
    gpu_only = plan_sweep(tiny_config, overrides=["train.device=gpu"], grid=["optim.lr=0.01,0.02"],
                          runs_dir=tmp_path)
    assert threads_by_device(gpu_only.points, 4, None) == {"gpu": 1}
    mixed = plan_sweep(tiny_config, grid=["train.device=cpu,gpu"], runs_dir=tmp_path)
    assert threads_by_device(mixed.points, 2, None) == {"cpu": 1, "gpu": 1}
    with pytest.raises(UserInputError, match="exceeds the 2 CPU cores"):
        threads_by_device(mixed.points, 4, None)


# ---- the memory estimate ----------------------------------------------------------------------------------

@pytest.mark.parametrize("preprocess", [{}, {"pca": 20}, {"pca": 20, "whiten": True}, {"pca": 20, "whiten": "zca"}])
def test_the_sweep_sizes_a_run_before_it_starts_as_the_run_checks_itself(preprocess):
    cfg = validate_config({**TINY, "preprocess": preprocess, "model": {"hidden": [32, 16], "batchnorm": True}})
    prepared = prepare_data(cfg)
    data = select_targets(load_data(cfg), cfg.loss)
    before = gpu_bytes(cfg, data, build_loss(cfg.loss, data), preprocessed_width(cfg.preprocess, data.n_features))
    assert before == gpu_bytes(cfg, prepared.data, prepared.loss)


# ---- running on the GPU -----------------------------------------------------------------------------------

def saved_config(run_dir: str) -> dict:
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text())


def test_four_gpu_points_run_two_at_a_time_each_worker_capped_at_its_share(fake_gpu, tiny_config, tmp_path):
    fake_gpu(ROOMY)
    runs_dir = tmp_path / "runs"
    result = invoke("sweep", tiny_config, *GRID, "--device", "gpu", "--jobs", 2, "--runs-dir", runs_dir, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["points"], report["completed"], report["failed"]) == (4, 4, 0)
    share = int(MEMORY_SHARE * ROOMY) // 2 - CONTEXT_BYTES
    assert report["gpu"]["runs_at_once"] == 2 and report["gpu"]["pool_limit_bytes"] == share
    assert 0 < report["gpu"]["largest_run_bytes"] < share
    for run in report["runs"]:
        assert run["status"] == "completed" and run["summary"]["val_accuracy"] > 0.3
        assert saved_config(run["run_dir"])["train"]["device"] == "gpu"
        assert run["gpu_pool_bytes"] == share
        assert run["blas_threads"] in (None, 1)
    assert any(run["blas_threads"] == 1 for run in report["runs"])


def test_a_gpu_worker_uses_one_blas_thread_by_default(fake_gpu, tiny_config, tmp_path):
    fake_gpu(ROOMY)
    result = invoke("sweep", tiny_config, "--device", "gpu", "--runs-dir", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)["runs"]
    assert run["blas_threads"] == 1            # a CPU run with --jobs 1 gets every core
    assert run["gpu_pool_bytes"] == int(MEMORY_SHARE * ROOMY) - CONTEXT_BYTES


@pytest.mark.parametrize("free, advice", [(1 << 30, "use at most --jobs 1"), (64 << 20, "even one run does not fit")])
def test_gpu_runs_that_do_not_fit_the_free_memory_are_refused_before_anything_runs(fake_gpu, tiny_config, tmp_path,
                                                                                   free, advice):
    fake_gpu(free)
    runs_dir = tmp_path / "runs"
    result = invoke("sweep", tiny_config, *GRID, "--device", "gpu", "--jobs", 4, "--runs-dir", runs_dir)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "Traceback" not in result.output and result.stdout == ""
    assert "4 GPU runs at once (--jobs 4) need about 4 x" in message
    assert f"the GPU has {free / (1 << 30):.1f} GiB free" in message or f"{free >> 20:.1f} MiB free" in message
    assert f"{human_bytes(CONTEXT_BYTES)} for its worker's CUDA context" in message and advice in message
    assert not runs_dir.exists()


def test_a_gpu_sweep_without_cupy_is_refused_with_the_install_command(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)             # `import cupy` fails as it does without CuPy
    result = invoke("sweep", tiny_config, "--device", "gpu", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "pip install 'nnrun[gpu]'" in result.output
    assert not (tmp_path / "runs").exists()


def test_cupy_is_not_imported_for_a_cpu_sweep(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(sweep_gpu, "estimates", lambda points: pytest.fail("a CPU sweep sized GPU runs"))
    plan = plan_sweep(tiny_config, grid=["optim.lr=0.01,0.02"], runs_dir=tmp_path)
    assert sweep_gpu.gpu_budget(plan.points, 2) is None


# ---- a study on the GPU --------------------------------------------------------------------------------------

STUDY = {"name": "tiny", "base": {"data": {"dataset": "digits"}, "model": {"hidden": [8]},
                                  "train": {"epochs": 2, "batch_size": 128}},
         "budgets": {"quick": {"seeds": 2, "max_minutes": 10}},
         "claims": [{"id": "c", "statement": "s", "metric": "test_accuracy",
                     "arms": {"a": {"model.init": "zeros"}, "b": {}},
                     "expect": [{"a": "b", "relation": "greater", "b": "a"}]}]}


@pytest.fixture
def no_estimate(monkeypatch):
    """No time estimate (its calibration takes seconds, and tests/test_study.py checks it)."""
    monkeypatch.setattr("nnrun.study.run.estimate", lambda plan, jobs, threads: None)


def test_a_study_runs_its_arms_on_the_gpu_two_at_a_time(fake_gpu, no_estimate, tmp_path):
    fake_gpu(ROOMY)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    result = invoke("study", path, "--out", tmp_path / "out", "--device", "gpu", "--jobs", 2, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["runs"]["trained_now"] == 4 and report["threads_per_run"] == 1
    run_dirs = list((tmp_path / "out" / "runs").iterdir())
    assert len(run_dirs) == 4 and all(saved_config(d)["train"]["device"] == "gpu" for d in run_dirs)


def test_a_study_whose_gpu_runs_do_not_fit_is_refused_before_anything_is_written(fake_gpu, no_estimate,
                                                                                   tmp_path):
    fake_gpu(1 << 30)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    result = invoke("study", path, "--out", tmp_path / "out", "--device", "gpu", "--jobs", 2)
    assert result.exit_code == 2, result.output
    assert "use at most --jobs 1" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
