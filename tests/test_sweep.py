"""Sweeps: grid and random expansion, planning, resuming, failures, executors and exit codes."""

import csv
import io
import json
import math
import sys

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.errors import UserInputError
from nnrun.sweep.plan import config_hash, plan_sweep
from nnrun.sweep.space import Distribution, expand_points, parse_distribution, parse_grid, parse_space
from nnrun.workers import available_cores, thread_budget

runner = CliRunner()
TINY = {"name": "tiny", "seed": 0, "data": {"dataset": "digits"}, "model": {"hidden": [8]},
        "optim": {"name": "momentum", "lr": 0.05}, "train": {"epochs": 2, "batch_size": 128}}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


# --- parsing and expansion ---------------------------------------------------------------


def test_parse_grid_reads_numbers_lists_and_names():
    grid = parse_grid(["optim.lr=1e-3,1e-2,0.1", "model.hidden=[8],[16, 8]", "optim.name=sgd,momentum",
                       "regularization.l2=0,1e-4"])
    assert grid == {"optim.lr": [0.001, 0.01, 0.1], "model.hidden": [[8], [16, 8]],
                    "optim.name": ["sgd", "momentum"], "regularization.l2": [0, 0.0001]}
    assert all(isinstance(v, float) for v in grid["optim.lr"])


@pytest.mark.parametrize("bad", ["optim.lr", "=1,2", "optim.lr=", "optim..lr=1", "optim.lr=1,,2"])
def test_parse_grid_rejects_bad_syntax(bad):
    with pytest.raises(UserInputError):
        parse_grid([bad])


def test_parse_grid_rejects_a_key_given_twice():
    with pytest.raises(UserInputError, match="twice"):
        parse_grid(["optim.lr=1", "optim.lr=2"])


def test_grid_is_the_cartesian_product_last_key_fastest():
    points = expand_points({"a": [1, 2], "b": ["x", "y", "z"]})
    assert len(points) == 6
    assert points[:3] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"}]
    assert {(p["a"], p["b"]) for p in points} == {(a, b) for a in (1, 2) for b in "xyz"}
    assert expand_points({}) == [{}]


def test_parse_distribution():
    assert parse_distribution("loguniform(1e-4, 1e-1)") == Distribution("loguniform", (0.0001, 0.1))
    assert parse_distribution("choice([8],[16,8])") == Distribution("choice", ([8], [16, 8]))
    for bad in ("loguniform(0, 1)", "uniform(2, 1)", "uniform(1)", "randint(1.5, 3)", "normal(0, 1)",
                "choice()", "loguniform"):
        with pytest.raises(UserInputError):
            parse_distribution(bad)


def test_loguniform_stays_in_bounds_and_is_uniform_in_log():
    points = expand_points({}, parse_space(["optim.lr=loguniform(1e-4,1e-1)"]), n_random=400, seed=3)
    lrs = np.array([p["optim.lr"] for p in points])
    assert lrs.min() >= 1e-4 and lrs.max() < 1e-1
    logs = np.log10(lrs)
    assert abs(logs.mean() - (-2.5)) < 0.15          # uniform on [-4, -1]: mean -2.5, se ~0.04
    for decade in (-4, -3, -2):                        # each decade holds about a third
        share = np.mean((logs >= decade) & (logs < decade + 1))
        assert 0.25 < share < 0.42
    # a plain uniform(1e-4, 1e-1) would put ~90 % of draws in the top decade
    uniform = np.array([p["x"] for p in expand_points({}, parse_space(["x=uniform(1e-4,1e-1)"]), 400, 3)])
    assert np.mean(uniform >= 1e-2) > 0.85 and uniform.min() >= 1e-4 and uniform.max() < 0.1


def test_randint_includes_both_ends_and_choice_draws_listed_values():
    points = expand_points({"optim.name": ["sgd", "momentum"]}, parse_space(["train.batch_size=randint(1,3)"]),
                           n_random=100, seed=0)
    sizes = {p["train.batch_size"] for p in points}
    assert sizes == {1, 2, 3} and all(isinstance(s, int) for s in sizes)
    assert {p["optim.name"] for p in points} == {"sgd", "momentum"}


def test_random_points_are_seeded_and_prefix_stable():
    space = parse_space(["optim.lr=loguniform(1e-4,1e-1)", "regularization.l2=uniform(0,1e-3)"])
    ten = expand_points({}, space, n_random=10, seed=7)
    assert expand_points({}, space, n_random=10, seed=7) == ten
    assert expand_points({}, space, n_random=20, seed=7)[:10] == ten
    assert expand_points({}, space, n_random=10, seed=8) != ten
    assert len({p["optim.lr"] for p in ten}) == 10


def test_expansion_errors():
    space = parse_space(["optim.lr=uniform(0.1,0.2)"])
    with pytest.raises(UserInputError, match="--random"):
        expand_points({}, space)                      # a space without a number of points
    with pytest.raises(UserInputError, match="both"):
        expand_points({"optim.lr": [1]}, space, n_random=2)
    with pytest.raises(UserInputError):
        expand_points({}, {}, n_random=3)              # nothing to vary
    with pytest.raises(UserInputError):
        expand_points({}, space, n_random=0)


# --- planning ------------------------------------------------------------------------------


def test_plan_names_run_dirs_by_resolved_config_hash(tiny_config, tmp_path):
    plan = plan_sweep(tiny_config, grid=["optim.lr=1e-3,0.001,1e-2"], runs_dir=tmp_path / "runs")
    assert len(plan.points) == 2 and plan.duplicates == 1   # 1e-3 and 0.001 are the same config
    for point in plan.points:
        assert point.config["optim"]["lr"] == point.params["optim.lr"]
        assert point.key == config_hash(point.config) and len(point.key) == 12
        assert point.run_dir == (tmp_path / "runs" / f"tiny-{point.key}").absolute()
    again = plan_sweep(tiny_config, grid=["optim.lr=0.01,0.001"], runs_dir=tmp_path / "runs")
    assert {p.run_dir for p in again.points} == {p.run_dir for p in plan.points}


def test_plan_seed_defaults_to_the_config_seed(tiny_config, tmp_path):
    space = ["optim.lr=loguniform(1e-4,1e-1)"]
    default = plan_sweep(tiny_config, space=space, n_random=3, runs_dir=tmp_path)
    with_seed = plan_sweep(tiny_config, space=space, n_random=3, seed=0, runs_dir=tmp_path)
    other = plan_sweep(tiny_config, overrides=["seed=5"], space=space, n_random=3, runs_dir=tmp_path)
    assert [p.params for p in default.points] == [p.params for p in with_seed.points]
    assert [p.params for p in other.points] != [p.params for p in default.points]


def test_plan_validates_every_point_and_names_the_bad_ones(tiny_config, tmp_path):
    with pytest.raises(UserInputError) as e:
        plan_sweep(tiny_config, grid=["optim.lr=0.1,-1"], runs_dir=tmp_path)
    assert "optim.lr" in str(e.value) and "-1" in str(e.value) and "nothing was run" in str(e.value)
    with pytest.raises(UserInputError, match="optim.lrr"):
        plan_sweep(tiny_config, grid=["optim.lrr=0.1"], runs_dir=tmp_path)
    with pytest.raises(UserInputError, match="not a section"):
        plan_sweep(tiny_config, grid=["optim.lr.x=1"], runs_dir=tmp_path)


def test_thread_budget_keeps_jobs_times_threads_within_cores():
    assert thread_budget(2, None, cores=8) == 4
    assert thread_budget(3, None, cores=8) == 2
    assert thread_budget(2, 3, cores=8) == 3
    for jobs, threads in ((3, 3), (9, None), (0, None), (1, 0)):
        with pytest.raises(UserInputError):
            thread_budget(jobs, threads, cores=8)


# --- running (command line) ----------------------------------------------------------------


def summaries(runs_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in runs_dir.glob("*/summary.json")}


def test_grid_sweep_with_two_jobs_completes_then_resumes_only_missing_runs(tiny_config, tmp_path):
    runs_dir = tmp_path / "runs"
    args = ["sweep", tiny_config, "--grid", "optim.lr=0.02,0.05", "--grid", "regularization.l2=0,1e-4",
            "--jobs", 2, "--runs-dir", runs_dir]
    first = invoke(*args, "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert (report["points"], report["completed"], report["failed"], report["skipped"]) == (4, 4, 0, 0)
    done = summaries(runs_dir)
    assert len(done) == 4 and all(s["status"] == "completed" for s in done.values())
    assert {(r["params"]["optim.lr"], r["params"]["regularization.l2"]) for r in report["runs"]} == \
        {(0.02, 0), (0.02, 0.0001), (0.05, 0), (0.05, 0.0001)}
    accuracies = [r["summary"]["val_accuracy"] for r in report["runs"]]
    assert accuracies == sorted(accuracies, reverse=True)           # best first
    cores = available_cores()
    assert all(r["blas_threads"] in (None, max(cores // 2, 1)) for r in report["runs"])
    assert any(r["blas_threads"] == max(cores // 2, 1) for r in report["runs"])
    for r in report["runs"]:
        saved = yaml.safe_load((runs_dir / r["run_dir"].rsplit("/", 1)[1] / "config.yaml").read_text())
        assert saved["optim"]["lr"] == r["params"]["optim.lr"] and config_hash(saved) == r["hash"]

    mtimes = {p: p.stat().st_mtime_ns for p in runs_dir.glob("*/summary.json")}
    again = invoke(*args, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["skipped"] == 4
    assert {p: p.stat().st_mtime_ns for p in runs_dir.glob("*/summary.json")} == mtimes

    # an interrupted sweep: two runs lost their summary (one of them has a stale failed one)
    lost = sorted(runs_dir.iterdir())[:2]
    (lost[0] / "summary.json").unlink()
    (lost[1] / "summary.json").write_text(json.dumps({"status": "interrupted", "reason": "killed"}))
    kept = {p: p.stat().st_mtime_ns for p in runs_dir.glob("*/summary.json") if p.parent not in lost}
    resumed = invoke(*args, "--json")
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert (report["completed"], report["skipped"]) == (4, 2)
    assert {r["run_dir"].rsplit("/", 1)[1] for r in report["runs"] if not r["skipped"]} == {p.name for p in lost}
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert all(s["status"] == "completed" for s in summaries(runs_dir).values())

    listed = invoke("runs", runs_dir, "--format", "csv")
    assert listed.exit_code == 0, listed.output
    rows = list(csv.DictReader(io.StringIO(listed.stdout)))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    assert {float(r["optim.lr"]) for r in rows} == {0.02, 0.05}
    assert {float(r["regularization.l2"]) for r in rows} == {0.0, 0.0001}
    assert "data.dataset" not in rows[0]                              # same in every run


def test_a_diverging_point_fails_alone_and_exits_1(tiny_config, tmp_path):
    runs_dir = tmp_path / "runs"
    result = invoke("sweep", tiny_config, "--set", "optim.name=sgd", "--grid", "optim.lr=0.1,1e6",
                    "--runs-dir", runs_dir, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert (report["completed"], report["failed"]) == (1, 1)
    by_lr = {r["params"]["optim.lr"]: r for r in report["runs"]}
    assert by_lr[0.1]["status"] == "completed" and by_lr[0.1]["summary"]["val_accuracy"] > 0.5
    failed = by_lr[1e6]
    assert failed["status"] == "failed" and "nan" in failed["reason"].lower()
    on_disk = json.loads((runs_dir / failed["run_dir"].rsplit("/", 1)[1] / "summary.json").read_text())
    assert on_disk["status"] == "failed" and "nan" in on_disk["reason"].lower()
    assert [r["status"] for r in report["runs"]] == ["completed", "failed"]   # failures listed last


def test_bad_input_exits_2_before_running_anything(tiny_config, tmp_path):
    runs_dir = tmp_path / "runs"
    for extra in (["--grid", "optim.lr"], ["--grid", "optim.lr=0.1", "--grid", "optim.nope=1"],
                  ["--grid", "optim.lr=0.1,-5"], ["--space", "optim.lr=loguniform(1e-3,1)"],
                  ["--random", 2, "--space", "optim.lr=lognormal(0,1)"], ["--executor", "spark"],
                  ["--scheduler", "tcp://127.0.0.1:8786"], ["--jobs", available_cores() + 1]):
        result = invoke("sweep", tiny_config, "--runs-dir", runs_dir, *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert "error" in result.output and "Traceback" not in result.output
    assert not runs_dir.exists()


def test_dry_run_lists_points_and_runs_nothing(tiny_config, tmp_path):
    runs_dir = tmp_path / "runs"
    result = invoke("sweep", tiny_config, "--random", 3, "--space", "optim.lr=loguniform(1e-3,1e-1)",
                    "--grid", "model.hidden=[8],[4]", "--runs-dir", runs_dir, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["points"] == 3 and len(plan["runs"]) == 3 and not any(r["done"] for r in plan["runs"])
    assert all(1e-3 <= r["params"]["optim.lr"] < 1e-1 and r["params"]["model.hidden"] in ([8], [4])
               for r in plan["runs"])
    assert not runs_dir.exists()


def test_dask_executor_without_dask_exits_2_with_install_hint(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)            # import distributed -> ImportError
    result = invoke("sweep", tiny_config, "--executor", "dask", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "pip install" in result.output and "nnrun[dask]" in result.output


def test_dask_executor_runs_a_sweep_on_a_local_cluster(tiny_config, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    started = []
    real_cluster = distributed.LocalCluster

    def recording_cluster(*args, **kwargs):
        cluster = real_cluster(*args, **kwargs)
        started.append(cluster.scheduler_address)
        return cluster

    monkeypatch.setattr(distributed, "LocalCluster", recording_cluster)
    runs_dir = tmp_path / "runs"
    result = invoke("sweep", tiny_config, "--executor", "dask", "--jobs", 1, "--grid", "optim.lr=0.02,0.05",
                    "--runs-dir", runs_dir, "--json")
    assert result.exit_code == 0, result.output
    assert len(started) == 1 and started[0].startswith("tcp://127.0.0.1:")
    report = json.loads(result.stdout)
    assert report["executor"] == "dask" and report["completed"] == 2
    done = summaries(runs_dir)
    assert len(done) == 2 and all(s["status"] == "completed" and math.isfinite(s["val_loss"])
                                  for s in done.values())
