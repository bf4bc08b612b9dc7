"""The numba-compiled bodies of `nnrun.cpu_kernels` (imported by it on first use; see its docstring).

Each kernel splits blocks of rows, or runs of `CHUNK` elements, among numba's threads (`prange`) and writes
every element from the same float operations, in the same order, as the NumPy code it replaces.
Scalars arrive in the arrays' dtype, and constants are made in it (`x.dtype.type(0)`): nothing widens to float64.

Every kernel is a parallel driver that hands each block to a serial `_..._span` body. A loop written
inside the `prange` body itself is not vectorized by LLVM (numba's parallel lowering hides that the
arrays do not overlap), and ran 2.5-4.5x slower than the same loop in its own serial function (the
momentum update of a 3072 x 512 matrix on the 2-core AMD EPYC: 1,570 us against 383 us on one thread,
and against NumPy's 990 us).
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


@njit(cache=True)
def blocks(n: int, size: int) -> int:
    """Blocks of `size` that cover `n` items (the last one may be partial)."""
    return (n + size - 1) // size


@njit(cache=True)
def rows_per_block(cols: int) -> int:
    """Rows of `cols` elements in one block of about `CHUNK` elements (at least one)."""
    return max(1, CHUNK // max(1, cols))


# ---- serial bodies: one block each, plain loops LLVM vectorizes ------------------------------------------------

@njit(cache=True)
def _add_bias_span(out, b):  # noqa: ANN001, ANN201 - numba-compiled: types come from the arguments
    for r in range(out.shape[0]):
        row = out[r]
        for j in range(row.size):
            row[j] = row[j] + b[j]


@njit(cache=True)
def _subtract_row_span(x, mean):  # noqa: ANN001, ANN201
    for r in range(x.shape[0]):
        row = x[r]
        for j in range(row.size):
            row[j] = row[j] - mean[j]


@njit(cache=True)
def _relu_span(x):  # noqa: ANN001, ANN201
    zero = x.dtype.type(0)
    for i in range(x.size):
        v = x[i]
        x[i] = zero if v <= zero else v  # a select, not a branch: the loop vectorizes; NaN stays, -0.0 -> 0.0


@njit(cache=True)
def _relu_backward_span(d, o):  # noqa: ANN001, ANN201
    zero, one = d.dtype.type(0), d.dtype.type(1)
    for i in range(d.size):
        d[i] = d[i] * (one if o[i] > zero else zero)  # d * (o > 0): a zero with d's sign, NaN for NaN


@njit(cache=True)
def _copy_span(out, src):  # noqa: ANN001, ANN201
    for j in range(out.size):
        out[j] = src[j]


@njit(cache=True)
def _gather_rows_span(X, index, out):  # noqa: ANN001, ANN201
    for r in range(index.size):
        _copy_span(out[r], X[index[r]])


@njit(cache=True)
def _dropout_span(x, uniform, keep, scale, mask, out):  # noqa: ANN001, ANN201
    zero = x.dtype.type(0)
    for i in range(x.size):
        m = scale if uniform[i] < keep else zero
        mask[i] = m
        out[i] = x[i] * m


@njit(cache=True)
def _batchnorm_normalize_span(x, inv_std, gamma, beta, out):  # noqa: ANN001, ANN201
    for r in range(x.shape[0]):
        xr, outr = x[r], out[r]
        for j in range(xr.size):
            xhat = xr[j] * inv_std[j]
            xr[j] = xhat
            outr[j] = xhat * gamma[j] + beta[j]


@njit(cache=True)
def _batchnorm_input_grad_span(dout, xhat, dbeta, dgamma, n, factor, dx):  # noqa: ANN001, ANN201
    for r in range(dout.shape[0]):
        dr, xr, dxr = dout[r], xhat[r], dx[r]
        for j in range(dr.size):
            dxr[j] = ((dr[j] * n - dbeta[j]) - xr[j] * dgamma[j]) * factor[j]


@njit(cache=True)
def _add_scaled_span(g, w, strength):  # noqa: ANN001, ANN201
    for i in range(g.size):
        g[i] = g[i] + w[i] * strength


@njit(cache=True)
def _sgd_span(w, g, lr):  # noqa: ANN001, ANN201
    for i in range(w.size):
        w[i] = w[i] + g[i] * -lr


@njit(cache=True)
def _momentum_span(w, g, v, lr, mu):  # noqa: ANN001, ANN201
    for i in range(w.size):
        vi = v[i] * mu - g[i] * lr
        v[i] = vi
        w[i] = w[i] + vi


@njit(cache=True)
def _nesterov_span(w, g, v, lr, mu):  # noqa: ANN001, ANN201
    for i in range(w.size):
        step = g[i] * lr
        vi = v[i] * mu - step
        v[i] = vi
        w[i] = (w[i] - step) + mu * vi


@njit(cache=True)
def _adam_span(w, g, m, v, b1, one_minus_b1, b2, one_minus_b2, inv_c2, step, eps):  # noqa: ANN001, ANN201
    for i in range(w.size):
        gi = g[i]
        mi = m[i] * b1 + one_minus_b1 * gi
        vi = v[i] * b2 + (gi * gi) * one_minus_b2
        m[i] = mi
        v[i] = vi
        w[i] = w[i] - (mi / (np.sqrt(vi * inv_c2) + eps)) * step


@njit(cache=True)
def _rmsprop_span(w, g, cache, lr, decay, one_minus_decay, eps):  # noqa: ANN001, ANN201
    for i in range(w.size):
        gi = g[i]
        ci = cache[i] * decay + one_minus_decay * (gi * gi)
        cache[i] = ci
        w[i] = w[i] - (gi * lr) / (np.sqrt(ci) + eps)


# ---- parallel drivers: blocks of rows, or runs of CHUNK elements, one per prange iteration ----------------------

@njit(parallel=True, cache=True)
def add_bias(out, b):  # noqa: ANN001, ANN201
    step = rows_per_block(out.shape[1])
    for k in prange(blocks(out.shape[0], step)):
        _add_bias_span(out[k * step:(k + 1) * step], b)


@njit(parallel=True, cache=True)
def subtract_row(x, mean):  # noqa: ANN001, ANN201
    step = rows_per_block(x.shape[1])
    for k in prange(blocks(x.shape[0], step)):
        _subtract_row_span(x[k * step:(k + 1) * step], mean)


@njit(parallel=True, cache=True)
def relu(x):  # noqa: ANN001, ANN201
    for k in prange(blocks(x.size, CHUNK)):
        _relu_span(x[k * CHUNK:(k + 1) * CHUNK])


@njit(parallel=True, cache=True)
def relu_backward(d, o):  # noqa: ANN001, ANN201
    for k in prange(blocks(d.size, CHUNK)):
        lo, hi = k * CHUNK, (k + 1) * CHUNK
        _relu_backward_span(d[lo:hi], o[lo:hi])


@njit(parallel=True, cache=True)
def gather_rows(X, index, out):  # noqa: ANN001, ANN201
    for r in prange(index.size):
        _copy_span(out[r], X[index[r]])


@njit(parallel=True, cache=True)
def dropout(x, uniform, keep, scale, mask, out):  # noqa: ANN001, ANN201
    for k in prange(blocks(x.size, CHUNK)):
        lo, hi = k * CHUNK, (k + 1) * CHUNK
        _dropout_span(x[lo:hi], uniform[lo:hi], keep, scale, mask[lo:hi], out[lo:hi])


@njit(parallel=True, cache=True)
def batchnorm_normalize(x, inv_std, gamma, beta, out):  # noqa: ANN001, ANN201
    step = rows_per_block(x.shape[1])
    for k in prange(blocks(x.shape[0], step)):
        lo, hi = k * step, (k + 1) * step
        _batchnorm_normalize_span(x[lo:hi], inv_std, gamma, beta, out[lo:hi])


@njit(parallel=True, cache=True)
def batchnorm_input_grad(dout, xhat, dbeta, dgamma, n, factor, dx):  # noqa: ANN001, ANN201
    step = rows_per_block(dout.shape[1])
    for k in prange(blocks(dout.shape[0], step)):
        lo, hi = k * step, (k + 1) * step
        _batchnorm_input_grad_span(dout[lo:hi], xhat[lo:hi], dbeta, dgamma, n, factor, dx[lo:hi])


@njit(parallel=True, cache=True)
def add_scaled(g, w, strength):  # noqa: ANN001, ANN201
    for k in prange(blocks(g.size, CHUNK)):
        lo, hi = k * CHUNK, (k + 1) * CHUNK
        _add_scaled_span(g[lo:hi], w[lo:hi], strength)


@njit(parallel=True, cache=True)
def sgd(w, g, lr):  # noqa: ANN001, ANN201
    for k in prange(blocks(w.size, CHUNK)):
        lo, hi = k * CHUNK, (k + 1) * CHUNK
        _sgd_span(w[lo:hi], g[lo:hi], lr)


@njit(parallel=True, cache=True)
def momentum(w, g, v, lr, mu):  # noqa: ANN001, ANN201
    for k in prange(blocks(w.size, CHUNK)):
        lo, hi = k * CHUNK, (k + 1) * CHUNK
        _momentum_span(w[lo:hi], g[lo:hi], v[lo:hi], lr, mu)


@njit(parallel=True, cache=True)
def nesterov(w, g, v, lr, mu):  # noqa: ANN001, ANN201
    for k in prange(blocks(w.size, CHUNK)):
        lo, hi = k * CHUNK, (k + 1) * CHUNK
        _nesterov_span(w[lo:hi], g[lo:hi], v[lo:hi], lr, mu)


@njit(parallel=True, cache=True)
def adam(w, g, m, v, b1, one_minus_b1, b2, one_minus_b2, inv_c2, step, eps):  # noqa: ANN001, ANN201
    for k in prange(blocks(w.size, CHUNK)):
        lo, hi = k * CHUNK, (k + 1) * CHUNK
        _adam_span(w[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], b1, one_minus_b1, b2, one_minus_b2, inv_c2, step, eps)


@njit(parallel=True, cache=True)
def rmsprop(w, g, cache, lr, decay, one_minus_decay, eps):  # noqa: ANN001, ANN201
    for k in prange(blocks(w.size, CHUNK)):
        lo, hi = k * CHUNK, (k + 1) * CHUNK
        _rmsprop_span(w[lo:hi], g[lo:hi], cache[lo:hi], lr, decay, one_minus_decay, eps)


SERIAL = {"add_bias": _add_bias_span, "subtract_row": _subtract_row_span, "relu": _relu_span,
          "relu_backward": _relu_backward_span, "gather_rows": _gather_rows_span, "dropout": _dropout_span,
          "batchnorm_normalize": _batchnorm_normalize_span, "batchnorm_input_grad": _batchnorm_input_grad_span,
          "add_scaled": _add_scaled_span, "sgd": _sgd_span, "momentum": _momentum_span, "nesterov": _nesterov_span,
          "adam": _adam_span, "rmsprop": _rmsprop_span}
"""Each kernel's serial body over the whole arrays: what one thread runs, with no parallel launch."""
