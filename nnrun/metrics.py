"""Metrics that fit each kind of target, computed in float64.

- classes: top-1 `accuracy`;
- attributes: per-attribute accuracy `accuracy_<name>` and their mean `accuracy`;
- regression: `mae` and `rmse` over all outputs, in the targets' units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Fraction of equal entries: pred, y: (N,) class labels."""
    return float(np.mean(pred == y)) if len(y) else float("nan")


def attribute_accuracies(pred: np.ndarray, y: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """pred, y: (N, A) 0/1 -> {'accuracy': mean over attributes, 'accuracy_<name>': per attribute}."""
    per = np.mean(pred == (y > 0.5), axis=0, dtype=np.float64) if len(y) else np.full(y.shape[1], np.nan)
    out = {"accuracy": float(per.mean())}
    out.update({f"accuracy_{name}": float(v) for name, v in zip(names, per, strict=True)})
    return out


def rmse(pred: np.ndarray, y: np.ndarray) -> float:
    """Root mean squared error over all entries of pred, y: (N, T)."""
    err = np.asarray(pred, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return float(np.sqrt(np.mean(err * err)))


def regression_errors(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """pred, y: (N, T) -> {'mae': mean |error|, 'rmse': sqrt(mean error^2)} over all N * T entries."""
    err = np.asarray(pred, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err * err)))}
