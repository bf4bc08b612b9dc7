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


# ---- the captured training step -----------------------------------------------------------------------------
# A training step on a GPU is recorded once as a CUDA graph and replayed for every batch (`nnrun.device_step`).
# A replay repeats the launches with the arguments they were recorded with, so nothing a step needs may be a
# host value that changes from step to step: the batch's position, the global step number (dropout masks) and
# the optimizer's scalars (learning rate, Adam's bias corrections) live in device arrays that the kernels read.
# `counters` is an int64 device array [batch index within the epoch, global step]; `record_losses` advances it.

GATHER_ROWS = ("raw T src, raw int64 order, raw int64 counters, int64 batch, int64 width", "T out",
               "const ptrdiff_t row = i / width; "
               "out = src[order[counters[0] * batch + row] * width + i % width]", "nnrun_gather_rows")
AUGMENT_ROWS = (
    "raw T src, raw int64 order, raw int32 moves, raw int64 counters, int64 batch, int32 c, int32 h, int32 w, "
    "bool reflect, bool affine, raw T scale, raw T shift", "T out",
    """
    const ptrdiff_t per = (ptrdiff_t)c * h * w;
    const ptrdiff_t row = i / per;
    const int p = (int)(i % per);
    const int ch = p / (h * w), y = (p / w) % h, x = p % w;
    const ptrdiff_t at = counters[0] * batch + row;
    const int flip = moves[3 * at], sy = moves[3 * at + 1], sx = moves[3 * at + 2];
    int iy = y - sy, ix = (flip ? w - 1 - x : x) - sx;
    bool inside = true;
    if (reflect) {
        iy = iy < 0 ? -iy : (iy >= h ? 2 * (h - 1) - iy : iy);
        ix = ix < 0 ? -ix : (ix >= w ? 2 * (w - 1) - ix : ix);
    } else {
        inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
    }
    const int q = ch * h * w + iy * w + ix;
    const T v = inside ? src[order[at] * per + q] : (T)0;
    if (affine) {
        const T raw = inside ? v * scale[q] + shift[q] : (T)0;
        out = (raw - shift[p]) / scale[p];
    } else {
        out = v;
    }
    """, "nnrun_augment_rows")
RECORD_LOSSES = ("raw T data_loss, raw U reg_loss", "raw float64 losses, raw int64 counters",
                 "losses[2 * counters[0]] = (double)data_loss[0]; losses[2 * counters[0] + 1] = (double)reg_loss[0]; "
                 "counters[0] += 1; counters[1] += 1;", "nnrun_record_losses")
DROPOUT_COUNTER = (
    "T x, raw int64 counters, uint64 key, int64 layer, T p, T scale", "T mask, T out",
    """
    unsigned long long z = key + 0x9E3779B97F4A7C15ULL
        * (((unsigned long long)(counters[1] * 64 + layer) << 32) + (unsigned long long)i + 1ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    const T u = (T)((float)(z >> 40) * 5.9604644775390625e-08f);
    mask = u < p ? scale : (T)0;
    out = x * mask;
    """, "nnrun_dropout_counter")
BN_STATS = (
    "raw T x, int64 n, int64 d, T eps, T momentum", "T mean, T inv_std, T running_mean, T running_var",
    """
    double s = 0;
    for (ptrdiff_t r = 0; r < n; ++r) s += (double)x[r * d + i];
    const double m = s / n;
    double q = 0;
    for (ptrdiff_t r = 0; r < n; ++r) { const double c = (double)x[r * d + i] - m; q += c * c; }
    const double var = q / n;
    mean = (T)m;
    inv_std = (T)(1.0 / sqrt(var + (double)eps));
    running_mean = running_mean * ((T)1 - momentum) + momentum * (T)m;
    if (n > 1) running_var = running_var * ((T)1 - momentum) + (T)((double)momentum * n / (n - 1) * var);
    """, "nnrun_bn_stats")
BN_NORMALIZE = ("T mean, T inv_std, T gamma, T beta", "T x, T out",
                "x = (x - mean) * inv_std; out = x * gamma + beta", "nnrun_bn_normalize")
BN_PARAM_GRADS = (
    "raw T dout, raw T xhat, int64 n, int64 d", "T dbeta, T dgamma",
    """
    double b = 0, g = 0;
    for (ptrdiff_t r = 0; r < n; ++r) { const double v = (double)dout[r * d + i]; b += v; g += v * xhat[r * d + i]; }
    dbeta = (T)b;
    dgamma = (T)g;
    """, "nnrun_bn_param_grads")
BN_INPUT_GRAD = ("T xhat, T dbeta, T dgamma, T gamma, T inv_std, T n", "T dout",
                 "dout = gamma * inv_std / n * (n * dout - dbeta - xhat * dgamma)", "nnrun_bn_input_grad")
DECAY_FROM_TABLE = ("raw T table, raw int64 counters, int64 width, int64 column", "T w",
                    "w *= table[counters[0] * width + column]", "nnrun_decay_from_table")


def from_table(rule: str) -> tuple[str, str, str, str]:
    """The update kernel of `rule` reading its scalars from row `counters[0]` of a device table (n_batches, width)
    instead of taking them as arguments: the same body, for a step that is replayed from a CUDA graph."""
    inputs, outputs, body, name = UPDATES[rule]
    names = [part.split()[-1] for part in inputs.split(",")[1:]]
    reads = "".join(f"const T {n} = table[at + {k}]; " for k, n in enumerate(names))
    return (f"{inputs.split(',')[0]}, raw T table, raw int64 counters, int64 width", outputs,
            f"const ptrdiff_t at = counters[0] * width; {reads}{body}", f"{name}_table")


def gather_rows(src: Any, order: Any, counters: Any, batch: int, out: Any) -> Any:
    """out (b, ...) = the rows of src (N, ...) at `order[counters[0] * batch + r]`, r < b; returned."""
    width = out.size // out.shape[0] if out.ndim > 1 else 1
    return kernel(GATHER_ROWS)(src.reshape(-1), order, counters, batch, width, out)


def augment_rows(src: Any, order: Any, moves: Any, counters: Any, batch: int, image_shape: tuple[int, int, int],
                 reflect: bool, affine: tuple[Any, Any] | None, out: Any) -> Any:
    """out (b, C*H*W) = the batch's rows of src gathered as `gather_rows` does, each moved as `moves` (n_train, 3)
    int32 [flip, sy, sx] says for its position in the epoch (`nnrun.augment.Augmentation`'s formulas); returned."""
    c, h, w = image_shape
    scale, shift = affine if affine is not None else (src, src)  # unread without an affine map
    return kernel(AUGMENT_ROWS)(src.reshape(-1), order, moves.reshape(-1), counters, batch, c, h, w, reflect,
                                affine is not None, scale.reshape(-1), shift.reshape(-1), out)


def record_losses(data_loss: Any, reg_loss: Any, losses: Any, counters: Any) -> None:
    """losses[counters[0]] = (data loss, penalty) of the step (device arrays of one element); then both counters
    advance."""
    kernel(RECORD_LOSSES)(data_loss.reshape(1), reg_loss.reshape(1), losses.reshape(-1), counters, size=1)


def dropout_counter(x: Any, counters: Any, key: int, layer: int, keep: float, scale: float) -> tuple[Any, Any]:
    """x (N, D) -> (mask, x * mask): `mask = (u < keep) * scale` with u uniform in [0, 1) from a counter-based
    generator, a function of (key, global step `counters[1]`, layer, element) alone (splitmix64's mixing of
    `key + golden * ((step * 64 + layer) << 32 | element) + 1`, 24 bits): no generator state, the same masks
    in a replayed graph, after a resume, at any batch split."""
    t = x.dtype.type
    return kernel(DROPOUT_COUNTER)(x, counters, key, layer, t(keep), t(scale))


def batchnorm_forward(x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any, eps: float,
                      momentum: float) -> tuple[Any, Any]:
    """Training-mode BatchNorm of x (N, D) in two launches: per-feature statistics (float64 sums, running
    averages updated in place), then x overwritten with xhat and `out = gamma * xhat + beta`. -> (out, inv_std)."""
    import cupy

    n, d = x.shape
    t = x.dtype.type
    mean, inv_std = cupy.empty(d, dtype=x.dtype), cupy.empty(d, dtype=x.dtype)
    kernel(BN_STATS)(x.reshape(-1), n, d, t(eps), t(momentum), mean, inv_std, running_mean, running_var)
    out = cupy.empty_like(x)
    kernel(BN_NORMALIZE)(mean, inv_std, gamma, beta, x, out)
    return out, inv_std


def batchnorm_backward(dout: Any, xhat: Any, gamma: Any, inv_std: Any, dbeta: Any, dgamma: Any) -> Any:
    """Training-mode BatchNorm gradients in two launches: dbeta, dgamma (D,) written in place, then dout (N, D)
    overwritten with dx = gamma * inv_std / N * (N * dout - dbeta - xhat * dgamma); returned."""
    n, d = dout.shape
    kernel(BN_PARAM_GRADS)(dout.reshape(-1), xhat.reshape(-1), n, d, dbeta, dgamma)
    return kernel(BN_INPUT_GRAD)(xhat, dbeta, dgamma, gamma, inv_std, dout.dtype.type(n), dout)


def update_from_table(rule: str, w: Any, g: Any, slots: tuple[Any, ...], table: Any, counters: Any) -> None:
    """The update of `rule` on one parameter, its scalars read from row `counters[0]` of `table`."""
    kernel(from_table(rule))(g, table.reshape(-1), counters, table.shape[1], w, *slots)


def decay_from_table(w: Any, table: Any, counters: Any, column: int) -> None:
    """Decoupled weight decay `w *= table[counters[0], column]` (the factor `1 - lr * weight_decay`)."""
    kernel(DECAY_FROM_TABLE)(table.reshape(-1), counters, table.shape[1], column, w)
