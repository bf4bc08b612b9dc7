"""The seeded train/val/test split of a pool of examples.

A dataset with an official test split keeps it as test and carves val from the training pool;
others carve test first, then val, from the whole pool. Draws come from the generator given
(the experiment's `split` stream); index arrays come back sorted.
"""

from __future__ import annotations

import numpy as np

from nnrun.datasets.dataset import DataOptions
from nnrun.errors import UserInputError


def resolve_count(size: int | float, total: int, key: str) -> int:
    """A split size given as a count or a fraction in (0, 1) -> a count in [1, total - 1]."""
    if isinstance(size, float) and not size.is_integer():
        if not 0 < size < 1:
            raise UserInputError(f"{key}: a fraction must be in (0, 1), got {size}")
        count = max(1, int(round(size * total)))  # a fraction always keeps at least one example
    else:
        count = int(size)
    if not 1 <= count < total:
        raise UserInputError(f"{key}: needs between 1 and {total - 1} examples here, got {size}")
    return count


def split_indices(n_pool: int, options: DataOptions, rng: np.random.Generator,
                  carve_test: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Seeded, sorted index arrays (train, val, test-or-None) over a pool of `n_pool` examples."""
    order = rng.permutation(n_pool)
    test = None
    if carve_test:
        n_test = resolve_count(options.test_size, n_pool, "data.test_size")
        test, order = order[:n_test], order[n_test:]
    n_val = resolve_count(options.val_size, len(order), "data.val_size")
    val, train = order[:n_val], order[n_val:]
    if options.train_size is not None:
        if options.train_size > len(train):
            raise UserInputError(
                f"data.train_size: only {len(train)} training examples are available, got {options.train_size}")
        train = train[: options.train_size]
    return np.sort(train), np.sort(val), None if test is None else np.sort(test)
