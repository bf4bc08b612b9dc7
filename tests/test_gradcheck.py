"""The gradient checker: the numeric helper, whole networks, kink handling, bug detection, the CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.config import ModelConfig
from nnrun.experiment import build_model
from nnrun.nn.layers import BatchNorm
from nnrun.nn.losses import LOSSES, SoftmaxCrossEntropy, Targets
from nnrun.nn.numeric import check_model_gradients, numeric_gradient
from nnrun.nn.regularizers import Regularizer, Strengths

runner = CliRunner()


def test_numeric_gradient_of_a_known_function():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    grad = numeric_gradient(lambda: float(np.sum(x ** 3)), x)
    assert np.allclose(grad, 3 * x ** 2, rtol=1e-8)
    part = numeric_gradient(lambda: float(np.sum(x ** 3)), x, indices=np.array([3]))
    assert part.shape == (1,) and np.isclose(part[0], 27.0)
    assert np.array_equal(x, [[1.0, -2.0], [0.5, 3.0]])  # restored


def small_net(**model):
    cfg = ModelConfig(**{"hidden": [6, 5], "bias_init": 0.05, **model})
    model = build_model(cfg, 4, 3, np.random.default_rng(0)).astype(np.float64)
    rng = np.random.default_rng(1)
    return model, rng.standard_normal((8, 4)), rng.integers(0, 3, 8)


def test_network_with_batchnorm_dropout_l1_l2_passes():
    model, X, y = small_net(batchnorm=True, dropout=0.6)
    for p in model.params:
        if p.kind == "beta":  # away from 0, where L1 has its kink (zeros would all be skipped)
            p.value[:] = np.random.default_rng(2).uniform(0.1, 0.5, p.value.shape)
    reg = Regularizer(Strengths({"l2": 0.05, "l1": 0.01}), {2: Strengths({"l2": 0.3})}, regularize_bias=True,
                      regularize_bn=True)
    checks = check_model_gradients(model, SoftmaxCrossEntropy(), X, y, reg)
    assert [c.name for c in checks] == [p.name for p in model.params]
    for c in checks:
        size = int(np.prod(c.shape))
        assert c.passed and c.checked + c.skipped == size and c.checked >= 0.8 * size, c
    assert max(c.max_rel_error for c in checks) < 1e-6


def test_a_wrong_gradient_is_caught(monkeypatch):
    model, X, y = small_net(batchnorm=True)
    original = BatchNorm.backward

    def forgets_the_mean_term(self, dout):
        dx = original(self, dout)
        return dx + (self.gamma.value * self.inv_std * self.beta.grad / dout.shape[0])

    monkeypatch.setattr(BatchNorm, "backward", forgets_the_mean_term)
    checks = {c.name: c for c in check_model_gradients(model, SoftmaxCrossEntropy(), X, y)}
    assert not checks["fc0.W"].passed and checks["fc0.W"].max_rel_error > 1e-3
    assert checks["fc2.W"].passed  # layers after the bug are unaffected


def test_a_missing_penalty_gradient_is_caught():
    model, X, y = small_net()
    reg = Regularizer(Strengths({"l2": 0.1}))
    checks = check_model_gradients(model, SoftmaxCrossEntropy(), X, y, reg)
    assert all(c.passed for c in checks)

    class NoGradient(Regularizer):
        def add_penalty(self, params):
            return self.penalty(params)

    checks = check_model_gradients(model, SoftmaxCrossEntropy(), X, y, NoGradient(Strengths({"l2": 0.1})))
    assert not any(c.passed for c in checks if c.name.endswith(".W"))


def test_entries_at_a_relu_kink_or_an_l1_zero_are_skipped_not_failed():
    model, X, y = small_net()
    fc0 = model.layers[0]
    # Put unit 0's pre-activation for example 0 exactly at the ReLU kink: moving its bias by
    # +-h switches that unit on and off, so a centered difference there is not a derivative.
    fc0.b.value[0] = -(X[0] @ fc0.W.value[:, 0])
    model.layers[2].W.value[1, 1] = 0.0  # an L1-penalized weight exactly at |w|'s kink
    checks = {c.name: c for c in check_model_gradients(model, SoftmaxCrossEntropy(), X, y,
                                                        Regularizer(Strengths({"l1": 0.05})))}
    assert checks["fc0.b"].skipped >= 1 and checks["fc0.b"].passed
    assert checks["fc1.W"].skipped >= 1 and checks["fc1.W"].passed
    assert all(c.passed for c in checks.values())


def linear_net_at_a_loss_kink():
    """A float64 linear model (no hidden layer), its inputs, their scores and its Linear layer: tests shift
    an output bias so that one score of example 0 sits exactly on a kink of `loss`."""
    model = build_model(ModelConfig(hidden=[]), 4, 3, np.random.default_rng(0)).astype(np.float64)
    X = np.random.default_rng(1).standard_normal((6, 4))
    fc = model.layers[0]
    return model, X, X @ fc.W.value + fc.b.value, fc


def bias_checks(model, loss, X, y):
    checks = {c.name: c for c in check_model_gradients(model, loss, X, y)}
    return checks["fc0.b"]


@pytest.mark.parametrize("name", ["svm", "squared_hinge"])
def test_a_margin_exactly_at_the_hinge_kink_is_skipped(name):
    y = np.array([0, 1, 2, 0, 1, 2])
    loss = LOSSES[name].create(Targets(["a", "b", "c"], y, "test"))
    model, X, s, fc = linear_net_at_a_loss_kink()
    fc.b.value[1] += -(s[0, 1] - s[0, 0] + 1.0)  # s_1 - s_0 + margin = 0 for example 0 (true class 0)
    check = bias_checks(model, loss, X, y)
    assert check.skipped >= 1 and check.passed


def test_without_the_kinks_hook_the_svm_kink_fails_the_check(monkeypatch):
    y = np.array([0, 1, 2, 0, 1, 2])
    loss = LOSSES["svm"].create(Targets(["a", "b", "c"], y, "test"))
    model, X, s, fc = linear_net_at_a_loss_kink()
    fc.b.value[1] += -(s[0, 1] - s[0, 0] + 1.0)
    monkeypatch.setattr(type(loss), "kinks", lambda self, scores, y: None)
    check = bias_checks(model, loss, X, y)
    assert check.skipped == 0 and not check.passed  # the centered difference averaged two slopes


def test_attribute_hinge_and_l1_kinks_are_skipped():
    y_attr = np.random.default_rng(2).integers(0, 2, (6, 3)).astype(np.float64)
    loss = LOSSES["attribute_hinge"].create(Targets(["a", "b", "c"], y_attr, "test"))
    model, X, s, fc = linear_net_at_a_loss_kink()
    t = 2 * y_attr[0, 2] - 1
    fc.b.value[2] += 1.0 / t - s[0, 2]  # 1 - t s = 0 for example 0, attribute 2
    check = bias_checks(model, loss, X, y_attr)
    assert check.skipped >= 1 and check.passed
    y_reg = np.random.default_rng(3).normal(size=(6, 3))
    loss = LOSSES["l1"].create(Targets(["t0", "t1", "t2"], y_reg, "test"), standardize_targets=False)
    model, X, s, fc = linear_net_at_a_loss_kink()
    fc.b.value[0] += y_reg[0, 0] - s[0, 0]  # the error of example 0, output 0 is exactly 0
    check = bias_checks(model, loss, X, y_reg)
    assert check.skipped >= 1 and check.passed


def test_max_entries_samples_and_state_is_restored():
    model, X, y = small_net(batchnorm=True)
    before = model.snapshot()
    checks = check_model_gradients(model, SoftmaxCrossEntropy(), X, y, max_entries=5)
    assert all(c.checked + c.skipped == min(5, int(np.prod(c.shape))) for c in checks)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_cli_gradcheck_passes_on_the_shipped_config():
    result = runner.invoke(app, ["gradcheck", "configs/gradcheck.yaml", "--json", "--max-entries", "40"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is True
    names = {p["name"] for p in report["params"]}
    assert {"fc0.W", "fc0.b", "bn0.gamma", "bn0.beta", "bn1.gamma", "fc2.W", "fc2.b"} <= names
    assert all(p["max_rel_error"] < 1e-6 for p in report["params"])


def test_cli_gradcheck_table_and_failure_exit_code():
    result = runner.invoke(app, ["gradcheck", "configs/gradcheck.yaml", "--max-entries", "10"])
    assert result.exit_code == 0 and "bn0.gamma" in result.output and "passed" in result.output
    failing = runner.invoke(app, ["gradcheck", "configs/gradcheck.yaml", "--max-entries", "10", "--tol", "1e-15"])
    assert failing.exit_code == 1 and "FAILED" in failing.output


@pytest.mark.parametrize("args", [["--batch-size", "1"], ["--max-entries", "-1"], ["--h", "0"],
                                  ["--set", "optim.name=sgdd"]])
def test_cli_gradcheck_bad_input_exits_2(args):
    result = runner.invoke(app, ["gradcheck", "configs/gradcheck.yaml", *args])
    assert result.exit_code == 2, result.output
