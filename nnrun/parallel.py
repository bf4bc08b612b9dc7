"""Element-wise work in cache-sized blocks of rows.

The training step's element-wise passes (the optimizer update, bias and activation passes, the
batch gather) run block by block: a block small enough to stay in a core's cache (`BLOCK_BYTES`
per array) lets several in-place operations on the same rows run at cache speed instead of memory
speed. Every element sees the same operations in the same order as the whole-array code, so
results are bit-identical to it. Arrays on a GPU run whole, in one launch.

The blocks run on the calling thread. A pool of threads that spread them over the cores (from 4
threads up) was removed: measured on a 16-core Xeon (the reference epoch, docs/performance.md) it
made the epoch slower at every size it was used, 2.96-3.07 s at 16 threads against 1.99-2.31 s with
the blocks inline and BLAS on the 16 threads; per-op hand-offs of arrays this small cost more
than they save.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nnrun import cpu_kernels
from nnrun.backend import is_device_array, xp_of

BLOCK_BYTES = 1 << 17
"""Bytes of one array in one block (128 KiB: a few arrays' blocks fit a core's L2 cache)."""


def row_blocks(rows: int, row_bytes: int) -> list[slice]:
    """Slices of `rows` rows of `row_bytes` bytes each into blocks of about `BLOCK_BYTES`."""
    step = max(1, BLOCK_BYTES // max(row_bytes, 1))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


def run_blocks(jobs: Sequence[tuple[Callable[..., None], Sequence[np.ndarray]]]) -> None:
    """Run each `fn(*arrays)` of `jobs` block by block: the arrays of a job share their first axis and are cut
    into the same row blocks (anything else a job needs, `fn` closes over). Arrays of one block or less run
    whole, as do GPU arrays."""
    for fn, arrays in jobs:
        first = arrays[0]
        if first.ndim == 0 or first.nbytes <= BLOCK_BYTES or is_device_array(first):
            fn(*arrays)
            continue
        for s in row_blocks(first.shape[0], first.nbytes // first.shape[0]):
            fn(*(a[s] for a in arrays))


def gather_rows(X: np.ndarray, index: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """`X[index]`: the rows of X (N, D) that `index` (B,) picks, copied block by block into `out` (B, D), a new
    array unless given. On a GPU (X, index and out there) one launch."""
    if out is None:
        out = xp_of(X).empty((len(index), *X.shape[1:]), dtype=X.dtype)
    if is_device_array(X):
        return xp_of(X).take(X, index, axis=0, out=out)
    if X.ndim == 2 and index.dtype == np.int64 and cpu_kernels.usable(out, X, index):
        if len(index) and (index.min() < 0 or index.max() >= len(X)):
            raise IndexError(f"row index out of range for {len(X)} rows")
        cpu_kernels.gather_rows(X, index, out)
        return out

    def take(dest: np.ndarray, rows: np.ndarray) -> None:
        np.take(X, rows, axis=0, out=dest)

    run_blocks([(take, (out, index))])
    return out
