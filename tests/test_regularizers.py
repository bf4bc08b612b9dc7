"""Regularizers: penalty values and numeric gradients, switches, per-layer strengths, max-norm, config checks."""

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.config import ModelConfig, RegularizationConfig, load_config
from nnrun.experiment import build_model, build_regularizer, load_data, preprocess_settings, train_setup
from nnrun.nn.layers import Parameter
from nnrun.nn.losses import SoftmaxCrossEntropy
from nnrun.nn.numeric import numeric_gradient, relative_error
from nnrun.nn.regularizers import Regularizer, Strengths, l1_penalty, l2_penalty, max_norm_project
from nnrun.optim import SGD
from nnrun.preprocess import fit_preprocessor
from nnrun.trainer import History, SilentReporter, fit

RNG = np.random.default_rng(0)


def away_from_zero(shape, margin=1e-2):
    x = RNG.standard_normal(shape)
    return np.where(np.abs(x) < margin, np.sign(x) * margin + x, x)


@pytest.mark.parametrize("penalty", [l2_penalty, l1_penalty])
def test_penalty_gradient_is_numeric_gradient(penalty):
    w = away_from_zero((6, 4))
    value, grad = penalty(w, 0.3)
    assert grad.shape == w.shape and grad.dtype == w.dtype
    assert relative_error(grad, numeric_gradient(lambda: penalty(w, 0.3)[0], w)).max() < 1e-8


def test_penalty_values():
    w = np.array([[1.0, -2.0], [0.0, 3.0]])
    assert l2_penalty(w, 0.1)[0] == pytest.approx(0.5 * 0.1 * 14)
    assert l1_penalty(w, 0.1)[0] == pytest.approx(0.1 * 6)
    assert np.array_equal(l1_penalty(w, 1.0)[1], [[1, -1], [0, 1]])  # subgradient 0 at 0


def make_params():
    return [Parameter("fc0.W", away_from_zero((5, 4)), "weight", 0),
            Parameter("fc0.b", away_from_zero(4), "bias", 0),
            Parameter("bn0.gamma", away_from_zero(4), "gamma", 0),
            Parameter("bn0.beta", away_from_zero(4), "beta", 0),
            Parameter("fc1.W", away_from_zero((4, 3)), "weight", 1),
            Parameter("fc1.b", away_from_zero(3), "bias", 1)]


@pytest.mark.parametrize("bias, bn", [(False, False), (True, False), (False, True), (True, True)])
def test_elastic_net_with_per_layer_strengths_and_switches(bias, bn):
    reg = Regularizer(Strengths({"l2": 0.1, "l1": 0.05}), {1: Strengths({"l2": 0.7, "l1": 0.0})}, regularize_bias=bias,
                      regularize_bn=bn)
    params = make_params()
    for p in params:
        p.grad[...] = 0
    total = reg.add_penalty(params)
    assert total == pytest.approx(reg.penalty(params))
    expected = 0.0
    for p in params:
        penalized = p.kind == "weight" or (bias and p.kind == "bias") or (bn and p.kind in ("gamma", "beta"))
        s = Strengths({"l2": 0.7, "l1": 0.0}) if p.layer == 1 else Strengths({"l2": 0.1, "l1": 0.05})
        if penalized:
            expected += l2_penalty(p.value, s.strength("l2"))[0] + l1_penalty(p.value, s.strength("l1"))[0]
            numeric = numeric_gradient(lambda: reg.penalty(params), p.value)
            assert relative_error(p.grad, numeric).max() < 1e-8, p.name
        else:
            assert not p.grad.any(), p.name
    assert total == pytest.approx(expected)


def test_build_regularizer_resolves_per_layer_overrides():
    model = ModelConfig(hidden=[4, 4], layers={1: {"l2": 0.5}, 2: {"max_norm": 2.0, "l1": 0.0}})
    reg = build_regularizer(RegularizationConfig(l2=0.01, l1=0.02, max_norm=3.0), model)
    assert reg.strengths(0) == Strengths({"l2": 0.01, "l1": 0.02}, 3.0)
    assert reg.strengths(1) == Strengths({"l2": 0.5, "l1": 0.02}, 3.0)
    assert reg.strengths(2) == Strengths({"l2": 0.01, "l1": 0.0}, 2.0)
    assert reg.has_max_norm
    assert not build_regularizer(RegularizationConfig(), ModelConfig()).has_max_norm


def test_max_norm_projects_only_long_columns_and_keeps_direction():
    W = np.array([[3.0, 0.1, 0.0], [4.0, 0.2, 10.0]])
    before = W.copy()
    max_norm_project(W, 2.0)
    assert np.allclose(np.linalg.norm(W, axis=0), [2.0, np.linalg.norm(before[:, 1]), 2.0])
    assert np.allclose(W[:, 0], before[:, 0] * 2 / 5) and np.array_equal(W[:, 1], before[:, 1])


def test_max_norm_bound_holds_after_every_update_even_with_an_exploding_lr():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((64, 10)).astype(np.float32) * 10
    y = rng.integers(0, 4, 64)
    loss_fn = SoftmaxCrossEntropy()

    def train(max_norm):
        model = build_model(ModelConfig(hidden=[16, 16]), 10, 4, np.random.default_rng(0))
        reg = Regularizer(Strengths(max_norm=max_norm))
        opt = SGD()
        largest = []
        for _ in range(30):
            _, dscores = loss_fn.loss_and_grad(model.forward(X, train=True), y)
            model.backward(dscores)
            reg.add_penalty(model.params)
            opt.step(model.params, 50.0)
            reg.project(model.params)
            largest.append(max(np.linalg.norm(p.value, axis=0).max() for p in model.params if p.kind == "weight"))
        return largest

    bounded = train(1.5)
    assert max(bounded) <= 1.5 * (1 + 1e-5)
    with np.errstate(all="ignore"):
        unbounded = train(None)
    assert max(unbounded) > 100  # without the constraint the same steps blow the weights up


def test_fit_projects_after_updates_and_reports_reg_loss_separately():
    cfg = load_config(None, ["model.hidden=[32]", "train.epochs=3", "optim.name=sgd", "optim.lr=5",
                             "regularization.max_norm=1.0", "regularization.l2=0.01", "model.layers.1.max_norm=0.5"])
    data = load_data(cfg)
    pre = fit_preprocessor(preprocess_settings(cfg.preprocess), data.X_train, data.image_shape)
    data = data.with_features(*(pre.transform(X) for X in (data.X_train, data.X_val, data.X_test)))
    model = build_model(cfg.model, data.n_features, 10, np.random.default_rng(0))
    norms = []
    fit(model, SoftmaxCrossEntropy(), data, train_setup(cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"restore_best": False})})), SilentReporter(), History(),
        lambda h: norms.append([np.linalg.norm(p.value, axis=0).max() for p in model.params if p.kind == "weight"]))
    assert len(norms) == 3
    for fc0, fc1 in norms:
        assert fc0 <= 1.0 * (1 + 1e-5) and fc1 <= 0.5 * (1 + 1e-5)


def test_reg_loss_column_is_the_penalty_alone():
    base = ["model.hidden=[16]", "train.epochs=1"]
    rows = {}
    for l2 in (0.0, 0.1):
        cfg = load_config(None, [*base, f"regularization.l2={l2}"])
        data = load_data(cfg)
        model = build_model(cfg.model, data.n_features, 10, np.random.default_rng(0))
        rows[l2] = fit(model, SoftmaxCrossEntropy(), data, train_setup(cfg), SilentReporter(), History()).rows[0]
    assert rows[0.0]["reg_loss"] == 0
    assert rows[0.1]["reg_loss"] > 0.1 and rows[0.1]["train_loss"] < 10


@pytest.mark.parametrize("override, key", [
    ("regularization.l2=-0.1", "regularization.l2"),
    ("regularization.l1=-1", "regularization.l1"),
    ("regularization.max_norm=0", "regularization.max_norm"),
    ("regularization.max_norm=-2", "regularization.max_norm"),
    ("model.layers.1.l2=-0.5", "model.layers.1.l2"),
    ("model.layers.0.max_norm=0", "model.layers.0.max_norm"),
])
def test_bad_strengths_exit_2_naming_the_key(override, key):
    result = CliRunner().invoke(app, ["validate", "configs/quickstart.yaml", "--set", override])
    assert result.exit_code == 2, result.output
    assert key in result.output and "greater than" in result.output
