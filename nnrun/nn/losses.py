"""Losses on the network's scores. Each returns its own gradient.

Convention: `scores` is (N, C) as produced by `x @ W + b`; every loss is averaged over the N
examples of the batch, and `loss_and_grad` returns `(loss, dscores)` with dscores: (N, C).
"""

from __future__ import annotations

import numpy as np


class SoftmaxCrossEntropy:
    """Softmax cross-entropy: `L = mean_i [-s_{i,y_i} + log sum_j exp(s_ij)]`.

    Gradient `(softmax(s) - onehot(y)) / N`; the softmax subtracts the row max for stability.
    Targets are integer class labels (N,).
    """

    target_kind = "classes"

    def output_dim(self, n_classes: int) -> int:
        """Number of scores the network must produce."""
        return n_classes

    def loss_and_grad(self, scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """scores: (N, C), y: (N,) int -> (loss, dscores (N, C))."""
        n = scores.shape[0]
        shifted = scores - scores.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sums = exp.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        loss = float(np.mean(np.log(sums[:, 0]) - shifted[rows, y]))
        probs = np.divide(exp, sums, out=exp)
        probs[rows, y] -= 1
        probs /= n
        return loss, probs

    def loss(self, scores: np.ndarray, y: np.ndarray) -> float:
        """The loss alone (no gradient), for evaluation."""
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=1))
        return float(np.mean(log_z - shifted[np.arange(scores.shape[0]), y]))

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """scores: (N, C) -> predicted class (N,)."""
        return scores.argmax(axis=1)

    def metrics(self, scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Metrics for classes: top-1 accuracy."""
        return {"accuracy": float(np.mean(self.predict(scores) == y))}


LOSSES = {
    "softmax": SoftmaxCrossEntropy,
}
"""Registry: config name -> loss class."""
