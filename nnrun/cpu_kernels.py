"""Fused element-wise CPU kernels, compiled by numba.

A training step's element-wise work (bias and activation passes, the ReLU mask, dropout, the
BatchNorm normalization and input gradient, the L2 penalty's gradient, the optimizer update, the batch
gather) is a few passes over arrays of a few hundred kilobytes to a few megabytes. NumPy runs each operation as its
own pass, with temporaries; each kernel here does the whole formula in one vectorized pass.

Results are bit-identical to the NumPy code they replace, and so independent of the thread count:

- every element sees the same float operations in the same order, each rounded to the array's
  dtype (no fast-math, so no reassociation and no fused multiply-add; scalars are passed in the
  array's dtype, so nothing is computed in a wider type);
- rows (or runs of elements) are split among threads, never a reduction: column sums, BatchNorm
  statistics and the softmax stay in NumPy.

The kernels serve float32 arrays of at least `MIN_ELEMENTS` elements on the main thread (float64
gradient checks and small arrays keep the NumPy code, which gives the same bytes), once a training loop
has set them up (`warm`, called by `nnrun.trainer.fit`). Until then NumPy does the work: a run whose
arrays are all small, and commands that only run forward passes (predict, evaluate), never import numba,
whose set-up (about 0.7 s and 100 MB) a single pass would not repay.

**`NNRUN_NUMBA`** (read once per process):

- unset or `1`: the kernels, each on the calling thread (the default where numba is installed);
- `parallel`: arrays of at least `PARALLEL_MIN` elements split over the run's BLAS thread count
  (`set_threads`), on numba's workqueue threads;
- `0`: NumPy does the element-wise work.

Measured on the 2-core AMD EPYC (docs/performance.md, "Element-wise work"), the reference epoch took
2.75 s with the kernels on one thread, 2.92 s with `parallel` and 3.16 s with NumPy (PyTorch CPU:
3.04 s); with BatchNorm and dropout 3.44, 3.64 and 3.64 s. Parallel launches lose there because
OpenBLAS's threads spin after every matrix product on the cores numba's threads would use;
`bench/run_all.py cores` measures all three at every core count so a many-core machine can decide.
numba is installed by `make`; where it is missing or fails to load, `active()` is False and every
caller runs its NumPy code. Compiled kernels are cached on disk by numba (next to this module, or in
its user cache folder where that is read-only), so only a first run compiles (about a second).
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any

import numpy as np

from nnrun.errors import UserInputError

ENV = "NNRUN_NUMBA"
"""`0` runs the element-wise passes in NumPy, `parallel` splits large ones over the run's threads (the module
docstring); unset or `1`: the kernels on the calling thread. The results are the same bytes in every case."""

OFF = ("0", "false", "no", "off")
ON = ("", "1", "true", "yes", "on")
PARALLEL = "parallel"

MIN_ELEMENTS = 1 << 14
"""Arrays smaller than this (64 KiB of float32) keep the NumPy code (and never import numba)."""

PARALLEL_MIN = 1 << 19
"""With `NNRUN_NUMBA=parallel`, arrays smaller than this (2 MiB of float32) still run on the calling thread: a
parallel launch on numba's workqueue threads costs 35-60 us, more than a second thread saves on a 256 x 512
activation (about 65 us on one)."""

_state: dict[str, Any] = {"kernels": None, "tried": False, "threads": 1, "parallel": False}
_local = threading.local()


def set_threads(n: int) -> None:
    """Spread the kernels over `n` threads (the BLAS thread count of the run; at most numba's own limit)."""
    _state["threads"] = max(1, int(n))


def threads() -> int:
    """The thread count the kernels use."""
    return _state["threads"]


def active() -> bool:
    """Whether the compiled kernels are in use in this process (numba loaded and `NNRUN_NUMBA` not 0)."""
    return _load() is not None


def _large(a: Any) -> bool:
    """Whether `a` is a host float32 array of at least `MIN_ELEMENTS` elements (what a kernel may serve)."""
    return type(a) is np.ndarray and a.dtype == np.float32 and a.size >= MIN_ELEMENTS


def usable(*arrays: np.ndarray) -> bool:
    """Whether a kernel serves these arrays: the first float32 with at least `MIN_ELEMENTS` elements, the
    kernels loaded by `warm` (or `active`), on the main thread, every array a plain C-contiguous host array."""
    if not _large(arrays[0]):
        return False  # GPU arrays, gradient checks and small arrays: numba is not even looked for
    if _state["kernels"] is None:  # not set up by a training loop, off, or numba missing
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    return all(type(a) is np.ndarray and a.flags.c_contiguous for a in arrays)


def warm(*arrays: np.ndarray) -> None:
    """Set the kernels up for a training loop whose arrays include `arrays`: when one of them is large enough
    for a kernel (`MIN_ELEMENTS` float32 elements on the host), load numba and run its one-time set-up now
    (about 0.7 s per process on the 2-core AMD EPYC: 0.4 s of import, 0.35 s before the first compiled call
    returns), so that a run's first epoch is timed like the others. Nothing happens where the kernels are
    off or numba is missing."""
    if any(_large(a) for a in arrays) and _load() is not None:
        _state["kernels"].SERIAL["relu"](np.zeros(1, np.float32))


def setting() -> str:
    """`NNRUN_NUMBA` as one of "numpy", "serial" (the default) or "parallel"; another value is a `UserInputError`
    (commands check it before they train, through `nnrun.workers.requested_threads` and
    `check_executor`)."""
    raw = os.environ.get(ENV, "")
    value = raw.strip().lower()
    if value in OFF:
        return "numpy"
    if value in ON:
        return "serial"
    if value == PARALLEL:
        return "parallel"
    raise UserInputError(f"${ENV} must be 1 (the default: the compiled kernels on one thread), parallel, or 0 "
                         f"(NumPy), got {raw[:40]!r}")


def _load() -> Any:
    """The compiled kernels' module (`nnrun._numba_kernels`), or None when `NNRUN_NUMBA=0` or numba does not load."""
    if _state["tried"]:
        return _state["kernels"]
    mode = setting()
    _state["tried"] = True
    _state["parallel"] = mode == "parallel"
    if mode == "numpy":
        return None
    try:
        kernels = importlib.import_module("nnrun._numba_kernels")
    except Exception:  # noqa: BLE001 - any failure to import or initialise numba means the NumPy code
        return None
    _state["kernels"] = kernels
    return kernels


def _run(name: str, size: int, *args: Any) -> None:
    """Call kernel `name` over arrays of `size` elements: its serial body on this thread, or with
    `NNRUN_NUMBA=parallel` and at least `PARALLEL_MIN` elements, split over the policy's threads."""
    kernels = _state["kernels"]
    n = min(_state["threads"], kernels.max_threads()) if _state["parallel"] else 1
    if n == 1 or size < PARALLEL_MIN:
        kernels.SERIAL[name](*args)
        return
    if getattr(_local, "threads", None) != n:
        kernels.set_num_threads(n)
        _local.threads = n
    getattr(kernels, name)(*args)


# ---- the kernels, each as the NumPy formula it matches -------------------------------------------------------

def add_bias(out: np.ndarray, b: np.ndarray) -> None:
    """out (N, D) += b (D,) in place."""
    _run("add_bias", out.size, out, b)


def subtract_row(x: np.ndarray, mean: np.ndarray) -> None:
    """x (N, D) -= mean (D,) in place."""
    _run("subtract_row", x.size, x, mean)


def relu(x: np.ndarray) -> None:
    """x (N, D) = np.maximum(x, 0) in place (NaN stays NaN, -0.0 becomes 0.0, as NumPy's maximum)."""
    _run("relu", x.size, x.reshape(-1))


def relu_backward(d: np.ndarray, o: np.ndarray) -> None:
    """d (N, D) *= (o > 0) in place."""
    _run("relu_backward", d.size, d.reshape(-1), o.reshape(-1))


def gather_rows(X: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """out (B, D) = X[index] for X (N, D) and index (B,) int64 in range (as np.take, which checks the range)."""
    _run("gather_rows", out.size, X, index, out)


def dropout(x: np.ndarray, uniform: np.ndarray, keep: float, scale: float, mask: np.ndarray, out: np.ndarray) -> None:
    """mask = (uniform < keep) * scale; out = x * mask; all (N, D), uniform float32 as x."""
    t = x.dtype.type
    _run("dropout", x.size, x.reshape(-1), uniform.reshape(-1), t(keep), t(scale), mask.reshape(-1), out.reshape(-1))


def batchnorm_normalize(x: np.ndarray, inv_std: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                        out: np.ndarray) -> None:
    """x (N, D), already centred, = x * inv_std in place (xhat); out (N, D) = xhat * gamma + beta; vectors (D,)."""
    _run("batchnorm_normalize", x.size, x, inv_std, gamma, beta, out)


def batchnorm_input_grad(dout: np.ndarray, xhat: np.ndarray, dbeta: np.ndarray, dgamma: np.ndarray,
                         factor: np.ndarray, dx: np.ndarray) -> None:
    """dx (N, D) = ((dout * N - dbeta) - xhat * dgamma) * factor, factor (D,) = gamma * inv_std / N."""
    _run("batchnorm_input_grad", dout.size, dout, xhat, dbeta, dgamma, dout.dtype.type(dout.shape[0]), factor, dx)


def add_scaled(g: np.ndarray, w: np.ndarray, strength: float) -> None:
    """g += w * strength in place (g, w of one shape; `w * strength` rounded to w's dtype first, as NumPy's
    `g += w * w.dtype.type(strength)` computes it, without its temporary): the L2 penalty's gradient."""
    _run("add_scaled", g.size, g.reshape(-1), w.reshape(-1), w.dtype.type(strength))


def update(rule: str, w: np.ndarray, g: np.ndarray, slots: tuple[np.ndarray, ...], scalars: tuple[float, ...]) -> None:
    """One optimizer rule's update of one parameter in place, as its NumPy `update` computes it: weights `w`,
    gradient `g` (read only), the rule's state arrays `slots` (all C-contiguous, one shape), and the rule's
    `fused_scalars(lr)` rounded to w's dtype (`nnrun.optim`):

    - sgd (lr): `w += g * -lr`;
    - momentum (lr, mu): `v = v * mu - g * lr; w += v`;
    - nesterov (lr, mu): `step = g * lr; v = v * mu - step; w = (w - step) + mu * v`;
    - adam (b1, 1 - b1, b2, 1 - b2, 1 / c2, lr / c1, eps):
      `m = m b1 + (1 - b1) g; v = v b2 + (g g)(1 - b2); w -= (m / (sqrt(v / c2) + eps)) (lr / c1)`;
    - rmsprop (lr, decay, 1 - decay, eps): `c = c decay + (1 - decay)(g g); w -= (g lr) / (sqrt(c) + eps)`.
    """
    t = w.dtype.type
    _run(rule, w.size, w.reshape(-1), g.reshape(-1), *(s.reshape(-1) for s in slots), *(t(s) for s in scalars))
