"""Optimizers against torch.optim and independent formulas; schedules; early stopping; config checks."""

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.config import OptimConfig, load_config
from nnrun.errors import UserInputError
from nnrun.experiment import build_model, build_optimizer, build_schedule, load_data, preprocess_settings, train_setup
from nnrun.nn.layers import Parameter
from nnrun.nn.losses import SoftmaxCrossEntropy
from nnrun.optim import OPTIMIZERS
from nnrun.preprocess import fit_preprocessor
from nnrun.trainer import History, SilentReporter, fit

STEPS = 6
W0 = np.random.default_rng(0).standard_normal((4, 3))
GRADS = [np.random.default_rng(i + 1).standard_normal((4, 3)) for i in range(STEPS)]


def run_ours(cfg, lrs):
    p = Parameter("w", W0.copy(), "weight", 0)
    opt = build_optimizer(cfg)
    for g, lr in zip(GRADS, lrs, strict=True):
        p.grad[...] = g
        opt.step([p], lr)
    return p.value


def run_torch(torch, make, lr):
    w = torch.nn.Parameter(torch.tensor(W0.copy()))
    opt = make([w], lr)
    for g in GRADS:
        w.grad = torch.tensor(g)
        opt.step()
    return w.detach().numpy()


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "rmsprop"])
def test_update_matches_torch_optim(name):
    torch = pytest.importorskip("torch")
    cfg = OptimConfig(name=name, lr=0.05, momentum=0.8, beta1=0.85, beta2=0.99, eps=1e-6, decay_rate=0.9)
    makers = {
        "sgd": lambda ps, lr: torch.optim.SGD(ps, lr=lr),
        "momentum": lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.8),
        "nesterov": lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.8, nesterov=True),
        "adam": lambda ps, lr: torch.optim.Adam(ps, lr=lr, betas=(0.85, 0.99), eps=1e-6),
        "rmsprop": lambda ps, lr: torch.optim.RMSprop(ps, lr=lr, alpha=0.9, eps=1e-6),
    }
    ours = run_ours(cfg, [0.05] * STEPS)
    assert np.allclose(ours, run_torch(torch, makers[name], 0.05), atol=1e-12, rtol=1e-10)
    assert not np.allclose(ours, W0)


@pytest.mark.parametrize("name", ["adamw", "sgdw"])
def test_decoupled_weight_decay_matches_torch(name):
    torch = pytest.importorskip("torch")
    cfg = OptimConfig(name=name, momentum=0.8, beta1=0.85, beta2=0.99, eps=1e-6, weight_decay=0.3)

    def sgd_with_decay(ps, lr):  # PyTorch's SGD has no decoupled decay: shrink first, as AdamW does
        class SGDW(torch.optim.SGD):
            def step(self):
                with torch.no_grad():
                    for p in ps:
                        p.mul_(1 - lr * 0.3)
                super().step()
        return SGDW(ps, lr=lr, momentum=0.8)

    makers = {"adamw": lambda ps, lr: torch.optim.AdamW(ps, lr=lr, betas=(0.85, 0.99), eps=1e-6, weight_decay=0.3),
              "sgdw": sgd_with_decay}
    ours = run_ours(cfg, [0.05] * STEPS)
    np.testing.assert_allclose(ours, run_torch(torch, makers[name], 0.05), atol=1e-12, rtol=1e-10)
    plain = run_ours(OptimConfig(name={"adamw": "adam", "sgdw": "momentum"}[name], momentum=0.8, beta1=0.85,
                                 beta2=0.99, eps=1e-6), [0.05] * STEPS)
    assert np.abs(ours).sum() < np.abs(plain).sum()  # the decay shrank the weights


def test_decoupled_decay_leaves_biases_and_batchnorm_alone_and_differs_from_l2_under_adam():
    for kind in ("bias", "gamma", "beta"):
        p = Parameter("p", np.ones(3), kind, 0)
        build_optimizer(OptimConfig(name="adamw", weight_decay=0.5)).step([p], 0.1)  # zero gradient
        np.testing.assert_array_equal(p.value, 1.0)
    # Adam divides an L2 term by the gradient's scale; AdamW shrinks every weight by lr * wd whatever its gradient
    w = np.array([1.0, 1.0])
    g = np.array([100.0, 0.01])
    decoupled = Parameter("w", w.copy(), "weight", 0)
    decoupled.grad[...] = g
    build_optimizer(OptimConfig(name="adamw", weight_decay=0.1, eps=1e-12)).step([decoupled], 0.01)
    np.testing.assert_allclose(decoupled.value, w * (1 - 0.001) - 0.01 * np.sign(g))  # Adam's first step: sign


def test_momentum_and_nesterov_follow_the_notes_when_lr_changes():
    lrs = [0.1, 0.1, 0.05, 0.05, 0.01, 0.01]
    mu = 0.9
    w, v = W0.copy(), np.zeros_like(W0)
    wn, vn = W0.copy(), np.zeros_like(W0)
    for g, lr in zip(GRADS, lrs, strict=True):
        v = mu * v - lr * g
        w = w + v
        v_prev = vn
        vn = mu * vn - lr * g
        wn = wn - mu * v_prev + (1 + mu) * vn
    assert np.allclose(run_ours(OptimConfig(name="momentum", momentum=mu), lrs), w, atol=1e-12)
    assert np.allclose(run_ours(OptimConfig(name="nesterov", momentum=mu), lrs), wn, atol=1e-12)


def test_adam_first_step_moves_each_weight_by_lr():
    # Bias correction: the first step is lr * g / (|g| + eps) = lr * sign(g) for eps << |g|.
    p = Parameter("w", W0.copy(), "weight", 0)
    p.grad[...] = GRADS[0]
    build_optimizer(OptimConfig(name="adam", eps=1e-12)).step([p], 0.01)
    assert np.allclose(W0 - p.value, 0.01 * np.sign(GRADS[0]))


def test_updates_keep_float32():
    p = Parameter("w", W0.astype(np.float32), "weight", 0)
    for name in OPTIMIZERS:
        p.grad[...] = 1
        build_optimizer(OptimConfig(name=name)).step([p], 0.1)
        assert p.value.dtype == np.float32


def test_schedule_values():
    cfg = OptimConfig(lr=0.1, schedule="step", step_epochs=3, lr_decay=0.2)
    assert [build_schedule(cfg)(e, 10) for e in range(7)] == pytest.approx(
        [0.1, 0.1, 0.1, 0.02, 0.02, 0.02, 0.004])
    cfg = OptimConfig(lr=0.1, schedule="exponential", lr_decay=0.5)
    assert [build_schedule(cfg)(e, 10) for e in range(3)] == pytest.approx([0.1, 0.05, 0.025])
    cfg = OptimConfig(lr=0.1, schedule="cosine", min_lr=0.01)
    assert build_schedule(cfg)(0, 4) == pytest.approx(0.1)
    assert build_schedule(cfg)(2, 4) == pytest.approx(0.055)
    assert build_schedule(cfg)(3, 4) == pytest.approx(0.01 + 0.09 * (1 + math.cos(3 * math.pi / 4)) / 2)
    assert all(build_schedule(OptimConfig(lr=0.3))(e, 5) == 0.3 for e in range(5))


def test_warmup_ramps_to_the_schedules_first_rate_then_runs_it_over_the_remaining_epochs():
    cfg = OptimConfig(lr=0.1, schedule="cosine", min_lr=0.0, warmup_epochs=3)
    rates = [build_schedule(cfg)(e, 7) for e in range(7)]
    cosine = OptimConfig(lr=0.1, schedule="cosine", min_lr=0.0)
    assert rates[:3] == pytest.approx([0.025, 0.05, 0.075])
    assert rates[3:] == pytest.approx([build_schedule(cosine)(e, 4) for e in range(4)])
    step = OptimConfig(lr=0.2, schedule="step", step_epochs=2, lr_decay=0.5, warmup_epochs=1)
    assert [build_schedule(step)(e, 5) for e in range(5)] == pytest.approx([0.1, 0.2, 0.2, 0.1, 0.1])
    with pytest.raises(UserInputError, match=r"optim\.warmup_epochs=5.*allowed: 0\.\.4"):
        load_config(None, ["optim.warmup_epochs=5", "train.epochs=5"])


@pytest.mark.parametrize("epochs, pct_start", [(20, 0.3), (7, 0.25), (3, 0.3)])
def test_one_cycle_matches_torch_one_cycle_stepped_once_per_epoch(epochs, pct_start):
    torch = pytest.importorskip("torch")
    cfg = OptimConfig(lr=0.4, schedule="one_cycle", pct_start=pct_start, div_factor=20, final_div_factor=100)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.4, total_steps=epochs, pct_start=pct_start,
                                                div_factor=20, final_div_factor=100, cycle_momentum=False)
    rates = []
    for epoch in range(epochs):
        rates.append(build_schedule(cfg)(epoch, epochs))
        assert rates[-1] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()
    assert rates[-1] == pytest.approx(0.4 / 20 / 100)
    if pct_start * epochs >= 2:  # else epoch 0 already lies past the rise (as in PyTorch)
        assert rates[0] == pytest.approx(0.4 / 20) and max(rates) <= 0.4


@pytest.mark.parametrize("schedule", ["step", "exponential", "cosine"])
def test_schedules_match_torch_schedulers(schedule):
    torch = pytest.importorskip("torch")
    cfg = OptimConfig(lr=0.2, schedule=schedule, step_epochs=2, lr_decay=0.5, min_lr=0.001)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = {"step": lambda: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
             "exponential": lambda: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5),
             "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8, eta_min=0.001)}[schedule]()
    for epoch in range(8):
        assert build_schedule(cfg)(epoch, 8) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()


def digits_setup(overrides):
    cfg = load_config(None, ["model.hidden=[16]", *overrides])
    data = load_data(cfg)
    pre = fit_preprocessor(preprocess_settings(cfg.preprocess), data.X_train, data.image_shape)
    data = data.with_features(*(pre.transform(X) for X in (data.X_train, data.X_val, data.X_test)))
    return cfg, data, build_model(cfg.model, data.n_features, 10, np.random.default_rng(0))


def digits_fit(overrides):
    cfg, data, model = digits_setup(overrides)
    history = fit(model, SoftmaxCrossEntropy(), data, train_setup(cfg), SilentReporter(), History())
    return model, history


def test_early_stopping_stops_after_patience_and_restores_the_best_weights():
    # A learning rate too small to change anything in float32: no later epoch beats epoch 1.
    model, history = digits_fit(["optim.name=sgd", "optim.lr=1e-12", "train.epochs=20", "train.patience=2",
                                 "regularization.l2=0"])
    assert history.stopped_early and history.best_epoch == 1 and len(history.rows) == 3
    state = model.state_dict()
    assert all(np.array_equal(state[k], history.best[k]) for k in state)
    assert history.restored_best


def test_restore_best_ends_with_the_best_epochs_weights_not_the_last():
    cfg, data, model = digits_setup(["optim.lr=0.01", "train.epochs=4"])
    setup = train_setup(cfg)

    def spoil_after_epoch_2(history):
        # Epochs 3 and 4 start from an output layer of zeros and a tiny step cannot recover:
        # validation accuracy collapses, so the best epoch is one of the first two.
        if len(history.rows) == 2:
            setup.schedule = lambda epoch, epochs: 1e-9
            for p in model.params:
                if p.name.startswith("fc1."):
                    p.value[...] = 0

    history = fit(model, SoftmaxCrossEntropy(), data, setup, SilentReporter(), History(), spoil_after_epoch_2)
    assert history.best_epoch < len(history.rows) and not history.stopped_early
    state = model.state_dict()
    assert all(np.array_equal(state[k], history.best[k]) for k in state)
    assert not all(np.array_equal(state[k], history.last_good[k]) for k in state)


def test_early_stopping_on_a_stalled_run():
    model, history = digits_fit(["optim.name=sgd", "optim.lr=0.5", "train.epochs=30", "train.patience=2",
                                 "optim.schedule=exponential", "optim.lr_decay=0.01"])
    # The rate falls 100x each epoch: the weights freeze after two epochs, so patience runs out.
    assert history.stopped_early and len(history.rows) < 30
    assert len(history.rows) - history.best_epoch == 2
    assert [r["lr"] for r in history.rows[:3]] == pytest.approx([0.5, 0.005, 0.00005])


def test_without_restore_best_the_last_weights_stay():
    model, history = digits_fit(["train.epochs=3", "train.restore_best=false"])
    assert not history.restored_best and history.best_epoch is not None
    assert all(np.array_equal(v, history.last_good[k]) for k, v in model.state_dict().items())


def test_dropout_masks_come_from_the_dropout_stream():
    a, _ = digits_fit(["train.epochs=1", "model.dropout=0.5", "seed=1"])
    b, _ = digits_fit(["train.epochs=1", "model.dropout=0.5", "seed=1"])
    sa, sb = a.state_dict(), b.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("override, expected", [
    ("optim.name=adagrad", ["optim.name", "nesterov", "rmsprop"]),
    ("optim.schedule=linear", ["optim.schedule", "cosine"]),
    ("optim.lr=0", ["optim.lr"]),
    ("optim.lr_decay=1.5", ["optim.lr_decay"]),
    ("train.patience=0", ["train.patience"]),
])
def test_bad_optim_config_exits_2(override, expected):
    result = CliRunner().invoke(app, ["validate", "configs/quickstart.yaml", "--set", override])
    assert result.exit_code == 2, result.output
    for text in expected:
        assert text in result.output
