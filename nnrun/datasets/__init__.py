"""Datasets: raw arrays and a seeded train/val/test split. Nothing is fitted here.

`DATASETS` is the registry of dataset names; `load_dataset(name, options, seed)` loads one.
The loaders live one per module: `bundled` (digits, diabetes), `cifar10`, `npz`; `split` holds
the seeded split and `dataset` the `Dataset` they return.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nnrun.datasets.bundled import load_diabetes, load_digits
from nnrun.datasets.cifar10 import load_cifar10
from nnrun.datasets.dataset import SPLITS, TARGET_KINDS, TARGET_WORDS, DataOptions, Dataset, SplitRecord
from nnrun.datasets.npz import load_npz

__all__ = ["DATASETS", "SPLITS", "TARGET_KINDS", "TARGET_WORDS", "DataOptions", "Dataset", "DatasetEntry",
           "SplitRecord", "load_dataset"]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its loader `(DataOptions, seed) -> Dataset`, the target kinds it offers
    (None: known only once its file is read), one line for help texts, and the `DataOptions` fields
    (data config keys) its loader reads (`nnrun validate` marks the others as having no effect)."""

    load: Callable[[DataOptions, int], Dataset]
    target_kinds: tuple[str, ...] | None
    summary: str
    options: tuple[str, ...] = ("val_size", "test_size", "train_size")


DATASETS: dict[str, DatasetEntry] = {
    "digits": DatasetEntry(load_digits, ("classes",), "scikit-learn's bundled 8x8 digit images"),
    "cifar10": DatasetEntry(load_cifar10, ("classes", "attributes", "regression"),
                            "32x32 colour images under data.root; classes, attributes or the images' contrast",
                            ("root", "download", "val_size", "train_size")),
    "diabetes": DatasetEntry(load_diabetes, ("regression",), "scikit-learn's bundled regression data"),
    "npz": DatasetEntry(load_npz, None, "your own .npz file at data.path",
                        ("path", "val_size", "test_size", "train_size")),
}
"""Registry: config name -> `DatasetEntry`."""


def load_dataset(name: str, options: DataOptions, seed: int) -> Dataset:
    """Load and split the dataset `name` with the `split` stream of `seed`."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name].load(options, seed)
