"""Preprocessing fitted on the training split only, then applied to train, val and test.

Fitting statistics on all data and splitting afterwards leaks val/test information into
training: `fit` only ever sees `X_train`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnrun.io import write_npz


class Preprocessor:
    """`fit(X_train)` learns statistics; `transform(X)` applies them. X: float32 (N, D)."""

    def __init__(self, cfg, image_shape: tuple[int, int, int] | None = None) -> None:
        self.cfg = cfg
        self.image_shape = image_shape
        self.mean: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> Preprocessor:
        """Learn the statistics from the training split X: (N, D)."""
        if self.cfg.center == "per_feature":
            self.mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        return self

    def transform(self, X: np.ndarray, copy: bool = True) -> np.ndarray:
        """X: (N, D) -> (N, D) float32; with `copy=False` a float32 X is overwritten."""
        X = np.array(X, dtype=np.float32, copy=copy or X.dtype != np.float32)
        if self.mean is not None:
            X -= self.mean
        return X

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        """Map preprocessed rows back to the input space."""
        X = np.array(Z, dtype=np.float32)
        if self.mean is not None:
            X += self.mean
        return X

    def statistics(self) -> dict[str, np.ndarray]:
        """The fitted statistics by name (the keys of `preprocess.npz`)."""
        return {} if self.mean is None else {"mean": self.mean}

    def save(self, path: str | Path) -> Path:
        """Write the statistics to `path` atomically."""
        return write_npz(path, self.statistics())


def fit_preprocessor(cfg, X_train: np.ndarray, image_shape: tuple[int, int, int] | None = None) -> Preprocessor:
    """A `Preprocessor` for `cfg` (a `PreprocessConfig`) fitted on the training split."""
    return Preprocessor(cfg, image_shape).fit(X_train)
