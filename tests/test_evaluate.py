"""`nnrun evaluate`: the metrics of a split recomputed from the run directory equal the summary's; tables,
confusion matrix, per-attribute accuracies, regression errors, figures, other data files, bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import nnrun
from tests.cifar_fixtures import write_cifar_folder
from tests.helpers import TINY_RUN, invoke, invoke_error, invoke_json, train_run


def evaluate_json(*args) -> dict:
    return invoke_json("evaluate", *args)


def evaluate_error(*args) -> str:
    return invoke_error("evaluate", *args)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("digits") / "run", *TINY_RUN)


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny attribute-logistic run on a synthetic CIFAR-10 folder: (run directory, data root)."""
    base = tmp_path_factory.mktemp("cifar")
    write_cifar_folder(base / "data")
    run = train_run(base / "run", "data.dataset=cifar10", f"data.root={base / 'data'}", "data.val_size=10",
                    "loss.name=attribute_logistic", *TINY_RUN)
    return run, base / "data"


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_evaluate_reproduces_the_summary_of_every_split(digits_run, split):
    result = evaluate_json(digits_run, "--split", split)
    summary = json.loads((digits_run / "summary.json").read_text())
    assert result["split"] == split and result["n"] == summary[f"n_{split}"]
    assert result["metrics"] == {"loss": summary[f"{split}_loss"], "accuracy": summary[f"{split}_accuracy"]}
    assert result["summary_metrics"] == result["metrics"]
    counts = np.array(result["confusion_matrix"])
    assert counts.shape == (10, 10) and counts.sum() == result["n"]
    assert np.trace(counts) / counts.sum() == pytest.approx(result["metrics"]["accuracy"], rel=1e-12)


def test_tables_go_to_stderr_and_the_default_split_is_test(digits_run):
    result = invoke("evaluate", digits_run)
    assert result.exit_code == 0 and result.stdout == ""
    assert "split test" in result.stderr and "confusion matrix" in result.stderr and "summary.json" in result.stderr


def test_plot_writes_the_confusion_matrix_into_the_run_directory(digits_run):
    result = invoke("evaluate", digits_run, "--split", "val", "--plot")
    assert result.exit_code == 0, result.output
    figure = digits_run / "evaluate-val.png"
    assert f"wrote {figure}" in result.stderr
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_attribute_run_reports_each_attribute_and_a_batch_file_equals_the_test_split(cifar_run):
    run, data = cifar_run
    by_split = evaluate_json(run, "--split", "test", "--plot")
    assert list(by_split["attribute_accuracy"]) == nnrun.load_run(run).target_names
    assert by_split["metrics"] == by_split["summary_metrics"]
    assert Path(by_split["figure"]).is_file()
    # CIFAR-10's test split is the official test batch: evaluating that file gives the same metrics
    by_file = evaluate_json(run, "--data", data / "cifar-10-batches-py" / "test_batch")
    assert by_file["metrics"] == by_split["metrics"] and "summary_metrics" not in by_file


def test_data_root_finds_moved_data(cifar_run, tmp_path):
    run, data = cifar_run
    moved = tmp_path / "elsewhere"
    shutil.copytree(data, moved)
    assert evaluate_json(run, "--data-root", moved)["metrics"] == evaluate_json(run)["metrics"]
    assert "CIFAR-10 not found" in evaluate_error(run, "--data-root", tmp_path / "empty")


def test_regression_reports_errors_beside_the_baseline(tmp_path):
    run = train_run(tmp_path / "run", "data.dataset=diabetes", "loss.name=l1", *TINY_RUN)
    result = evaluate_json(run, "--plot")
    assert set(result["metrics"]) == {"loss", "mae", "rmse", "rmse_baseline"}
    assert result["metrics"] == pytest.approx(result["summary_metrics"], rel=1e-6)
    assert Path(result["figure"]).name == "evaluate-test.png"


def test_evaluate_on_an_npz_file_with_targets(digits_run, tmp_path):
    run = nnrun.load_run(digits_run)
    X, y = run.load_split("val")
    np.savez(tmp_path / "val.npz", X=X, y=y)
    result = evaluate_json(digits_run, "--data", tmp_path / "val.npz")
    assert result["data"] == str(tmp_path / "val.npz") and result["metrics"] == run.score(X, y)
    np.savez(tmp_path / "named.npz", X=X, y=y, class_names=np.array([f"digit {i}" for i in range(10)]))
    text = evaluate_error(digits_run, "--data", tmp_path / "named.npz")
    assert "named.npz" in text and "do not match" in text
    np.savez(tmp_path / "unlabelled.npz", X=X)
    text = evaluate_error(digits_run, "--data", tmp_path / "unlabelled.npz")
    assert "unlabelled.npz" in text and "no class-label targets" in text and "'y'" in text
    np.savez(tmp_path / "eleven.npz", X=X, y=np.where(y == 0, 10, y))
    text = evaluate_error(digits_run, "--data", tmp_path / "eleven.npz")
    assert "eleven.npz" in text and "outside 0..9" in text


def test_bad_options(digits_run, tmp_path):
    assert "--split must be one of train, val, test" in evaluate_error(digits_run, "--split", "dev")
    np.savez(tmp_path / "x.npz", X=np.zeros((2, 64)), y=np.zeros(2, dtype=int))
    assert "exclude each other" in evaluate_error(digits_run, "--split", "val", "--data", tmp_path / "x.npz")
