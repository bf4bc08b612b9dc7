"""The numba-compiled bodies of `nnrun.cpu_kernels` (imported by it on first use; see its docstring).

Each kernel splits rows, or runs of `CHUNK` elements, among numba's threads (`prange`) and writes
every element from the same float operations, in the same order, as the NumPy code it replaces.
Scalars arrive in the arrays' dtype, and constants are made in it (`x.dtype.type(0)`): nothing widens to float64.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange

if "NUMBA_THREADING_LAYER" not in os.environ:
    # workqueue: its idle threads sleep instead of spinning against OpenBLAS's threads, which made numba's OpenMP
    # layer 1.75x slower per epoch on 2 cores (cpu_kernels' docstring). It takes launches from one thread at a
    # time, which cpu_kernels.usable keeps to (the main thread only).
    numba.config.THREADING_LAYER = "workqueue"

CHUNK = 8192
"""Elements per task of the flat kernels (32 KiB of float32 per array: a task's arrays stay in L1/L2)."""


def max_threads() -> int:
    """The most threads numba can use in this process (`NUMBA_NUM_THREADS`, by default the CPUs)."""
    return numba.config.NUMBA_NUM_THREADS


def set_num_threads(n: int) -> None:
    """numba's thread count for parallel kernels launched from this thread."""
    numba.set_num_threads(n)


@njit(parallel=True, cache=True)
def add_bias(out, b):  # noqa: ANN001, ANN201 - numba-compiled: types come from the arguments
    rows, cols = out.shape
    for r in prange(rows):
        for j in range(cols):
            out[r, j] = out[r, j] + b[j]


@njit(parallel=True, cache=True)
def subtract_row(x, mean):  # noqa: ANN001, ANN201
    rows, cols = x.shape
    for r in prange(rows):
        for j in range(cols):
            x[r, j] = x[r, j] - mean[j]


@njit(parallel=True, cache=True)
def relu(x):  # noqa: ANN001, ANN201
    n = x.size
    zero = x.dtype.type(0)
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            v = x[i]
            x[i] = zero if v <= zero else v  # a select, not a branch: the loop vectorizes; NaN stays, -0.0 -> 0.0


@njit(parallel=True, cache=True)
def relu_backward(d, o):  # noqa: ANN001, ANN201
    n = d.size
    zero, one = d.dtype.type(0), d.dtype.type(1)
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            d[i] = d[i] * (one if o[i] > zero else zero)  # d * (o > 0): a zero with d's sign, NaN for NaN


@njit(parallel=True, cache=True)
def gather_rows(X, index, out):  # noqa: ANN001, ANN201
    cols = X.shape[1]
    for r in prange(index.size):
        src = index[r]
        for j in range(cols):
            out[r, j] = X[src, j]


@njit(parallel=True, cache=True)
def dropout(x, uniform, keep, scale, mask, out):  # noqa: ANN001, ANN201
    n = x.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            if uniform[i] < keep:
                mask[i] = scale
            else:
                mask[i] = 0
            out[i] = x[i] * mask[i]


@njit(parallel=True, cache=True)
def batchnorm_normalize(x, inv_std, gamma, beta, out):  # noqa: ANN001, ANN201
    rows, cols = x.shape
    for r in prange(rows):
        for j in range(cols):
            xhat = x[r, j] * inv_std[j]
            x[r, j] = xhat
            out[r, j] = xhat * gamma[j] + beta[j]


@njit(parallel=True, cache=True)
def batchnorm_input_grad(dout, xhat, dbeta, dgamma, n, factor, dx):  # noqa: ANN001, ANN201
    rows, cols = dout.shape
    for r in prange(rows):
        for j in range(cols):
            dx[r, j] = ((dout[r, j] * n - dbeta[j]) - xhat[r, j] * dgamma[j]) * factor[j]


@njit(parallel=True, cache=True)
def sgd(w, g, lr):  # noqa: ANN001, ANN201
    n = w.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            w[i] = w[i] + g[i] * -lr


@njit(parallel=True, cache=True)
def momentum(w, g, v, lr, mu):  # noqa: ANN001, ANN201
    n = w.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            vi = v[i] * mu - g[i] * lr
            v[i] = vi
            w[i] = w[i] + vi


@njit(parallel=True, cache=True)
def nesterov(w, g, v, lr, mu):  # noqa: ANN001, ANN201
    n = w.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            step = g[i] * lr
            vi = v[i] * mu - step
            v[i] = vi
            w[i] = (w[i] - step) + mu * vi


@njit(parallel=True, cache=True)
def adam(w, g, m, v, b1, one_minus_b1, b2, one_minus_b2, inv_c2, step, eps):  # noqa: ANN001, ANN201
    n = w.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            gi = g[i]
            mi = m[i] * b1 + one_minus_b1 * gi
            vi = v[i] * b2 + (gi * gi) * one_minus_b2
            m[i] = mi
            v[i] = vi
            w[i] = w[i] - (mi / (np.sqrt(vi * inv_c2) + eps)) * step


@njit(parallel=True, cache=True)
def rmsprop(w, g, cache, lr, decay, one_minus_decay, eps):  # noqa: ANN001, ANN201
    n = w.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            gi = g[i]
            ci = cache[i] * decay + one_minus_decay * (gi * gi)
            cache[i] = ci
            w[i] = w[i] - (gi * lr) / (np.sqrt(ci) + eps)
