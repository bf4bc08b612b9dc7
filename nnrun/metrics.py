"""Metrics that fit each kind of target, computed in float64.

- classes: top-1 `accuracy`;
- attributes: per-attribute accuracy `accuracy_<name>` and their mean `accuracy`;
- regression: `mae` and `rmse` over all outputs, in the targets' units;
- binned regression (`loss.bins`) with bin probabilities: the predictive distribution is piecewise
  uniform, bin k spreading its probability p_k evenly over `[bounds[k], bounds[k+1])` (`bounds`:
  the training minimum, the K - 1 inner edges, the training maximum). `binned_nll` is the mean of
  `-log(p_k / width_k)` at each target's bin (a target outside the training range counts in the
  outer bin on its side), `interval_coverage` the fraction of targets inside the central interval
  of a level, between the quantiles `(1 - level) / 2` and `(1 + level) / 2` of the predictive CDF.
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


COVERAGE_LEVELS = (0.8, 0.95)
"""The central intervals whose coverage binned regression reports (`coverage_80`, `coverage_95`)."""


def coverage_key(level: float) -> str:
    """The metric name of the coverage of the central interval of `level`: 0.8 -> `coverage_80`."""
    return f"coverage_{round(level * 100):d}"


def bin_widths(bounds: np.ndarray) -> np.ndarray:
    """bounds (K+1,) increasing -> the width of each of the K bins (K,), float64."""
    return np.diff(np.asarray(bounds, dtype=np.float64))


def expected_value(proba: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The expectation of the bin centres under the bin probabilities: proba (N, K), centres (K,) -> (N,)
    `sum_k proba[:, k] * centres[k]`, float64."""
    return np.asarray(proba, dtype=np.float64) @ np.asarray(centres, dtype=np.float64)


def binned_cdf(proba: np.ndarray, bounds: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The predictive CDF at each target: proba (N, K), bounds (K+1,), y (N,) -> F(y) (N,) in [0, 1].

    `F(y) = p_0 + ... + p_{k-1} + p_k (y - bounds[k]) / width_k` for y in bin k; 0 below the first bound,
    1 above the last."""
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(len(p))
    bounds = np.asarray(bounds, dtype=np.float64)
    k = np.clip(np.searchsorted(bounds[1:-1], y, side="right"), 0, p.shape[1] - 1)
    rows = np.arange(len(p))
    below = np.cumsum(p, axis=1)[rows, k] - p[rows, k]
    inside = np.clip((y - bounds[k]) / bin_widths(bounds)[k], 0.0, 1.0)
    cdf = np.clip(below + p[rows, k] * inside, 0.0, 1.0)
    cdf[y >= bounds[-1]] = 1.0  # exactly, whatever the rounding of the sum
    return cdf


def binned_quantile(proba: np.ndarray, bounds: np.ndarray, q: float) -> np.ndarray:
    """The q-quantile of each row's piecewise-uniform distribution: proba (N, K), bounds (K+1,) -> (N,) float64,
    the smallest y with F(y) = q (inside the first bin whose cumulative probability reaches q)."""
    p = np.asarray(proba, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.float64)
    cum = np.cumsum(p, axis=1)
    cum /= cum[:, -1:]  # rows summing to 1 up to rounding: the last bin ends at exactly 1
    k = np.minimum((cum < q).sum(axis=1), p.shape[1] - 1)
    rows = np.arange(len(p))
    before = np.where(k > 0, cum[rows, k - 1], 0.0)
    mass = cum[rows, k] - before
    fraction = np.divide(q - before, mass, out=np.zeros(len(p)), where=mass > 0)
    return bounds[k] + np.clip(fraction, 0.0, 1.0) * bin_widths(bounds)[k]


def central_interval(proba: np.ndarray, bounds: np.ndarray, level: float) -> np.ndarray:
    """The central interval of `level` (0 < level < 1) of each row: (N, 2) float64, the quantiles
    `(1 - level) / 2` and `(1 + level) / 2`."""
    tail = (1.0 - level) / 2.0
    return np.stack([binned_quantile(proba, bounds, tail), binned_quantile(proba, bounds, 1.0 - tail)], axis=1)


def interval_coverage(proba: np.ndarray, bounds: np.ndarray, y: np.ndarray, level: float) -> float:
    """The fraction of targets y (N,) inside their row's central interval of `level` (ends included)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if not len(y):
        return float("nan")
    interval = central_interval(proba, bounds, level)
    return float(np.mean((interval[:, 0] <= y) & (y <= interval[:, 1])))


def binned_nll(proba: np.ndarray, bounds: np.ndarray, y: np.ndarray) -> float:
    """The mean negative log density of the targets: `-log(p_k / width_k)` with k the bin of y (the outer bins
    take the targets beyond the bounds), in nats per example, for y in its own units. A probability below the
    smallest normal float64 counts as that (the value stays finite)."""
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(len(p))
    if not len(y):
        return float("nan")
    bounds = np.asarray(bounds, dtype=np.float64)
    k = np.clip(np.searchsorted(bounds[1:-1], y, side="right"), 0, p.shape[1] - 1)
    density = np.maximum(p[np.arange(len(p)), k], np.finfo(np.float64).tiny) / bin_widths(bounds)[k]
    return float(-np.mean(np.log(density)))
