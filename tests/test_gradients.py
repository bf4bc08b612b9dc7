"""Numeric gradient checks (float64, centered differences) of the core layers, the MLP and softmax."""

import numpy as np
import pytest

from nnrun.config import ModelConfig
from nnrun.experiment import build_model
from nnrun.nn.layers import Linear, ReLU
from nnrun.nn.losses import SoftmaxCrossEntropy
from nnrun.nn.numeric import numeric_gradient, relative_error


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(relative_error(a, b, floor=1e-8).max())


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_linear_gradients(rng):
    x = rng.standard_normal((5, 4))
    layer = Linear(rng.standard_normal((4, 3)), rng.standard_normal(3), 0)
    dout = rng.standard_normal((5, 3))

    def f():
        return float(np.sum(layer.forward(x, train=True) * dout))

    f()
    dx = layer.backward(dout.copy())
    assert dx.shape == x.shape and layer.W.grad.shape == (4, 3) and layer.b.grad.shape == (3,)
    assert rel_error(dx, numeric_gradient(f, x)) < 1e-7
    dW, db = layer.W.grad.copy(), layer.b.grad.copy()
    assert rel_error(dW, numeric_gradient(f, layer.W.value)) < 1e-7
    assert rel_error(db, numeric_gradient(f, layer.b.value)) < 1e-7


def test_linear_skips_input_gradient_when_not_needed(rng):
    layer = Linear(rng.standard_normal((4, 3)), np.zeros(3), 0)
    layer.needs_input_grad = False
    layer.forward(rng.standard_normal((2, 4)), train=True)
    assert layer.backward(np.ones((2, 3))) is None
    assert np.abs(layer.W.grad).sum() > 0


def test_relu_gradient_away_from_the_kink(rng):
    x = rng.standard_normal((6, 5))
    x[np.abs(x) < 1e-3] = 0.5
    dout = rng.standard_normal((6, 5))
    relu = ReLU()

    def f():
        return float(np.sum(relu.forward(x.copy(), train=True) * dout))

    f()
    dx = relu.backward(dout.copy())
    assert dx.shape == x.shape
    assert rel_error(dx, numeric_gradient(f, x)) < 1e-7


def test_softmax_loss_value_and_gradient(rng):
    scores = rng.standard_normal((7, 4)) * 3
    y = rng.integers(0, 4, 7)
    loss_fn = SoftmaxCrossEntropy()
    loss, dscores = loss_fn.loss_and_grad(scores.copy(), y)
    probs = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(7), y])))
    assert loss_fn.loss(scores, y) == pytest.approx(loss)
    assert rel_error(dscores, numeric_gradient(lambda: loss_fn.loss(scores, y), scores)) < 1e-6


def test_softmax_is_stable_for_huge_scores():
    scores = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)
    loss, dscores = SoftmaxCrossEntropy().loss_and_grad(scores, np.array([0]))
    assert np.isfinite(loss) and loss == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.isfinite(dscores))


def test_whole_mlp_gradient(rng):
    model = build_model(ModelConfig(hidden=[6, 5]), 4, 3, rng)
    for p in model.params:
        p.value = p.value.astype(np.float64)
        p.grad = np.zeros_like(p.value)
    x = rng.standard_normal((8, 4))
    y = rng.integers(0, 3, 8)
    loss_fn = SoftmaxCrossEntropy()

    def f():
        return loss_fn.loss(model.forward(x.copy(), train=True), y)

    _, dscores = loss_fn.loss_and_grad(model.forward(x.copy(), train=True), y)
    model.backward(dscores)
    for p in model.params:
        assert p.grad.shape == p.value.shape
        assert rel_error(p.grad.copy(), numeric_gradient(f, p.value)) < 1e-5, p.name
