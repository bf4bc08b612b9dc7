"""Property-based tests (hypothesis) of the split and the softmax loss."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nnrun.datasets import DataOptions
from nnrun.datasets.split import split_indices
from nnrun.nn.losses import SoftmaxCrossEntropy
from nnrun.rng import stream


@settings(max_examples=60, deadline=None)
@given(n_pool=st.integers(10, 500), val=st.floats(0.05, 0.5), test=st.floats(0.05, 0.4), seed=st.integers(0, 2**31))
def test_split_is_a_seeded_partition(n_pool, val, test, seed):
    cfg = DataOptions(val_size=val, test_size=test)
    train, val_idx, test_idx = split_indices(n_pool, cfg, stream(seed, "split"), carve_test=True)
    together = np.concatenate([train, val_idx, test_idx])
    assert sorted(together.tolist()) == list(range(n_pool))
    assert len(test_idx) == max(1, round(test * n_pool))
    again = split_indices(n_pool, cfg, stream(seed, "split"), carve_test=True)
    assert all(np.array_equal(a, b) for a, b in zip((train, val_idx, test_idx), again, strict=True))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 20), c=st.integers(2, 12), shift=st.floats(-1e4, 1e4), seed=st.integers(0, 2**31))
def test_softmax_gradient_rows_sum_to_zero_and_loss_ignores_shifts(n, c, shift, seed):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n, c)) * 5
    y = rng.integers(0, c, n)
    loss_fn = SoftmaxCrossEntropy()
    loss, dscores = loss_fn.loss_and_grad(scores.copy(), y)
    assert loss >= 0
    np.testing.assert_allclose(dscores.sum(axis=1), 0, atol=1e-12)
    # Adding a constant to every score of a row changes neither the loss nor the gradient.
    shifted_loss, shifted_grad = loss_fn.loss_and_grad(scores + shift, y)
    np.testing.assert_allclose(shifted_loss, loss, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(shifted_grad, dscores, atol=1e-6)
