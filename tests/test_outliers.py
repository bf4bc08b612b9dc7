"""data.train_outliers: a share of the training regression targets made outliers, validation and test kept clean."""

import numpy as np
import pytest

from nnrun.config import load_config
from nnrun.datasets import Dataset
from nnrun.datasets.dataset import OUTLIER_SCALE
from nnrun.errors import UserInputError
from nnrun.experiment import load_data


def dataset(kind: str) -> Dataset:
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((n, 3)).astype(np.float32) for n in (200, 20, 30)]
    y = [rng.standard_normal((n, 2)).astype(np.float32) * 3 + 5 for n in (200, 20, 30)]
    labels = [rng.integers(0, 2, n) for n in (200, 20, 30)]
    if kind == "regression":
        return Dataset("toy", X[0], y[0], X[1], y[1], X[2], y[2], [], None, target_kind="regression",
                       target_names=["a", "b"], alternatives={"classes": tuple(labels)})
    return Dataset("toy", X[0], labels[0], X[1], labels[1], X[2], labels[2], ["n", "p"], None,
                   target_names=["a", "b"], alternatives={"regression": tuple(y)})


@pytest.mark.parametrize("kind", ["regression", "classes"])
def test_outliers_lie_ten_standard_deviations_above_a_share_of_the_training_targets(kind):
    data = dataset(kind)
    clean = data.with_targets("regression")
    dirty = data.with_train_outliers(0.1, np.random.default_rng(3)).with_targets("regression")
    moved = np.flatnonzero((dirty.y_train != clean.y_train).any(axis=1))
    assert len(moved) == 20  # 10 % of 200 rows, both outputs of each
    shift = dirty.y_train[moved] - clean.y_train[moved]
    assert np.allclose(shift, OUTLIER_SCALE * clean.y_train.astype(np.float64).std(axis=0), rtol=1e-5)
    assert np.array_equal(dirty.y_val, clean.y_val) and np.array_equal(dirty.y_test, clean.y_test)
    assert dirty.target_kind == "regression" and data.with_train_outliers(0.0, np.random.default_rng(3)) is data
    # the dataset's own arrays are not changed
    assert np.array_equal(data.with_targets("regression").y_train, clean.y_train)


def test_a_dataset_without_regression_targets_has_no_outliers_to_make():
    data = dataset("classes")
    data.alternatives.pop("regression")
    with pytest.raises(ValueError, match="no regression targets"):
        data.with_train_outliers(0.1, np.random.default_rng(0))


def test_the_config_takes_outliers_with_regression_losses_only_and_load_data_applies_them():
    with pytest.raises(UserInputError, match="data.train_outliers makes outliers of regression targets"):
        load_config(None, ["data.dataset=digits", "data.train_outliers=0.1"])
    load_config(None, ["data.dataset=diabetes", "data.train_outliers=0.1", "loss.bins=5"])
    clean = load_data(load_config(None, ["data.dataset=diabetes", "loss.name=l2"])).with_targets("regression")
    cfg = load_config(None, ["data.dataset=diabetes", "loss.name=l2", "data.train_outliers=0.1"])
    first, second = (load_data(cfg).with_targets("regression") for _ in range(2))
    assert np.array_equal(first.y_train, second.y_train)  # seeded: the `outliers` stream of the config's seed
    moved = np.flatnonzero(first.y_train[:, 0] != clean.y_train[:, 0])
    assert len(moved) == round(0.1 * len(clean.y_train)) and np.array_equal(first.y_test, clean.y_test)
