"""The `Dataset` every loader returns: split arrays, target names, and the target kinds it offers.

Targets come in three kinds: `classes` (int64 (N,)), `attributes` (float32 (N, A) of 0/1) and
`regression` (float32 (N, T)). A dataset's `y_*` arrays hold one kind; other kinds it can offer
wait in `alternatives` until `with_targets(kind)` returns a dataset that trains on them.
Its `split` (`SplitRecord`) says which rows of which pool each split holds; a run directory keeps
it as `split.npz` (`SplitRecord.arrays`), so the exact rows can be found again.
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
SPLITS = ("train", "val", "test")
"""The three splits, in the order of a `Dataset`'s arrays."""
SPLIT_LAYOUT_VERSION = 1
"""Layout version of `SplitRecord.arrays` (split.npz); a newer one is refused by `SplitRecord.from_arrays`."""
WHOLE_POOL = "all"
"""The pool name of a dataset carved from one pool: all its rows in their file order."""
OUTLIER_SCALE = 10.0
"""How far an outlier made by `Dataset.with_train_outliers` lies above its clean target, in standard deviations."""


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


@dataclass(frozen=True)
class SplitRecord:
    """Which rows each split holds: `indices[split]` (sorted int64 row numbers) into the pool
    `pools[split]`, a named sequence of `pool_sizes[pool]` rows in the dataset's own order (CIFAR-10's
    `data_batches`: data_batch_1..5 concatenated; `all`: every row of a dataset carved into three)."""

    indices: dict[str, np.ndarray]
    pools: dict[str, str]
    pool_sizes: dict[str, int]

    @classmethod
    def carved(cls, n_pool: int, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> SplitRecord:
        """All three splits carved from one pool of `n_pool` rows (`WHOLE_POOL`)."""
        return cls({"train": train, "val": val, "test": test}, dict.fromkeys(SPLITS, WHOLE_POOL),
                   {WHOLE_POOL: n_pool})

    def arrays(self) -> dict[str, np.ndarray]:
        """The `split.npz` layout: `version`; `train`, `val`, `test` (int64 row indices into their pool);
        `train_pool`, `val_pool`, `test_pool` (pool names); `pool_names` and `pool_sizes` (rows per pool)."""
        arrays: dict[str, np.ndarray] = {"version": np.array(SPLIT_LAYOUT_VERSION)}
        for split in SPLITS:
            arrays[split] = np.asarray(self.indices[split], dtype=np.int64)
            arrays[f"{split}_pool"] = np.array(self.pools[split])
        arrays["pool_names"] = np.array(list(self.pool_sizes), dtype=str)
        arrays["pool_sizes"] = np.array(list(self.pool_sizes.values()), dtype=np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SplitRecord:
        """The record `arrays` wrote; a `ValueError` names what is missing, malformed or too new."""
        try:
            version = int(arrays["version"])
            if version > SPLIT_LAYOUT_VERSION:
                raise ValueError(f"layout version {version} is newer than this nnrun reads "
                                 f"({SPLIT_LAYOUT_VERSION}); upgrade nnrun")
            indices = {s: np.asarray(arrays[s], dtype=np.int64).reshape(-1) for s in SPLITS}
            pools = {s: str(arrays[f"{s}_pool"]) for s in SPLITS}
            sizes = {str(n): int(k) for n, k in zip(arrays["pool_names"].tolist(), arrays["pool_sizes"].tolist(),
                                                     strict=True)}
        except KeyError as e:
            raise ValueError(f"key {e} is missing") from None
        except TypeError as e:
            raise ValueError(f"malformed entry: {e}") from None
        for split in SPLITS:
            if pools[split] not in sizes:
                raise ValueError(f"{split}_pool names pool {pools[split]!r}, which pool_names does not list")
            index = indices[split]
            if index.size and (index.min() < 0 or index.max() >= sizes[pools[split]]):
                raise ValueError(f"{split} holds row numbers outside its pool of {sizes[pools[split]]} rows")
        return cls(indices, pools, sizes)

    def same_rows(self, other: SplitRecord) -> bool:
        """Whether `other` selects exactly the same rows of the same pools."""
        return (self.pools == other.pools and self.pool_sizes == other.pool_sizes
                and all(np.array_equal(self.indices[s], other.indices[s]) for s in SPLITS))


@dataclass
class Dataset:
    """A split dataset. X_*: float32 (N, D); y_*: targets of kind `target_kind`.

    y_*: int64 (N,) class labels for `classes`, float32 (N, A) of 0/1 for `attributes`,
    float32 (N, T) for `regression`. `image_shape` is (channels, height, width) of one row
    reshaped, or None for non-images. `class_names`, `attribute_names` and `target_names`
    name the classes, attributes and regression outputs the dataset has (empty when none).
    `alternatives` maps another target kind the dataset offers to its (train, val, test) arrays.
    `split` records the rows of each split (None for a dataset built by hand).
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
    split: SplitRecord | None = None

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

    def with_train_outliers(self, fraction: float, rng: np.random.Generator) -> Dataset:
        """This dataset with `round(fraction * N)` training rows' regression targets made outliers: each drawn row
        (without replacement, from `rng`) gets `OUTLIER_SCALE` standard deviations (ddof 0, of the clean training
        targets, per output) added to its target, like a sensor that now and then reads far too high. Validation
        and test targets stay clean, so their scores say how well the clean relation was learnt. The regression
        targets change whether they are the current kind or an alternative; a dataset without them is a
        `ValueError`. Returns a new dataset (the other arrays shared); `fraction` 0 returns this one."""
        if not fraction:
            return self
        if "regression" not in self.target_kinds():
            raise ValueError(f"dataset {self.name} has no regression targets to make outliers of")
        current = self.target_kind == "regression"
        y = self.y_train if current else self.alternatives["regression"][0]
        rows = np.sort(rng.permutation(len(y))[:round(fraction * len(y))])
        corrupted = np.array(y, dtype=np.float32, copy=True)
        corrupted[rows] += (OUTLIER_SCALE * y.astype(np.float64).std(axis=0)).astype(np.float32)
        if current:
            return dataclasses.replace(self, y_train=corrupted)
        _, y_val, y_test = self.alternatives["regression"]
        return dataclasses.replace(self, alternatives={**self.alternatives, "regression": (corrupted, y_val, y_test)})

    def with_features(self, X_train: np.ndarray, X_val: np.ndarray, X_test: np.ndarray) -> Dataset:
        """This dataset with other feature matrices (preprocessed ones), the targets shared."""
        return dataclasses.replace(self, X_train=X_train, X_val=X_val, X_test=X_test)

    def sizes(self) -> dict[str, int]:
        """Examples per split."""
        return {"train": len(self.X_train), "val": len(self.X_val), "test": len(self.X_test)}
