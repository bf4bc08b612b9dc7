"""`nnrun.load_run`: a trained run read back scores, predicts and recovers its split exactly; bad run
directories are one clear error; the split, provenance and optional predictions files a run writes.

Tolerance of "score equals summary.json": accuracies (class, bin and per-attribute) must be equal
exactly, losses and regression errors within a relative 1e-6 (float32 sums; the same float32
operations run in the same order, so in practice the values are bit-identical).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits
from typer.testing import CliRunner

import nnrun
from nnrun.cli import app
from nnrun.config import load_config
from nnrun.errors import UserInputError
from nnrun.train import resume_run, train_new
from tests.cifar_fixtures import write_cifar_folder

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
TINY = ["model.hidden=[16]", "train.epochs=2", "train.batch_size=64"]


def blobs_npz(path: Path, n: int = 240, d: int = 6) -> Path:
    """Three gaussian blobs with class labels and one attribute per class."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(3, d))[y] * 4 + rng.normal(size=(n, d))
    np.savez(path, X=X, y=y, attributes=np.stack([y == 0, y == 1, y == 2], 1),
             attribute_names=np.array(["first", "second", "third"]))
    return path


CASES = {
    "softmax": ["loss.name=softmax"],
    "svm": ["loss.name=svm"],
    "hierarchical_softmax": ["loss.name=hierarchical_softmax", "loss.tree=[[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]"],
    "attribute_logistic": ["data.dataset=npz", "loss.name=attribute_logistic"],
    "l2": ["data.dataset=diabetes", "loss.name=l2"],
    "bins": ["data.dataset=diabetes", "loss.name=softmax", "loss.bins=4"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One small trained run per case (digits, npz attributes, diabetes), trained once for the module."""
    base = tmp_path_factory.mktemp("runs")
    npz = blobs_npz(base / "blobs.npz")
    trained = {}
    for name, sets in CASES.items():
        extra = [f"data.path={npz}"] if "data.dataset=npz" in sets else []
        cfg = load_config(None, [*TINY, *sets, *extra, "train.save_predictions=true"])
        train_new(cfg, out=base / name)
        trained[name] = base / name
    return trained


def summary_of(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


def assert_metrics_equal(metrics: dict, summary: dict, split: str) -> None:
    """Accuracies exactly, losses and errors within rel 1e-6 (see the module docstring)."""
    expected = {k[len(split) + 1:]: v for k, v in summary.items() if k.startswith(f"{split}_")}
    assert set(metrics) == set(expected)
    for key, value in metrics.items():
        if key.startswith("accuracy"):
            assert value == expected[key], key
        else:
            assert value == pytest.approx(expected[key], rel=1e-6), key


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_score_on_a_recovered_split_equals_the_summary(runs, case, split):
    run = nnrun.load_run(runs[case])
    X, y = run.load_split(split)
    assert_metrics_equal(run.score(X, y), summary_of(runs[case]), split)


@pytest.mark.parametrize("case", list(CASES))
def test_predictions_follow_scikit_learn_shapes_and_the_loss(runs, case):
    run = nnrun.load_run(runs[case])
    X, y = run.load_split("test")
    n, names = len(X), run.target_names
    prediction = run.predict(X)
    if run.target_kind == "classes":
        assert prediction.shape == (n,) and set(prediction) <= set(run.classes_)
        assert run.decision_function(X).shape == (n, len(names))
    elif run.target_kind == "attributes":
        assert prediction.shape == (n, len(names)) and set(np.unique(prediction)) <= {0, 1}
        np.testing.assert_array_equal(prediction, run.decision_function(X) > 0)
    else:
        assert prediction.shape == (n, 1)
        # in the targets' own units: diabetes progression is 25..346, its mean about 150
        assert 50 < prediction.mean() < 250
    if run.loss.has_proba:
        proba = run.predict_proba(X)
        assert proba.shape == (n, len(names) if case != "bins" else len(run.loss.centres))
        assert np.all((proba >= 0) & (proba <= 1))
        if run.target_kind == "classes":
            np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
            np.testing.assert_array_equal(proba.argmax(axis=1), prediction)
        elif run.target_kind == "attributes":
            np.testing.assert_array_equal(proba > 0.5, prediction.astype(bool))
        else:  # bins: a probability per bin, the prediction is the centres' expectation (loss.decode auto)
            np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
            assert run.loss.decode == "expectation"
            np.testing.assert_allclose(proba @ run.loss.centres, prediction[:, 0], rtol=1e-5)
    else:
        with pytest.raises(AttributeError, match="no probabilities"):
            run.predict_proba(X)


def test_hierarchical_decision_function_is_the_log_of_its_probabilities(runs):
    run = nnrun.load_run(runs["hierarchical_softmax"])
    X, _ = run.load_split("test")
    np.testing.assert_allclose(np.exp(run.decision_function(X)), run.predict_proba(X), rtol=1e-5)
    assert run.decision_function(X).shape == (len(X), 10)


def test_regression_defines_no_decision_function_and_predicts_the_summary_rmse(runs):
    run = nnrun.load_run(runs["l2"])
    X, y = run.load_split("test")
    with pytest.raises(AttributeError, match="no decision function"):
        run.decision_function(X)
    rmse = float(np.sqrt(np.mean((run.predict(X).astype(np.float64) - y) ** 2)))
    assert rmse == pytest.approx(summary_of(runs["l2"])["test_rmse"], rel=1e-5)


def test_raw_inputs_in_other_layouts_and_dtypes_give_the_same_predictions(runs):
    run = nnrun.load_run(runs["softmax"])
    X, _ = run.load_split("test")
    expected = run.predict(X)
    np.testing.assert_array_equal(run.predict(X.astype(np.uint8)), expected)  # digits pixels are 0..16
    np.testing.assert_array_equal(run.predict(X.reshape(-1, 1, 8, 8)), expected)
    np.testing.assert_array_equal(run.predict(X.tolist()), expected)
    before = X.copy()
    run.predict(X)
    np.testing.assert_array_equal(X, before)  # the caller's array is never preprocessed in place


@pytest.mark.parametrize("bad, text", [
    (np.zeros((3, 63)), r"X must be \(N, 64\) rows or \(N, 1, 8, 8\) images"),
    (np.array([["a"] * 64]), "real numbers"),
    (np.full((2, 64), np.nan), "NaN"),
])
def test_bad_X_is_one_clear_error(runs, bad, text):
    with pytest.raises(UserInputError, match=text):
        nnrun.load_run(runs["softmax"]).predict(bad)


def test_bad_y_is_one_clear_error(runs):
    run = nnrun.load_run(runs["softmax"])
    X, y = run.load_split("test")
    with pytest.raises(UserInputError, match="outside 0..9"):
        run.score(X, y + 10)
    with pytest.raises(UserInputError, match="integer class labels"):
        run.score(X, y.astype(np.float32))


# ---- the split, as documented in the README --------------------------------------------------------

def test_split_npz_holds_the_rows_of_each_split_of_the_pool(runs):
    with np.load(runs["softmax"] / "split.npz") as z:
        split = {k: z[k] for k in z.files}
    assert int(split["version"]) == 1 and split["pool_names"].tolist() == ["all"]
    assert split["pool_sizes"].tolist() == [1797] and str(split["test_pool"]) == "all"
    assert sorted(np.concatenate([split[s] for s in ("train", "val", "test")]).tolist()) == list(range(1797))
    digits = load_digits()
    run = nnrun.load_run(runs["softmax"])
    for name in ("train", "val", "test"):
        X, y = run.load_split(name)
        np.testing.assert_array_equal(X, digits.data[split[name]].astype(np.float32))
        np.testing.assert_array_equal(y, digits.target[split[name]])


def test_cifar10_split_names_the_training_batches_and_the_test_batch(tmp_path):
    write_cifar_folder(tmp_path)
    cfg = load_config(None, ["data.dataset=cifar10", f"data.root={tmp_path}", "data.val_size=10", *TINY])
    train_new(cfg, out=tmp_path / "run")
    with np.load(tmp_path / "run" / "split.npz") as z:
        assert z["pool_names"].tolist() == ["data_batches", "test_batch"]
        assert z["pool_sizes"].tolist() == [100, 20]
        assert str(z["train_pool"]) == str(z["val_pool"]) == "data_batches" and str(z["test_pool"]) == "test_batch"
        assert len(z["val"]) == 10 and len(z["train"]) == 90 and z["test"].tolist() == list(range(20))
        assert not set(z["train"]) & set(z["val"])


def test_a_changed_data_file_is_detected_instead_of_scoring_other_rows(tmp_path):
    path = blobs_npz(tmp_path / "d.npz")
    cfg = load_config(None, [*TINY, "data.dataset=npz", f"data.path={path}"])
    train_new(cfg, out=tmp_path / "run")
    blobs_npz(path, n=250)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "run")])
    assert result.exit_code == 2 and "split.npz" in result.stderr and "changed" in result.stderr


# ---- bad run directories: one message, exit 2 --------------------------------------------------------

def evaluate_error(path: Path) -> str:
    result = runner.invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    return result.stderr


@pytest.fixture
def copy_of(runs, tmp_path):
    """A fresh copy of a trained run, to damage."""
    def copy(case: str) -> Path:
        target = tmp_path / case
        subprocess.run(["cp", "-r", str(runs[case]), str(target)], check=True)
        return target
    return copy


def test_missing_folder_and_missing_config(tmp_path):
    assert "does not exist" in evaluate_error(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "no config.yaml" in evaluate_error(tmp_path / "empty")


@pytest.mark.parametrize("name", ["model.npz", "preprocess.npz", "targets.npz"])
def test_missing_run_file_is_named(copy_of, name):
    run = copy_of("softmax")
    (run / name).unlink()
    text = evaluate_error(run)
    assert name in text and "missing" in text


def test_run_stopped_without_summary_points_to_resume(copy_of):
    run = copy_of("softmax")
    (run / "summary.json").unlink()
    assert "nnrun train --resume" in evaluate_error(run)


def test_run_that_failed_before_its_first_epoch_has_no_model_to_use(tmp_path):
    result = runner.invoke(app, ["train", "configs/quickstart.yaml", "--set", "optim.lr=1e9", "--set",
                                 "train.epochs=1", "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 1
    text = evaluate_error(tmp_path / "run")
    assert "summary.json" in text and "before training its first epoch" in text


def test_newer_layout_is_refused(copy_of):
    run = copy_of("softmax")
    provenance = json.loads((run / "provenance.json").read_text())
    (run / "provenance.json").write_text(json.dumps({**provenance, "layout_version": 99}))
    text = evaluate_error(run)
    assert "provenance.json" in text and "newer" in text and "upgrade nnrun" in text


def test_newer_split_layout_is_refused(copy_of):
    run = copy_of("softmax")
    with np.load(run / "split.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(run / "split.npz", **{**arrays, "version": np.array(7)})
    text = evaluate_error(run)
    assert "split.npz" in text and "newer" in text


def test_weights_that_do_not_fit_the_config_are_named(copy_of):
    run = copy_of("softmax")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["hidden"] = [32]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    text = evaluate_error(run)
    assert "model.npz" in text and "does not fit" in text


def test_unreadable_targets_file_is_named(copy_of):
    run = copy_of("softmax")
    (run / "targets.npz").write_bytes(b"not an npz")
    assert "targets.npz" in evaluate_error(run)


# ---- provenance, save_predictions, lazy import -------------------------------------------------------

def test_provenance_records_software_source_machine_and_times(runs):
    p = json.loads((runs["softmax"] / "provenance.json").read_text())
    import numpy
    import scipy

    assert p["layout_version"] == 1 and p["status"] == "completed"
    assert p["nnrun_version"] == nnrun.__version__ and p["numpy"] == numpy.__version__
    assert p["scipy"] == scipy.__version__ and p["python"] == ".".join(map(str, sys.version_info[:3]))
    assert p["hostname"] and p["kernel"] and p["command_line"]
    assert p["blas_threads"] >= 1 and p["blas"] and isinstance(p["blas_libraries"], list)
    assert p["started"] <= p["ended"] and p["seconds"] > 0 and p["peak_rss_mib"] > 10
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # the suite runs from a checkout
        assert p["git_commit"] == head.stdout.strip() and isinstance(p["git_dirty"], bool)


def test_resumed_run_keeps_the_earlier_session(tmp_path):
    cfg = load_config("configs/quickstart.yaml", ["train.epochs=1", "model.hidden=[8]"])
    train_new(cfg, out=tmp_path / "run")
    first = json.loads((tmp_path / "run" / "provenance.json").read_text())
    resume_run(tmp_path / "run", ["train.epochs=2"])
    second = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert second["status"] == "completed" and second["started"] >= first["started"]
    assert [s["started"] for s in second["earlier_sessions"]] == [first["started"]]
    assert "layout_version" not in second["earlier_sessions"][0]


def test_nnrun_runs_shows_provenance_columns(runs):
    result = runner.invoke(app, ["runs", str(runs["softmax"].parent), "--format", "json", "--columns",
                                 "run,provenance.hostname,provenance.nnrun_version,provenance.peak_rss_mib"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["runs"]
    assert len(rows) == len(CASES)
    assert all(r["provenance.nnrun_version"] == nnrun.__version__ and r["provenance.peak_rss_mib"] > 0
               for r in rows)


@pytest.mark.parametrize("case", ["softmax", "attribute_logistic", "l2"])
def test_save_predictions_writes_the_test_split_predictions(runs, case):
    run = nnrun.load_run(runs[case])
    X, y = run.load_split("test")
    with np.load(runs[case] / "predictions.npz") as z:
        saved = {k: z[k] for k in z.files}
    np.testing.assert_array_equal(saved["indices"], run.split.indices["test"])
    np.testing.assert_array_equal(saved["target"], y)
    np.testing.assert_array_equal(saved["prediction"], run.predict(X))
    np.testing.assert_array_equal(saved["scores"], run.scores(X))
    assert ("proba" in saved) == run.loss.has_proba
    if case == "softmax":
        assert np.mean(saved["prediction"] == y) == summary_of(runs[case])["test_accuracy"]


def test_predictions_are_only_written_when_asked(tmp_path):
    train_new(load_config("configs/quickstart.yaml", ["train.epochs=1", "model.hidden=[8]"]), out=tmp_path / "r")
    assert not (tmp_path / "r" / "predictions.npz").exists()


def test_import_nnrun_stays_cheap_and_load_run_is_imported_on_use():
    code = ("import sys, nnrun; assert 'nnrun.experiment' not in sys.modules and 'numpy' not in sys.modules; "
            "f = nnrun.load_run; assert 'nnrun.experiment' in sys.modules; print(f.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "nnrun.experiment"
    with pytest.raises(AttributeError):
        nnrun.no_such_name  # noqa: B018
