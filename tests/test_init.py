"""Weight init schemes: variances against their formulas, sparse counts, the zeros pitfall, config checks."""

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.config import ModelConfig, load_config
from nnrun.errors import UserInputError
from nnrun.experiment import build_model
from nnrun.nn.init import init_weights
from nnrun.nn.losses import SoftmaxCrossEntropy
from nnrun.optim import SGD

FAN_IN, FAN_OUT = 400, 300
EXPECTED_VARIANCE = {
    "small": 0.05 ** 2,
    "calibrated": 1 / FAN_IN,
    "xavier": 2 / (FAN_IN + FAN_OUT),
    "he": 2 / FAN_IN,
    "sparse": 10 * 0.05 ** 2 / FAN_IN,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_VARIANCE))
def test_sample_variance_matches_formula(name):
    W = init_weights(name, FAN_IN, FAN_OUT, np.random.default_rng(0), scale=0.05, k=10)
    assert W.shape == (FAN_IN, FAN_OUT) and W.dtype == np.float32
    n, var = W.size, EXPECTED_VARIANCE[name]
    sample = float(np.mean(W.astype(np.float64) ** 2))  # the mean is 0 by construction
    if name == "sparse":
        # Sum of n products of a Bernoulli(k/fan_in) and a gaussian: the variance of w**2 is 3 s^4 k/fan_in - var^2.
        sd = np.sqrt((3 * 0.05 ** 4 * 10 / FAN_IN - var ** 2) / n)
    else:
        sd = var * np.sqrt(2 / n)  # standard error of the mean of n squared gaussians
    assert abs(sample - var) < 5 * sd, (sample, var)
    assert abs(float(W.mean())) < 5 * np.sqrt(var / n)


def test_small_uniform_is_uniform_with_the_variance_of_small():
    W = init_weights("small_uniform", FAN_IN, FAN_OUT, np.random.default_rng(0), scale=0.05)
    bound = np.sqrt(3) * 0.05
    assert W.dtype == np.float32 and np.abs(W).max() <= bound
    assert np.abs(W).max() > 0.99 * bound  # it reaches its bounds, unlike a gaussian's bulk
    counts, _ = np.histogram(W, bins=10, range=(-bound, bound))
    assert counts.min() > 0.9 * W.size / 10  # flat, not bell-shaped


def test_zeros_is_all_zero():
    assert not init_weights("zeros", 5, 4, np.random.default_rng(0)).any()


@pytest.mark.parametrize("k", [1, 3, 10])
def test_sparse_has_exactly_k_nonzeros_per_output_neuron(k):
    W = init_weights("sparse", 50, 40, np.random.default_rng(k), scale=1.0, k=k)
    assert np.all(np.count_nonzero(W, axis=0) == k)
    full = init_weights("sparse", 6, 5, np.random.default_rng(0), scale=1.0, k=6)
    assert np.all(np.count_nonzero(full, axis=0) == 6)
    with pytest.raises(ValueError, match="k"):
        init_weights("sparse", 6, 5, np.random.default_rng(0), k=7)


def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(ValueError, match="xavier"):
        init_weights("glorot", 3, 3, np.random.default_rng(0))


def test_zeros_keeps_every_hidden_unit_identical_while_training():
    cfg = ModelConfig(hidden=[8, 6], init="zeros", bias_init=0.01)
    model = build_model(cfg, 5, 3, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    X = rng.standard_normal((32, 5)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    loss_fn, opt = SoftmaxCrossEntropy(), SGD()
    for _ in range(20):
        _, dscores = loss_fn.loss_and_grad(model.forward(X, train=True), y)
        model.backward(dscores)
        opt.step(model.params, 0.5)
    state = model.state_dict()
    assert np.abs(state["fc2.W"]).max() > 0  # the output layer did learn something
    for name in ("fc0.W", "fc1.W"):  # every column (hidden unit) is the same as the first
        W = state[name]
        assert np.array_equal(W, np.repeat(W[:, :1], W.shape[1], axis=1)), name
    hidden = model.layers[1].forward(model.layers[0].forward(X, False), False)
    assert np.array_equal(hidden, np.repeat(hidden[:, :1], hidden.shape[1], axis=1))


def test_per_layer_overrides_init_and_bias():
    cfg = load_config(None, ["model.hidden=[30, 20]", "model.init=he", "model.layers.1.init=zeros",
                             "model.layers.2.bias_init=0.5", "model.layers.0.init=sparse",
                             "model.layers.0.sparse_k=3", "model.layers.0.init_scale=2"]).model
    model = build_model(cfg, 10, 4, np.random.default_rng(0))
    state = model.state_dict()
    assert np.all(np.count_nonzero(state["fc0.W"], axis=0) == 3)
    assert not state["fc1.W"].any()
    assert state["fc2.W"].std() > 0.1  # he: std sqrt(2/20)
    assert np.all(state["fc2.b"] == 0.5) and np.all(state["fc0.b"] == 0)


def test_same_seed_same_weights():
    cfg = ModelConfig(hidden=[12], init="xavier")
    a = build_model(cfg, 5, 3, np.random.default_rng(7)).state_dict()
    b = build_model(cfg, 5, 3, np.random.default_rng(7)).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_sparse_k_larger_than_fan_in_names_the_key():
    cfg = ModelConfig(hidden=[4], init="sparse", sparse_k=9)
    with pytest.raises(UserInputError, match=r"model\.sparse_k.*1\.\.8"):
        build_model(cfg, 8, 3, np.random.default_rng(0))


@pytest.mark.parametrize("override, expected", [
    ("model.init=glorot", ["model.init", "xavier", "sparse"]),
    ("model.layers.0.init=nope", ["model.layers.0.init", "calibrated"]),
    ("model.layers.5.l2=0.1", ["model.layers.5", "0..2"]),
    ("model.layers.-1.init=he", ["model.layers.-1", "0..2"]),
    ("model.dropout=0", ["model.dropout", "greater than 0"]),
    ("model.dropout=1.5", ["model.dropout", "less than or equal to 1"]),
    ("model.activation=swish", ["model.activation", "leaky_relu"]),
    ("model.init_scale=-1", ["model.init_scale"]),
    ("model.layers.0.bogus=1", ["model.layers.0.bogus", "unknown key"]),
])
def test_bad_model_config_exits_2_naming_the_key(override, expected):
    result = CliRunner().invoke(app, ["validate", "configs/quickstart.yaml", "--set", override])
    assert result.exit_code == 2, result.output
    for text in expected:
        assert text in result.output, (text, result.output)
