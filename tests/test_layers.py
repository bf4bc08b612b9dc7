"""Layers: numeric gradient checks (float64), gradient shapes, BatchNorm against PyTorch, dropout, layout."""

import numpy as np
import pytest

from nnrun.config import ModelConfig
from nnrun.experiment import build_model
from nnrun.nn.layers import ACTIVATIONS, BatchNorm, Dropout, LeakyReLU, Linear
from nnrun.nn.numeric import numeric_gradient, relative_error

RNG = np.random.default_rng(0)


def away_from_zero(shape, margin=1e-2):
    """Random float64 values with |x| > margin (no ReLU kink within a finite-difference step)."""
    x = RNG.standard_normal(shape)
    return np.where(np.abs(x) < margin, np.sign(x) * margin + x, x)


def check_layer(layer, x, train=True, params=True):
    """Analytic dx and parameter gradients of sum(out * R) against centered differences."""
    out = layer.forward(x.copy(), train)
    R = RNG.standard_normal(out.shape)
    dx = layer.backward(R.copy())
    assert dx.shape == x.shape
    grads = {p.name: p.grad.copy() for p in layer.params}

    def f():
        return float(np.sum(layer.forward(x.copy(), train) * R))

    assert relative_error(dx, numeric_gradient(f, x)).max() < 1e-7
    if params:
        for p in layer.params:
            assert grads[p.name].shape == p.value.shape and grads[p.name].dtype == p.value.dtype
            assert relative_error(grads[p.name], numeric_gradient(f, p.value)).max() < 1e-7, p.name


def test_linear_gradients_and_shapes():
    layer = Linear(RNG.standard_normal((5, 3)), RNG.standard_normal(3), 0)
    check_layer(layer, RNG.standard_normal((4, 5)))


def test_linear_without_input_grad_returns_none_but_fills_grads():
    layer = Linear(RNG.standard_normal((5, 3)), np.zeros(3), 0)
    layer.needs_input_grad = False
    layer.forward(RNG.standard_normal((4, 5)), True)
    assert layer.backward(np.ones((4, 3))) is None
    assert np.all(layer.b.grad == 4)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_gradients(name):
    layer = LeakyReLU(0.1) if name == "leaky_relu" else ACTIVATIONS[name]()
    check_layer(layer, away_from_zero((6, 7)), params=False)


def test_activation_values():
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    assert np.allclose(ACTIVATIONS["relu"]().forward(x.copy(), True), [[0, 0, 0, 0.5, 3]])
    assert np.allclose(LeakyReLU(0.1).forward(x.copy(), True), [[-0.2, -0.05, 0, 0.5, 3]])
    assert np.allclose(ACTIVATIONS["tanh"]().forward(x.copy(), True), np.tanh(x))
    assert np.allclose(ACTIVATIONS["sigmoid"]().forward(x.copy(), True), 1 / (1 + np.exp(-x)))
    big = np.array([[-1000.0, 1000.0]])
    assert np.allclose(ACTIVATIONS["sigmoid"]().forward(big, True), [[0, 1]])
    assert np.array_equal(ACTIVATIONS["identity"]().forward(x.copy(), True), x)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_gradients(train):
    bn = BatchNorm(4, 0, dtype=np.float64)
    bn.gamma.value[:] = RNG.uniform(0.5, 2, 4)
    bn.beta.value[:] = RNG.standard_normal(4)
    bn.running_mean[:] = RNG.standard_normal(4)
    bn.running_var[:] = RNG.uniform(0.5, 2, 4)
    check_layer(bn, RNG.standard_normal((8, 4)) * 3 + 1, train=train)


def test_batchnorm_matches_pytorch_batchnorm1d():
    torch = pytest.importorskip("torch")
    D, momentum, eps = 5, 0.2, 1e-3
    ours = BatchNorm(D, 0, momentum=momentum, eps=eps, dtype=np.float64)
    ref = torch.nn.BatchNorm1d(D, momentum=momentum, eps=eps, dtype=torch.float64)
    gamma, beta = RNG.uniform(0.5, 2, D), RNG.standard_normal(D)
    ours.gamma.value[:], ours.beta.value[:] = gamma, beta
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(gamma))
        ref.bias.copy_(torch.from_numpy(beta))
    for step in range(4):
        x = RNG.standard_normal((16, D)) * (step + 1) + step
        dout = RNG.standard_normal((16, D))
        xt = torch.tensor(x, requires_grad=True)
        ref.train()
        out_ref = ref(xt)
        out_ref.backward(torch.from_numpy(dout))
        out = ours.forward(x.copy(), True)
        dx = ours.backward(dout.copy())
        assert np.allclose(out, out_ref.detach().numpy(), atol=1e-10)
        assert np.allclose(dx, xt.grad.numpy(), atol=1e-10)
        assert np.allclose(ours.gamma.grad, ref.weight.grad.numpy(), atol=1e-10)
        assert np.allclose(ours.beta.grad, ref.bias.grad.numpy(), atol=1e-10)
        ref.weight.grad = None
        ref.bias.grad = None
        # Running averages: momentum 0.2 and the unbiased variance, as PyTorch.
        assert np.allclose(ours.running_mean, ref.running_mean.numpy(), atol=1e-12)
        assert np.allclose(ours.running_var, ref.running_var.numpy(), atol=1e-12)
    ref.eval()
    x = RNG.standard_normal((7, D))
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    assert np.allclose(ours.forward(x.copy(), False), expected, atol=1e-10)


def test_batchnorm_running_variance_is_unbiased_batch_variance():
    bn = BatchNorm(3, 0, momentum=1.0, dtype=np.float64)
    x = RNG.standard_normal((10, 3))
    bn.forward(x.copy(), True)
    assert np.allclose(bn.running_mean, x.mean(0))
    assert np.allclose(bn.running_var, x.var(0, ddof=1))
    bn.forward(x[:1].copy(), True)  # a batch of one leaves the running variance as it was
    assert np.allclose(bn.running_var, x.var(0, ddof=1))


def test_batchnorm_training_output_is_normalized():
    bn = BatchNorm(6, 0)
    out = bn.forward(RNG.standard_normal((64, 6)).astype(np.float32) * 5 + 3, True)
    assert out.dtype == np.float32
    assert np.allclose(out.mean(0), 0, atol=1e-5) and np.allclose(out.std(0), 1, atol=1e-3)


@pytest.mark.parametrize("mode", ["inverted", "vanilla"])
def test_dropout_gradient_with_held_mask(mode):
    layer = Dropout(0.6, np.random.default_rng(1), mode)
    x = RNG.standard_normal((5, 8))
    layer.forward(x.copy(), True)
    layer.held_mask = layer.mask
    check_layer(layer, x, params=False)
    check_layer(layer, x, train=False, params=False)


@pytest.mark.parametrize("mode", ["inverted", "vanilla"])
def test_dropout_test_output_equals_expected_train_output(mode):
    p = 0.3
    layer = Dropout(p, np.random.default_rng(2), mode)
    x = RNG.uniform(0.5, 2, (1, 50))
    samples = np.stack([layer.forward(np.repeat(x, 2000, 0), True) for _ in range(5)]).reshape(-1, 50)
    test_out = layer.forward(x.copy(), False)
    expected = x if mode == "inverted" else p * x
    assert np.allclose(test_out, expected)
    # Sample mean within 5 standard errors of the test-time activation.
    se = x * np.sqrt(p * (1 - p)) / (p if mode == "inverted" else 1) / np.sqrt(len(samples))
    assert np.all(np.abs(samples.mean(0) - test_out) < 5 * se)
    kept = (samples != 0).mean()
    assert abs(kept - p) < 0.01


def test_inverted_and_vanilla_dropout_nets_agree_at_test_time_in_expectation():
    # The same weights: the vanilla net's test output scaled by 1/p equals the inverted net's
    # for one dropout layer before a linear output (expected activations are equal).
    cfg = ModelConfig(hidden=[16], dropout=0.5)
    inv = build_model(cfg, 6, 3, np.random.default_rng(0))
    van = build_model(cfg.model_copy(update={"dropout_mode": "vanilla"}), 6, 3, np.random.default_rng(0))
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    h_inv = inv.layers[1].forward(inv.layers[0].forward(x, False), False)
    h_van = van.layers[1].forward(van.layers[0].forward(x, False), False)
    assert np.allclose(inv.layers[2].forward(h_inv.copy(), False), h_inv)
    assert np.allclose(van.layers[2].forward(h_van.copy(), False), 0.5 * h_van)


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5])
def test_dropout_rejects_bad_keep_probability(p):
    with pytest.raises(ValueError, match="keep probability"):
        Dropout(p, np.random.default_rng(0))


def test_mlp_layout_names_and_state():
    cfg = ModelConfig(hidden=[8, 6], batchnorm=True, dropout=0.5, activation="tanh")
    model = build_model(cfg, 5, 3, np.random.default_rng(0))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Linear", "BatchNorm", "Tanh", "Dropout", "Linear", "BatchNorm", "Tanh", "Dropout", "Linear"]
    names = [p.name for p in model.params]
    assert names == ["fc0.W", "fc0.b", "bn0.gamma", "bn0.beta", "fc1.W", "fc1.b", "bn1.gamma", "bn1.beta",
                     "fc2.W", "fc2.b"]
    state = model.state_dict()
    for key in ("bn0.running_mean", "bn0.running_var", "bn1.running_mean", "bn1.running_var"):
        assert key in state and state[key].dtype == np.float32
    assert model.layers[0].needs_input_grad is False
    x = RNG.standard_normal((10, 5)).astype(np.float32)
    model.forward(x, train=True)
    snap = model.snapshot()
    other = build_model(cfg, 5, 3, np.random.default_rng(1))
    other.load_state_dict(snap)
    assert np.allclose(other.forward(x, train=False), model.forward(x, train=False))


def test_mlp_gradient_float64_all_activations_with_bn_and_dropout():
    from nnrun.nn.losses import SoftmaxCrossEntropy
    from nnrun.nn.numeric import check_model_gradients

    for act in ACTIVATIONS:
        cfg = ModelConfig(hidden=[7, 5], activation=act, batchnorm=True, dropout=0.7, bias_init=0.1)
        model = build_model(cfg, 4, 3, np.random.default_rng(0)).astype(np.float64)
        X = RNG.standard_normal((6, 4))
        y = RNG.integers(0, 3, 6)
        checks = check_model_gradients(model, SoftmaxCrossEntropy(), X, y)
        assert all(c.passed for c in checks), (act, [c for c in checks if not c.passed])
