"""Fused element-wise CUDA kernels for the GPU path (CuPy `ElementwiseKernel`s), each replacing several launches.

A training step on a GPU is bound by kernel launches, not arithmetic: the reference network's
step does about 7 ms of compute per epoch against hundreds of milliseconds of launches. Each
kernel here does in one launch what the array-module code does in three to twelve, with the
same formula (see the docstring of the layer, loss or optimizer it serves):

- `relu_backward`: `d = o > 0 ? d : 0` (two launches in array code);
- `dropout`: mask `(r < p) * scale` and `out = x * mask` (four);
- `softmax_xent`: the row softmax, the loss per row and `(softmax - targets) / N`, targets one-hot or
  label-smoothed (about twelve);
- the optimizer updates `sgd`, `momentum`, `nesterov`, `adam`, `rmsprop` (two to nine each).

Kernels are typed by the arrays (`T`: float32 for training, float64 for gradient checks) and
compiled by CuPy on first use, then cached. CPU code never imports this module's CuPy part.
"""

from __future__ import annotations

import functools
from typing import Any

RELU_BACKWARD = ("T o", "T d", "d = o > (T)0 ? d : (T)0", "nnrun_relu_backward")
DROPOUT = ("T x, T r, T p, T scale", "T mask, T out", "mask = r < p ? scale : (T)0; out = x * mask", "nnrun_dropout")
SOFTMAX_XENT = (
    "raw T s, raw I y, int32 c, T inv_n, T keep, T smooth", "raw T d, T row_loss",
    """
    const ptrdiff_t row = i * c;
    T top = s[row];
    for (int j = 1; j < c; ++j) { const T v = s[row + j]; top = v > top ? v : top; }
    T total = 0;
    T shifted_sum = 0;
    for (int j = 0; j < c; ++j) { const T v = s[row + j] - top; total += exp(v); shifted_sum += v; }
    const T scale = inv_n / total;
    const T uniform = smooth * inv_n;
    for (int j = 0; j < c; ++j) d[row + j] = exp(s[row + j] - top) * scale - uniform;
    const ptrdiff_t label = (ptrdiff_t)y[i];
    d[row + label] -= keep * inv_n;
    row_loss = log(total) - keep * (s[row + label] - top) - smooth * shifted_sum;
    """,
    "nnrun_softmax_xent")
UPDATES = {
    "sgd": ("T g, T lr", "T w", "w -= lr * g", "nnrun_sgd"),
    "momentum": ("T g, T lr, T mu", "T w, T v", "v = mu * v - lr * g; w += v", "nnrun_momentum"),
    "nesterov": ("T g, T lr, T mu", "T w, T v", "const T step = lr * g; v = mu * v - step; w += mu * v - step",
                 "nnrun_nesterov"),
    "adam": ("T g, T b1, T one_minus_b1, T b2, T one_minus_b2, T inv_c2, T step, T eps", "T w, T m, T v",
             "m = b1 * m + one_minus_b1 * g; v = b2 * v + one_minus_b2 * (g * g); "
             "w -= step * (m / (sqrt(v * inv_c2) + eps))", "nnrun_adam"),
    "rmsprop": ("T g, T lr, T decay, T one_minus_decay, T eps", "T w, T c",
                "c = decay * c + one_minus_decay * (g * g); w -= lr * g / (sqrt(c) + eps)", "nnrun_rmsprop"),
}
"""Optimizer update kernels by rule name: `(inputs, in-place outputs, body, kernel name)`; arguments are the
gradient and the rule's scalars (those that are differences, like `1 - beta1`, computed in float64 first, as the
CPU rules do), then the weights and the rule's state arrays (in `Optimizer.slots` order)."""


@functools.cache
def kernel(spec: tuple[str, str, str, str]) -> Any:
    """The compiled CuPy kernel of `spec` (inputs, outputs, body, name), built once per process."""
    import cupy

    return cupy.ElementwiseKernel(*spec)


def relu_backward(out: Any, dout: Any) -> Any:
    """dout (N, D) overwritten with `dout * (out > 0)`; returned."""
    return kernel(RELU_BACKWARD)(out, dout)


def dropout(x: Any, uniform: Any, keep: float, scale: float) -> tuple[Any, Any]:
    """x, uniform (N, D) -> (mask, x * mask) with `mask = (uniform < keep) * scale`, both new arrays."""
    t = x.dtype.type
    return kernel(DROPOUT)(x, uniform, t(keep), t(scale))


def softmax_xent(scores: Any, y: Any, label_smoothing: float = 0.0) -> tuple[Any, Any]:
    """scores (N, C), y (N,) int -> (mean loss as a 0-d array, dscores (N, C)), as `SoftmaxCrossEntropy` with
    `label_smoothing` e: targets `(1 - e) onehot + e / C`."""
    import cupy

    n, c = scores.shape
    t = scores.dtype.type
    scores = cupy.ascontiguousarray(scores)
    dscores = cupy.empty_like(scores)
    row_loss = cupy.empty(n, dtype=scores.dtype)
    kernel(SOFTMAX_XENT)(scores.reshape(-1), y, c, t(1.0 / n), t(1.0 - label_smoothing), t(label_smoothing / c),
                         dscores.reshape(-1), row_loss)
    return row_loss.mean(), dscores


def update(rule: str, w: Any, g: Any, slots: tuple[Any, ...], scalars: tuple[float, ...]) -> None:
    """Apply the update kernel of `rule` to one parameter in place: weights `w`, gradient `g`, state `slots`,
    the rule's scalars converted to the weights' dtype."""
    t = w.dtype.type
    kernel(UPDATES[rule])(g, *(t(s) for s in scalars), w, *slots)
