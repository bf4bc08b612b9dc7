"""The `Dataset` every loader returns: split arrays, target names, and the target kinds it offers.

Targets come in three kinds: `classes` (int64 (N,)), `attributes` (float32 (N, A) of 0/1) and
`regression` (float32 (N, T)). A dataset's `y_*` arrays hold one kind; other kinds it can offer
wait in `alternatives` until `with_targets(kind)` returns a dataset that trains on them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TARGET_KINDS = ("classes", "attributes", "regression")
"""The kinds of targets: int class labels (N,), a 0/1 attribute matrix (N, A), float outputs (N, T)."""
TARGET_WORDS = {"classes": "class-label", "attributes": "attribute", "regression": "regression"}
"""How messages name each kind of target."""


@dataclass(frozen=True)
class DataOptions:
    """Where a loader finds its data and how it splits it.

    `root`: folder of dataset files (CIFAR-10); `path`: the file of the `npz` dataset;
    `download`: fetch a missing official archive (from `url` when given); `val_size`, `test_size`: counts, or fractions
    in (0, 1); `train_size`: keep a seeded subset of this many training examples (None: all).
    """

    root: Path = Path("data")
    path: str | None = None
    download: bool = False
    url: str | None = None
    val_size: int | float = 0.1
    test_size: int | float = 0.2
    train_size: int | None = None


@dataclass
class Dataset:
    """A split dataset. X_*: float32 (N, D); y_*: targets of kind `target_kind`.

    y_*: int64 (N,) class labels for `classes`, float32 (N, A) of 0/1 for `attributes`,
    float32 (N, T) for `regression`. `image_shape` is (channels, height, width) of one row
    reshaped, or None for non-images. `class_names`, `attribute_names` and `target_names`
    name the classes, attributes and regression outputs the dataset has (empty when none).
    `alternatives` maps another target kind the dataset offers to its (train, val, test) arrays.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    image_shape: tuple[int, int, int] | None
    target_kind: str = "classes"
    attribute_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)
    alternatives: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_targets(self) -> int:
        """Classes, attributes or regression outputs of the current targets."""
        if self.target_kind == "classes":
            return self.n_classes
        return self.y_train.shape[1]

    @property
    def target_names_of_kind(self) -> list[str]:
        """The names of the current targets: class, attribute or output names."""
        return {"classes": self.class_names, "attributes": self.attribute_names,
                "regression": self.target_names}[self.target_kind]

    def target_kinds(self) -> list[str]:
        """Every kind of target this dataset can train on, the current one first."""
        return [self.target_kind, *self.alternatives]

    def with_targets(self, kind: str) -> Dataset:
        """This dataset training on `kind` (one of `target_kinds()`); the arrays are shared, not copied."""
        if kind == self.target_kind:
            return self
        if kind not in self.alternatives:
            raise ValueError(f"dataset {self.name} offers {', '.join(self.target_kinds())} targets, not {kind}")
        alternatives = {k: v for k, v in self.alternatives.items() if k != kind}
        alternatives[self.target_kind] = (self.y_train, self.y_val, self.y_test)
        y_train, y_val, y_test = self.alternatives[kind]
        return dataclasses.replace(self, y_train=y_train, y_val=y_val, y_test=y_test, target_kind=kind,
                                   alternatives=alternatives)

    def with_features(self, X_train: np.ndarray, X_val: np.ndarray, X_test: np.ndarray) -> Dataset:
        """This dataset with other feature matrices (preprocessed ones), the targets shared."""
        return dataclasses.replace(self, X_train=X_train, X_val=X_val, X_test=X_test)

    def sizes(self) -> dict[str, int]:
        """Examples per split."""
        return {"train": len(self.X_train), "val": len(self.X_val), "test": len(self.X_test)}
