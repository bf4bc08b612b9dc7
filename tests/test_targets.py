"""Target kinds: npz and diabetes datasets, CIFAR-10 attributes, bins, and loss/target mismatches."""

import json
import pickle

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.config import DataConfig, LossConfig, load_config
from nnrun.datasets.cifar10 import CIFAR10_ATTRIBUTE_NAMES, CIFAR10_ATTRIBUTES, CIFAR10_CLASSES
from nnrun.errors import UserInputError
from nnrun.experiment import build_loss
from nnrun.nn.losses import BinnedRegression, HierarchicalSoftmax, L2Loss, fit_bins
from nnrun.rundir import RunDir
from nnrun.train import run_experiment
from tests.helpers import load

runner = CliRunner()



def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def npz_config(path, **extra) -> DataConfig:
    return DataConfig(dataset="npz", path=str(path), val_size=0.1, test_size=0.2, **extra)


def blobs(n=200, d=6, classes=3, seed=0):
    """Separable gaussian blobs: X (n, d) float64, y (n,) int."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, d)) * 4
    return centres[y] + rng.normal(size=(n, d)), y


# ---- npz loading -----------------------------------------------------------------------------

def test_npz_classes_attributes_and_regression_targets(tmp_path):
    X, y = blobs()
    attributes = np.stack([y == 0, y != 2], axis=1)
    reg = np.stack([y * 2.0 + 1, -X[:, 0]], axis=1)
    path = write_npz(tmp_path / "d.npz", X=X, y=y, attributes=attributes, targets=reg,
                     class_names=np.array(["a", "b", "c"]), attribute_names=np.array(["is a", "not c"]))
    data = load(npz_config(path), seed=3)
    assert data.target_kind == "classes" and data.class_names == ["a", "b", "c"]
    assert data.target_kinds() == ["classes", "attributes", "regression"]
    assert data.X_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.sizes() == {"train": 144, "val": 16, "test": 40}
    assert data.n_targets == 3 and data.image_shape is None
    labels = data.y_test.copy()
    data = data.with_targets("attributes")
    assert data.y_test.shape == (40, 2) and data.y_test.dtype == np.float32 and data.n_targets == 2
    np.testing.assert_array_equal(data.y_test[:, 0], labels == 0)  # rows stay aligned with X
    assert data.attribute_names == ["is a", "not c"]
    data = data.with_targets("regression")
    np.testing.assert_allclose(data.y_test[:, 0], labels * 2.0 + 1)
    assert data.target_names == ["t0", "t1"] and data.n_targets == 2
    data = data.with_targets("classes")
    np.testing.assert_array_equal(data.y_test, labels)


def test_npz_split_is_seeded_and_disjoint(tmp_path):
    X, y = blobs()
    X[:, 0] = np.arange(len(X))  # an id column
    path = write_npz(tmp_path / "d.npz", X=X, y=y)
    a, b = load(npz_config(path), seed=1), load(npz_config(path), seed=1)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    ids = [set(d[:, 0].astype(int)) for d in (a.X_train, a.X_val, a.X_test)]
    assert set.union(*ids) == set(range(200)) and sum(map(len, ids)) == 200
    assert not np.array_equal(load(npz_config(path), seed=2).X_test, a.X_test)


def test_npz_minus_one_plus_one_attributes_and_image_shape(tmp_path):
    X, y = blobs(d=12)
    path = write_npz(tmp_path / "d.npz", X=X, Y=np.where(y[:, None] == np.arange(3), 1, -1),
                     image_shape=np.array([3, 2, 2]))
    data = load(npz_config(path), seed=0)
    assert data.target_kind == "attributes" and data.target_kinds() == ["attributes"]
    assert set(np.unique(data.y_train)) == {0.0, 1.0} and data.image_shape == (3, 2, 2)
    assert data.attribute_names == ["a0", "a1", "a2"]


@pytest.mark.parametrize(("arrays", "key", "text"), [
    ({"y": np.zeros(10, int)}, "X", "missing key 'X'"),
    ({"X": np.zeros((10, 2, 2)), "y": np.zeros(10, int)}, "X", "(N, D) matrix"),
    ({"X": np.array([[1.0, np.nan]] * 10), "y": np.zeros(10, int)}, "X", "NaN"),
    ({"X": np.full((10, 2), 1e300), "y": np.zeros(10, int)}, "X", "infinite"),
    ({"X": np.array([["a", "b"]] * 10)}, "X", "must hold numbers"),
    ({"X": np.zeros((10, 2))}, None, "no targets"),
    ({"X": np.zeros((10, 2)), "y": np.zeros(9, int)}, "y", "shape (9,)"),
    ({"X": np.zeros((10, 2)), "y": np.full(10, 3.7)}, "y", "integer class labels"),
    ({"X": np.zeros((10, 2)), "y": np.full(10, 2**70, dtype=np.float64)}, "y", "at most 100000 classes"),
    ({"X": np.zeros((10, 2)), "y": np.full(10, 10**9)}, "y", "at most 100000 classes"),
    ({"X": np.zeros((10, 2), dtype=np.complex64), "y": np.zeros(10, int)}, "X", "not complex"),
    ({"X": np.zeros((10, 2)), "y": -np.ones(10, int)}, "y", "negative"),
    ({"X": np.zeros((10, 2)), "attributes": np.full((10, 2), 2)}, "attributes", "0/1"),
    ({"X": np.zeros((10, 2)), "attributes": np.zeros(10)}, "attributes", "(N, A)"),
    ({"X": np.zeros((10, 2)), "Y": np.array([[0.0, np.nan]] * 10)}, "Y", "NaN"),
    ({"X": np.zeros((10, 2)), "targets": np.array([1.0, np.inf] * 5)}, "targets", "NaN or infinite"),
    ({"X": np.zeros((10, 2)), "targets": np.zeros((10, 2, 2))}, "targets", "(N,) or (N, T)"),
    ({"X": np.zeros((10, 2)), "y": np.arange(10) % 3, "class_names": np.array(["a", "b"])}, "y",
     "names only 2 classes"),
    ({"X": np.zeros((10, 2)), "targets": np.zeros(10), "target_names": np.array(["a", "b"])}, "target_names",
     "names 2 entries"),
    ({"X": np.zeros((10, 4)), "y": np.zeros(10, int), "image_shape": np.array([1, 2, 3])}, "image_shape",
     "multiplying to D = 4"),
])
def test_malformed_npz_names_file_and_key(tmp_path, arrays, key, text):
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserInputError) as err:
        load(npz_config(path), seed=0)
    message = str(err.value)
    assert str(path) in message and text in message
    if key is not None:
        assert f"'{key}'" in message


def test_npz_file_problems(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load(npz_config(tmp_path / "nope.npz"), seed=0)
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    with pytest.raises(UserInputError, match="cannot read .*junk.npz"):
        load(npz_config(tmp_path / "junk.npz"), seed=0)
    np.save(tmp_path / "single.npy", np.zeros((3, 2)))
    with pytest.raises(UserInputError, match="single .npy array"):
        load(npz_config(tmp_path / "single.npy"), seed=0)
    np.savez(tmp_path / "obj.npz", X=np.zeros((10, 2)), y=np.array([{"a": 1}] * 10, dtype=object))
    with pytest.raises(UserInputError, match="key 'y' cannot be read"):
        load(npz_config(tmp_path / "obj.npz"), seed=0)
    np.savez(tmp_path / "cut.npz", X=np.zeros((50, 20)), y=np.zeros(50, dtype=int))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "cut.npz").read_bytes()[:200])
    with pytest.raises(UserInputError, match="cut.npz"):
        load(npz_config(tmp_path / "cut.npz"), seed=0)


# ---- diabetes, bins, build_loss --------------------------------------------------------------

def test_diabetes_is_a_regression_dataset():
    data = load(DataConfig(dataset="diabetes"), seed=0)
    assert data.target_kind == "regression" and data.target_kinds() == ["regression"]
    assert data.X_train.shape[1] == 10 and data.y_train.shape[1] == 1 and data.y_train.dtype == np.float32
    assert sum(data.sizes().values()) == 442 and data.n_targets == 1
    assert 25 <= data.y_train.min() and data.y_train.max() <= 346


def test_build_loss_fits_on_the_training_split_only():
    data = load(DataConfig(dataset="diabetes"), seed=0)
    loss = build_loss(LossConfig(name="l2"), data)
    assert isinstance(loss, L2Loss) and loss.output_dim(data.n_targets) == 1
    np.testing.assert_allclose(loss.mean, data.y_train.mean(0), rtol=1e-5)
    binned = build_loss(LossConfig(name="svm", bins=5), data)
    assert isinstance(binned, BinnedRegression) and binned.output_dim(1) == 5
    edges, centres = fit_bins(data.y_train, 5)
    np.testing.assert_array_equal(binned.edges, edges)
    np.testing.assert_array_equal(binned.centres, centres)
    tree = build_loss(LossConfig(name="hierarchical_softmax", bins=4), data)
    assert tree.output_dim(1) == 3 and isinstance(tree.inner, HierarchicalSoftmax)


def test_build_loss_trees_and_output_dims():
    data = load(DataConfig(dataset="digits"), seed=0)
    loss = build_loss(LossConfig(name="hierarchical_softmax"), data)
    assert loss.output_dim(data.n_targets) == 9
    custom = build_loss(LossConfig(name="hierarchical_softmax", tree=[[0, 6, 8, 9], [1, 7, 4], [2, 3, 5]]), data)
    assert custom.output_dim(10) == 9 and not np.array_equal(custom.directions, loss.directions)
    with pytest.raises(UserInputError, match=r"loss.tree \(data.dataset=digits\).*unknown class 'cat'"):
        build_loss(LossConfig(name="hierarchical_softmax", tree=[list(range(9)), "cat"]), data)
    with pytest.raises(UserInputError, match="missing from the label tree: 9"):
        build_loss(LossConfig(name="hierarchical_softmax", tree=[list(range(5)), [5, 6, 7, 8]]), data)
    assert build_loss(LossConfig(name="svm", margin=0.5), data).margin == 0.5


def test_cifar10_attribute_table_is_documented_and_complete():
    assert set(CIFAR10_ATTRIBUTES) == set(CIFAR10_CLASSES)
    table = np.array([CIFAR10_ATTRIBUTES[c] for c in CIFAR10_CLASSES])
    assert table.shape == (10, len(CIFAR10_ATTRIBUTE_NAMES)) and set(np.unique(table)) == {0, 1}
    animal, vehicle = table[:, 0], table[:, 1]
    np.testing.assert_array_equal(animal + vehicle, 1)
    assert [c for c, a in zip(CIFAR10_CLASSES, animal, strict=True) if a] == [
        "bird", "cat", "deer", "dog", "frog", "horse"]
    assert len({tuple(r) for r in table}) >= 6  # the attributes separate most classes


# ---- end to end ------------------------------------------------------------------------------

def train(tmp_path, config: dict, name="run") -> dict:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg = load_config(path)
    return run_experiment(cfg, RunDir.create(tmp_path / name))


def test_diabetes_regression_beats_the_training_mean(tmp_path):
    summary = train(tmp_path, {"data": {"dataset": "diabetes"}, "model": {"hidden": [32]},
                               "loss": {"name": "l2"}, "optim": {"name": "adam", "lr": 0.01},
                               "train": {"epochs": 30, "batch_size": 32}})
    assert summary["test_rmse"] < summary["test_rmse_baseline"] * 0.85
    assert summary["test_mae"] < summary["test_rmse"] and "test_accuracy" not in summary
    assert summary["train_rmse_baseline"] == pytest.approx(
        float(np.std(load(DataConfig(dataset="diabetes"), 0).y_train)), rel=1e-4)
    with np.load(tmp_path / "run" / "targets.npz") as z:
        assert str(z["kind"]) == "regression" and z["names"].tolist() == ["progression"]
        assert z["target_mean"].shape == (1,) and z["target_std"][0] > 10


def test_bins_train_a_classifier_and_report_errors_in_target_units(tmp_path):
    summary = train(tmp_path, {"data": {"dataset": "diabetes"}, "model": {"hidden": []},
                               "loss": {"name": "softmax", "bins": 4}, "optim": {"name": "adam", "lr": 0.1},
                               "train": {"epochs": 20, "batch_size": 32}})
    assert 0.3 < summary["train_accuracy"] <= 1
    assert 20 < summary["test_rmse"] < 120 and summary["test_mae"] < summary["test_rmse"]
    with np.load(tmp_path / "run" / "targets.npz") as z:
        assert z["bin_edges"].shape == (3,) and z["bin_centres"].shape == (4,)


def test_npz_attribute_run_reports_per_attribute_accuracy(tmp_path):
    X, y = blobs(n=300)
    path = write_npz(tmp_path / "d.npz", X=X, y=y, attributes=np.stack([y == 0, y == 1, y == 2], 1),
                     attribute_names=np.array(["First", "second class", "third"]))
    summary = train(tmp_path, {"data": {"dataset": "npz", "path": str(path)}, "loss": {"name": "attribute_hinge"},
                               "model": {"hidden": [16]}, "train": {"epochs": 5, "batch_size": 32}})
    keys = {"test_accuracy", "test_accuracy_first", "test_accuracy_second_class", "test_accuracy_third"}
    assert keys <= set(summary) and summary["test_accuracy"] > 0.9
    assert summary["test_accuracy"] == pytest.approx(np.mean([summary[k] for k in sorted(keys)[1:]]))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "val_accuracy" in rows[-1] and "val_accuracy_first" not in rows[-1]


def write_fake_cifar10(folder, n=30, seed=0):
    """The official python batch layout with `n` random images per batch."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))


def test_cifar10_attribute_logistic_end_to_end(tmp_path):
    write_fake_cifar10(tmp_path / "cifar-10-batches-py")
    summary = train(tmp_path, {"data": {"dataset": "cifar10", "root": str(tmp_path), "val_size": 10},
                               "model": {"hidden": [8]}, "loss": {"name": "attribute_logistic"},
                               "optim": {"lr": 1e-4}, "train": {"epochs": 1, "batch_size": 16}})
    per_attribute = [f"test_accuracy_{name}" for name in CIFAR10_ATTRIBUTE_NAMES]
    assert set(per_attribute) <= set(summary)
    assert summary["test_accuracy"] == pytest.approx(np.mean([summary[k] for k in per_attribute]))
    with np.load(tmp_path / "run" / "targets.npz") as z:
        assert z["names"].tolist() == list(CIFAR10_ATTRIBUTE_NAMES)


def test_real_cifar10_attribute_targets_follow_the_labels(cifar10_folder):
    data = load(DataConfig(dataset="cifar10", root=str(cifar10_folder.parent), val_size=1000), seed=0)
    labels = data.y_test.copy()
    data = data.with_targets("attributes")
    table = np.array([CIFAR10_ATTRIBUTES[c] for c in CIFAR10_CLASSES], dtype=np.float32)
    np.testing.assert_array_equal(data.y_test, table[labels])
    assert data.y_train.shape == (49000, 7)


# ---- loss / target mismatches ----------------------------------------------------------------

@pytest.mark.parametrize(("sets", "text"), [
    (["loss.name=attribute_hinge"], "loss.name=attribute_hinge needs attribute targets, but data.dataset=digits"),
    (["loss.name=attribute_logistic"], "data.dataset=digits provides class-label targets only"),
    (["loss.name=l2"], "loss.name=l2 needs regression targets"),
    (["data.dataset=diabetes"], "loss.name=softmax needs class-label targets, but data.dataset=diabetes"),
    (["data.dataset=diabetes", "loss.name=attribute_hinge"], "needs attribute targets"),
    (["loss.bins=5"], "loss.bins=5 (with loss.name=softmax) needs regression targets"),
    (["data.dataset=diabetes", "loss.name=l1", "loss.bins=5"], "loss.bins works with class losses"),
    (["data.dataset=npz"], "data.path is required"),
    (["data.path=x.npz"], "data.path is only read for data.dataset=npz"),
    (["loss.name=hierarchical_softmax", "loss.tree=[a, [b, b]]"], "loss.tree"),
    (["loss.margin=0"], "loss.margin"),
])
def test_config_rejects_loss_that_does_not_fit_the_targets(sets, text):
    args = ["validate", "configs/quickstart.yaml"]
    for item in sets:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert text in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_config_accepts_fitting_combinations():
    for sets in (["data.dataset=diabetes", "loss.name=l1"], ["data.dataset=diabetes", "loss.bins=4"],
                 ["data.dataset=cifar10", "loss.name=attribute_logistic"], ["loss.name=squared_hinge"],
                 ["data.dataset=npz", "data.path=x.npz", "loss.name=l2"]):
        assert load_config("configs/quickstart.yaml", sets).loss.name


def test_npz_mismatch_is_caught_when_loaded(tmp_path):
    X, y = blobs()
    path = write_npz(tmp_path / "classes.npz", X=X, y=y)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"dataset": "npz", "path": str(path)},
                                      "loss": {"name": "attribute_logistic"}, "train": {"epochs": 1}}))
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "loss.name=attribute_logistic needs attribute targets, but data.dataset=npz" in text
    assert "softmax, svm" in text


def test_example_configs_validate():
    from pathlib import Path

    configs = sorted(Path("configs").glob("loss_*.yaml"))
    assert len(configs) >= 8
    for path in configs:
        cfg = load_config(path)
        assert cfg.loss.name in path.stem or cfg.loss.bins is not None


def test_cifar10_offers_each_images_contrast_as_a_regression_target(tmp_path):
    from nnrun.datasets.cifar10 import image_contrast
    from tests.cifar_fixtures import write_cifar_folder

    write_cifar_folder(tmp_path)
    data = load(DataConfig(dataset="cifar10", root=str(tmp_path), val_size=10), seed=0)
    assert data.target_kinds() == ["classes", "attributes", "regression"]
    X_test = data.X_test.copy()
    data = data.with_targets("regression")
    assert data.target_names == ["contrast"] and data.y_test.shape == (len(X_test), 1)
    np.testing.assert_allclose(data.y_test[:, 0], X_test.astype(np.float64).std(axis=1), rtol=1e-6)
    np.testing.assert_allclose(image_contrast(np.array([[0, 255] * 1536], np.uint8)), [127.5])
    cfg = load_config(None, ["data.dataset=cifar10", f"data.root={tmp_path}", "data.val_size=10", "loss.bins=3"])
    assert cfg.loss.target_kind == "regression"
