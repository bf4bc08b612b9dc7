"""The datasets scikit-learn ships, which need no download.

- `digits`: 1,797 handwritten digits of 8x8 pixels, values 0..16, ten classes.
- `diabetes`: 442 patients, 10 features as scikit-learn ships them (centred and scaled), one
  regression target (disease progression after a year).
Both carve test, then val, from the whole pool with the `split` stream.
"""

from __future__ import annotations

import numpy as np

from nnrun.datasets.dataset import DataOptions, Dataset, SplitRecord
from nnrun.datasets.split import split_indices
from nnrun.rng import stream


def load_digits(options: DataOptions, seed: int) -> Dataset:
    """scikit-learn's 8x8 digits, pixel values 0..16, carved into train/val/test."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    X = bunch.data.astype(np.float32)
    y = bunch.target.astype(np.int64)
    train, val, test = split_indices(len(X), options, stream(seed, "split"), carve_test=True)
    return Dataset("digits", X[train], y[train], X[val], y[val], X[test], y[test],
                   [str(c) for c in bunch.target_names], (1, 8, 8),
                   split=SplitRecord.carved(len(X), train, val, test))


def load_diabetes(options: DataOptions, seed: int) -> Dataset:
    """scikit-learn's diabetes regression data: 442 x 10 features, one float target, carved like digits."""
    from sklearn.datasets import load_diabetes as sk_load_diabetes

    bunch = sk_load_diabetes()
    X = bunch.data.astype(np.float32)
    y = bunch.target.astype(np.float32)[:, None]
    train, val, test = split_indices(len(X), options, stream(seed, "split"), carve_test=True)
    return Dataset("diabetes", X[train], y[train], X[val], y[val], X[test], y[test], [], None,
                   target_kind="regression", target_names=["progression"],
                   split=SplitRecord.carved(len(X), train, val, test))
