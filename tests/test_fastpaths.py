"""The fast float32 paths compute the same numbers as plain float64 reference code.

The reference below is written for clarity, not speed: float64 throughout, a fresh array for
every intermediate, the formulas of the notes. nnrun's training step (in-place layers, reused
buffers, float32 BLAS) must agree with it within float32 rounding: one step and two steps of
momentum SGD, with BatchNorm and dropout, the trainer's whole loop (`fit`), and evaluation in
large batches against one row at a time.
"""

import numpy as np
import pytest

from nnrun.config import validate_config
from nnrun.datasets import Dataset
from nnrun.experiment import build_model, build_optimizer, train_setup
from nnrun.nn.layers import Dropout
from nnrun.nn.losses import SoftmaxCrossEntropy
from nnrun.trainer import History, SilentReporter, evaluate, fit

D, HIDDEN, C = 96, [48, 32], 10
LR, MU, L2 = 0.05, 0.9, 1e-3


def config(batchnorm: bool = False, keep: float = 1.0, l2: float = 0.0, batch_size: int = 64, epochs: int = 1):
    """A validated config of the small test network (momentum SGD, softmax)."""
    model = {"hidden": HIDDEN, "activation": "relu", "init": "he", "bias_init": 0.01}
    if batchnorm:
        model["batchnorm"] = True
    if keep < 1:
        model["dropout"] = keep
    return validate_config({
        "model": model, "regularization": {"l2": l2}, "loss": {"name": "softmax"},
        "optim": {"name": "momentum", "lr": LR, "momentum": MU},
        "train": {"epochs": epochs, "batch_size": batch_size, "eval_batch_size": 1000, "eval_train_size": 50,
                  "restore_best": False}})


def model_for(cfg, seed: int = 0):
    """nnrun's float32 model for `cfg` and a float64 copy of its parameters (by name)."""
    model = build_model(cfg.model, D, C, np.random.default_rng(seed))
    return model, {k: v.astype(np.float64) for k, v in model.state_dict().items()}


def batch(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Standardized inputs (gaussian, std 1) and labels."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D), dtype=np.float32), rng.integers(0, C, n)


# ---- the float64 reference --------------------------------------------------------------------

def ref_forward(p: dict, x: np.ndarray, train: bool, masks=None, bn_eps: float = 1e-5):
    """Scores of the reference MLP and what the backward pass needs.

    Per hidden layer i: z = a W + b; BatchNorm (batch statistics in training, running ones in
    evaluation) when p holds bn{i}.gamma; ReLU; times the dropout mask (already scaled by 1/keep).
    """
    a = x.astype(np.float64)
    cache = []
    for i in range(len(HIDDEN)):
        z = a @ p[f"fc{i}.W"] + p[f"fc{i}.b"]
        bn = None
        if f"bn{i}.gamma" in p:
            if train:
                mean, var = z.mean(0), z.var(0)
            else:
                mean, var = p[f"bn{i}.running_mean"], p[f"bn{i}.running_var"]
            inv = 1 / np.sqrt(var + bn_eps)
            xhat = (z - mean) * inv
            bn = (xhat, inv, mean, var)
            z = p[f"bn{i}.gamma"] * xhat + p[f"bn{i}.beta"]
        h = np.maximum(z, 0)
        mask = masks[i] if masks is not None else None
        out = h * mask if mask is not None else h
        cache.append((a, z, bn, mask))
        a = out
    k = len(HIDDEN)
    return a @ p[f"fc{k}.W"] + p[f"fc{k}.b"], (cache, a)


def ref_softmax(scores: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient, float64."""
    s = scores - scores.max(1, keepdims=True)
    log_z = np.log(np.exp(s).sum(1))
    probs = np.exp(s - log_z[:, None])
    n = len(y)
    loss = (log_z - s[np.arange(n), y]).mean()
    d = probs.copy()
    d[np.arange(n), y] -= 1
    return float(loss), d / n


def ref_grads(p: dict, x: np.ndarray, y: np.ndarray, masks=None, l2: float = 0.0):
    """Loss and the gradient of every parameter (L2 on weights only), float64."""
    scores, (cache, last) = ref_forward(p, x, True, masks)
    loss, d = ref_softmax(scores, y)
    k = len(HIDDEN)
    g = {f"fc{k}.W": last.T @ d, f"fc{k}.b": d.sum(0)}
    d = d @ p[f"fc{k}.W"].T
    for i in reversed(range(k)):
        a, z, bn, mask = cache[i]
        if mask is not None:
            d = d * mask
        d = d * (z > 0)
        if bn is not None:
            xhat, inv, _, _ = bn
            g[f"bn{i}.beta"] = d.sum(0)
            g[f"bn{i}.gamma"] = (d * xhat).sum(0)
            dxhat = d * p[f"bn{i}.gamma"]
            d = inv * (dxhat - dxhat.mean(0) - xhat * (dxhat * xhat).mean(0))
        g[f"fc{i}.W"] = a.T @ d
        g[f"fc{i}.b"] = d.sum(0)
        if i > 0:
            d = d @ p[f"fc{i}.W"].T
    for name in g:
        if name.endswith(".W"):
            g[name] = g[name] + l2 * p[name]
    return loss, g


def ref_momentum_step(p: dict, g: dict, v: dict) -> None:
    """`v = mu v - lr g; w += v` for every parameter with a gradient."""
    for name, grad in g.items():
        v[name] = MU * v.get(name, 0.0) - LR * grad
        p[name] = p[name] + v[name]


def ref_bn_running(p: dict, x: np.ndarray, masks=None, momentum: float = 0.1) -> None:
    """Update the running statistics from one training batch (PyTorch convention, unbiased var)."""
    _, (cache, _) = ref_forward(p, x, True, masks)
    n = len(x)
    for i, (_, _, bn, _) in enumerate(cache):
        if bn is None:
            continue
        _, _, mean, var = bn
        p[f"bn{i}.running_mean"] = (1 - momentum) * p[f"bn{i}.running_mean"] + momentum * mean
        p[f"bn{i}.running_var"] = (1 - momentum) * p[f"bn{i}.running_var"] + momentum * var * n / (n - 1)


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str, rtol: float = 2e-4) -> None:
    """Agreement within float32 rounding, relative to the array's largest entry."""
    actual = np.asarray(actual, dtype=np.float64)
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    err = float(np.max(np.abs(actual - expected))) / scale
    assert err < rtol, f"{what}: max error {err:.2e} of the largest entry (allowed {rtol:.0e})"


# ---- nnrun's steps against the reference ------------------------------------------------------

def nnrun_step(model, loss_fn, optimizer, x, y, lr=LR) -> float:
    scores = model.forward(x, train=True)
    loss, dscores = loss_fn.loss_and_grad(scores, y)
    model.backward(dscores)
    optimizer.step(model.params, lr)
    return loss


@pytest.mark.parametrize("bn, keep", [(False, 1.0), (True, 1.0), (False, 0.5), (True, 0.8)],
                         ids=["plain", "batchnorm", "dropout", "batchnorm+dropout"])
def test_training_steps_match_float64_reference(bn, keep):
    cfg = config(batchnorm=bn, keep=keep)
    model, p = model_for(cfg)
    loss_fn = SoftmaxCrossEntropy()
    optimizer = build_optimizer(cfg.optim)
    rng = np.random.default_rng(5)
    v: dict = {}
    for step in range(2):  # the second step exercises the velocity
        x, y = batch(128, seed=10 + step)
        masks = None
        if keep < 1:
            masks = [((rng.random((len(x), h)) < keep) / keep) for h in HIDDEN]
            for layer, mask in zip(model.dropout_layers(), masks, strict=True):
                layer.held_mask = mask.astype(np.float32)
        x_before = x.copy()
        ref_loss, g = ref_grads(p, x, y, masks)
        if bn:
            ref_bn_running(p, x, masks, cfg.model.bn_momentum)
        loss = nnrun_step(model, loss_fn, optimizer, x, y)
        assert np.array_equal(x, x_before), "the training step must not modify its input batch"
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        ref_momentum_step(p, g, v)
        state = model.state_dict()
        assert set(state) == set(p)
        for name, value in state.items():
            assert value.dtype == np.float32, f"{name} left float32"
            assert_close(value, p[name], f"step {step + 1}: {name}")
        # The parameter update itself, not just the weights (which barely move), must match;
        # a bias right before BatchNorm has a zero gradient, so only its absolute size is checked.
        largest = max(float(np.max(np.abs(u))) for u in v.values())
        for name in g:
            update = state[name] - p[name] + v[name]
            if float(np.max(np.abs(v[name]))) < 1e-6 * largest:
                assert float(np.max(np.abs(update))) < 1e-5 * largest, f"step {step + 1}: update of {name}"
            else:
                assert_close(update, v[name], f"step {step + 1}: update of {name}", rtol=2e-3)


def test_first_layer_gradient_matches_reference():
    cfg = config()
    model, p = model_for(cfg)
    x, y = batch(200)
    scores = model.forward(x, train=True)
    _, dscores = SoftmaxCrossEntropy().loss_and_grad(scores, y)
    model.backward(dscores)
    _, g = ref_grads(p, x, y)
    for param in model.params:
        assert param.grad.dtype == np.float32
        assert_close(param.grad, g[param.name], f"gradient of {param.name}")


def test_softmax_is_stable_and_matches_float64_on_large_scores():
    rng = np.random.default_rng(2)
    scores = (rng.standard_normal((300, C)) * 400).astype(np.float32)
    y = rng.integers(0, C, 300)
    loss, d = SoftmaxCrossEntropy().loss_and_grad(scores.copy(), y)
    ref_loss, ref_d = ref_softmax(scores.astype(np.float64), y)
    assert np.isfinite(loss) and loss == pytest.approx(ref_loss, rel=1e-5)
    assert_close(d, ref_d, "softmax gradient", rtol=1e-5)
    assert SoftmaxCrossEntropy().loss(scores, y) == pytest.approx(ref_loss, rel=1e-5)


# ---- the trainer ------------------------------------------------------------------------------

def random_dataset(n_train: int = 300, seed: int = 3) -> Dataset:
    x, y = batch(n_train + 80, seed=seed)
    return Dataset(name="random", X_train=x[:n_train], y_train=y[:n_train], X_val=x[n_train:n_train + 40],
                   y_val=y[n_train:n_train + 40], X_test=x[n_train + 40:], y_test=y[n_train + 40:],
                   class_names=[str(i) for i in range(C)], image_shape=None)


@pytest.mark.parametrize("bn", [False, True], ids=["plain", "batchnorm"])
def test_fit_matches_float64_replay_of_its_batches(bn):
    """`fit` over 2 epochs of minibatches equals the float64 reference stepped on the same batches.

    The batches `fit` draws are recorded (copied as the model receives them), checked to be a
    permutation of the training rows each epoch, and replayed through the reference.
    """
    cfg = config(batchnorm=bn, l2=L2, batch_size=64, epochs=2)
    data = random_dataset()
    X_train_before = data.X_train.copy()
    model, p = model_for(cfg)
    loss_fn = SoftmaxCrossEntropy()
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    forward, loss_and_grad = model.forward, loss_fn.loss_and_grad

    def spy_forward(x, train=False):
        if train:
            seen.append((np.array(x, copy=True), None))
        return forward(x, train)

    def spy_loss(scores, y):
        x, _ = seen[-1]
        seen[-1] = (x, np.array(y, copy=True))
        return loss_and_grad(scores, y)

    model.forward, loss_fn.loss_and_grad = spy_forward, spy_loss
    history = fit(model, loss_fn, data, train_setup(cfg), SilentReporter(), History())
    assert len(history.rows) == 2
    assert np.array_equal(data.X_train, X_train_before), "fit must not modify the training data"
    steps_per_epoch = -(-len(data.X_train) // cfg.train.batch_size)
    assert len(seen) == 2 * steps_per_epoch
    rows = {r.tobytes(): i for i, r in enumerate(data.X_train)}
    for epoch in range(2):
        chunk = seen[epoch * steps_per_epoch:(epoch + 1) * steps_per_epoch]
        index = [rows[r.tobytes()] for x, _ in chunk for r in x]
        assert sorted(index) == list(range(len(data.X_train))), "an epoch visits every training row once"
        labels = np.concatenate([y for _, y in chunk])
        assert np.array_equal(labels, data.y_train[index]), "labels travel with their rows"
    v: dict = {}
    for x, y in seen:
        _, g = ref_grads(p, x, y, l2=L2)
        if bn:
            ref_bn_running(p, x, None, cfg.model.bn_momentum)
        ref_momentum_step(p, g, v)
    for name, value in model.state_dict().items():
        assert_close(value, p[name], f"after fit: {name}", rtol=1e-3)


# ---- evaluation -------------------------------------------------------------------------------

@pytest.mark.parametrize("bn", [False, True], ids=["plain", "batchnorm"])
def test_evaluation_in_large_batches_matches_one_row_at_a_time_and_float64(bn):
    cfg = config(batchnorm=bn, keep=0.5)
    model, _ = model_for(cfg)
    # Train a few steps so BatchNorm's running statistics are not the initial ones.
    optimizer = build_optimizer(cfg.optim)
    for step in range(3):
        x, y = batch(64, seed=20 + step)
        nnrun_step(model, SoftmaxCrossEntropy(), optimizer, x, y)
    p = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    X, y = batch(257, seed=30)
    X_before = X.copy()
    loss_fn = SoftmaxCrossEntropy()
    big = evaluate(model, loss_fn, X, y, batch_size=4096)
    odd = evaluate(model, loss_fn, X, y, batch_size=100)
    single_scores = np.concatenate([model.forward(X[i:i + 1], train=False) for i in range(len(X))])
    assert np.array_equal(X, X_before), "evaluation must not modify its input"
    ref_scores, _ = ref_forward(p, X, train=False)  # dropout: identity at test time (inverted)
    ref_loss, _ = ref_softmax(ref_scores, y)
    assert_close(single_scores, ref_scores, "one-row scores")
    assert_close(model.forward(X, train=False), ref_scores, "one-batch scores")
    for result in (big, odd):
        assert result["loss"] == pytest.approx(ref_loss, rel=1e-4)
        assert result["accuracy"] == pytest.approx(float(np.mean(ref_scores.argmax(1) == y)), abs=1 / len(y))
    assert big["accuracy"] == pytest.approx(odd["accuracy"], abs=1 / len(y))


def test_dropout_masks_keep_the_expected_fraction_and_scale():
    cfg = config(keep=0.8)
    model, _ = model_for(cfg)
    x, _ = batch(512)
    model.forward(x, train=True)
    for layer in model.layers:
        if isinstance(layer, Dropout):
            mask = np.asarray(layer.mask, dtype=np.float64)
            kept = mask[mask != 0]
            assert np.allclose(kept, 1 / 0.8, rtol=1e-6), "kept units are scaled by 1/p"
            assert np.mean(mask > 0) == pytest.approx(0.8, abs=0.02)
