"""Element-wise work in cache-sized blocks of rows, spread over a small pool of threads.

The training step's element-wise passes (the optimizer update, bias and activation passes, the
batch gather) would otherwise run on one core while the matrix products use them all. NumPy's
ufuncs release the GIL, so blocks of one array given to different threads run in parallel; and
a block small enough to stay in a core's cache (`BLOCK_BYTES` per array) lets several in-place
operations on the same rows run at cache speed instead of memory speed. Every element sees the
same operations in the same order as the whole-array code, so results are bit-identical to it.

The pool is process-wide, like the BLAS thread pool it sits beside: `nnrun.workers.use_threads(n)`
sizes both (the pool only from `workers.MIN_POOL_THREADS` threads). With one thread, blocks run inline
(still cache-sized). Arrays on a GPU run whole, in one launch: the GPU parallelizes, and blocks would
only multiply launches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from nnrun.backend import is_device_array, xp_of

BLOCK_BYTES = 1 << 17
"""Bytes of one array in one block (128 KiB: a few arrays' blocks fit a core's L2 cache)."""
MIN_PARALLEL_BYTES = 1 << 18
"""Arrays smaller than this are processed inline: a task costs more than the work."""


class _Pool:
    """The process's element-wise thread pool (None with one thread)."""

    def __init__(self) -> None:
        self.threads = 1
        self.executor: ThreadPoolExecutor | None = None

    def resize(self, threads: int) -> None:
        threads = max(int(threads), 1)
        if threads == self.threads:
            return
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        self.threads = threads
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="nnrun-elementwise") if threads > 1 else None


_pool = _Pool()


def threads() -> int:
    """Threads of the element-wise pool."""
    return _pool.threads


def resize_elementwise(n: int) -> None:
    """Use `n` threads for element-wise work from now on (see `elementwise_threads` for a scoped change)."""
    _pool.resize(n)


def elementwise_threads_reset() -> None:
    """Back to one thread (inline blocks), the pool's threads stopped."""
    _pool.resize(1)


@contextmanager
def elementwise_threads(n: int) -> Iterator[None]:
    """Use `n` threads for element-wise work while the block runs (the previous size afterwards)."""
    previous = _pool.threads
    _pool.resize(n)
    try:
        yield
    finally:
        _pool.resize(previous)


def row_blocks(rows: int, row_bytes: int) -> list[slice]:
    """Slices of `rows` rows of `row_bytes` bytes each into blocks of about `BLOCK_BYTES`."""
    step = max(1, BLOCK_BYTES // max(row_bytes, 1))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


def run_blocks(jobs: Sequence[tuple[Callable[..., None], Sequence[np.ndarray]]]) -> None:
    """Run each `fn(*arrays)` of `jobs` block by block: the arrays of a job share their first axis and are cut
    into the same row blocks (anything else a job needs, `fn` closes over). Arrays of one block or less run
    whole, as do GPU arrays; with a pool, arrays of at least `MIN_PARALLEL_BYTES` go to it, all jobs' blocks at
    once, and this returns when every block is done."""
    futures: list[Future] = []
    for fn, arrays in jobs:
        first = arrays[0]
        if first.ndim == 0 or first.nbytes <= BLOCK_BYTES or is_device_array(first):
            fn(*arrays)
            continue
        parallel = _pool.executor is not None and first.nbytes >= MIN_PARALLEL_BYTES
        for s in row_blocks(first.shape[0], first.nbytes // first.shape[0]):
            parts = [a[s] for a in arrays]
            if parallel:
                futures.append(_pool.executor.submit(fn, *parts))
            else:
                fn(*parts)
    for future in futures:
        future.result()


def gather_rows(X: np.ndarray, index: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """`X[index]`: the rows of X (N, D) that `index` (B,) picks, copied block by block (by the pool when it has
    threads) into `out` (B, D), a new array unless given. On a GPU (X, index and out there) one launch."""
    if out is None:
        out = xp_of(X).empty((len(index), *X.shape[1:]), dtype=X.dtype)
    if is_device_array(X):
        return xp_of(X).take(X, index, axis=0, out=out)

    def take(dest: np.ndarray, rows: np.ndarray) -> None:
        np.take(X, rows, axis=0, out=dest)

    run_blocks([(take, (out, index))])
    return out
