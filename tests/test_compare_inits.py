"""`nnrun compare-inits`: the phenomena the notes describe, on small networks and the bundled digits."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.compare_inits import (
    build_network,
    count_distinct_units,
    forward_statistics,
    network_config,
    parse_schemes,
    train_network,
)
from nnrun.config import load_config
from nnrun.errors import UserInputError
from nnrun.experiment import prepare_data
from nnrun.nn.layers import ACTIVATIONS


def dead_mask(activation, a):
    return ACTIVATIONS[activation]().dead_mask(a)

runner = CliRunner()


@pytest.fixture(scope="module")
def base():
    """Digits with per-feature standardization (inputs of unit variance)."""
    return load_config(None, ["preprocess.scale=std"])


@pytest.fixture(scope="module")
def digits(base):
    return prepare_data(base)


def layer_stats(base, digits, scheme, activation, depth=10, width=200, n=200):
    data, loss_fn = digits.data, digits.loss
    cfg = network_config(base, scheme=scheme, depth=depth, width=width, activation=activation, batchnorm=False)
    model = build_network(cfg, digits)
    return forward_statistics(model, loss_fn, data.X_train[:n], data.y_train[:n]), model


# ---- forward statistics ------------------------------------------------------------------------

def test_small_init_tanh_activations_collapse_with_depth(base, digits):
    (_, layers, _), _ = layer_stats(base, digits, "small", "tanh")
    assert len(layers) == 10
    assert layers[-1]["std"] < 0.01 * layers[0]["std"]
    stds = [layer["std"] for layer in layers]
    assert all(b < a for a, b in zip(stds, stds[1:], strict=False))  # shrinks at every layer


def test_he_init_relu_keeps_the_spread(base, digits):
    (_, layers, _), _ = layer_stats(base, digits, "he", "relu")
    first, last = layers[0]["std"], layers[-1]["std"]
    assert first / 2 < last < 2 * first
    # half of the ReLU outputs are zero, but no unit is dead on the whole batch near the input
    assert 0.35 < layers[0]["dead_activations"] < 0.65 and layers[0]["dead_units"] < 0.05


def test_zero_init_every_relu_unit_is_dead_and_gradients_vanish(base, digits):
    (loss, layers, hidden), _ = layer_stats(base, digits, "zeros", "relu", depth=3, width=16)
    assert loss == pytest.approx(np.log(10), rel=1e-5)
    for layer, a in zip(layers, hidden, strict=True):
        assert layer["std"] == 0 and layer["dead_units"] == 1.0 and layer["dead_activations"] == 1.0
        assert layer["grad_norm"] == 0 and layer["weight_grad_norm"] == 0
        assert a.shape == (200, 16)


def test_gradient_norm_reaching_the_last_layer_is_dscores_times_output_weights(base, digits):
    data, loss_fn = digits.data, digits.loss
    (_, layers, hidden), model = layer_stats(base, digits, "xavier", "tanh", depth=3, width=32, n=64)
    scores = hidden[-1] @ model.layers[-1].W.value + model.layers[-1].b.value
    _, dscores = loss_fn.loss_and_grad(scores, data.y_train[:64])
    expected = np.linalg.norm(dscores @ model.layers[-1].W.value.T)
    assert layers[-1]["grad_norm"] == pytest.approx(expected, rel=1e-4)
    assert layers[-1]["weight_grad_norm"] == pytest.approx(np.linalg.norm(model.layers[-3].W.grad), rel=1e-6)
    assert layers[-1]["weight_grad_norm"] > 0


def test_dead_and_saturated_criteria():
    a = np.array([[0.0, 0.5, -0.995, 0.999], [0.0, -0.2, -0.999, 0.3]], dtype=np.float32)
    assert dead_mask("relu", a).tolist() == [[True, False, True, False], [True, True, True, False]]
    assert dead_mask("tanh", a).tolist() == [[False, False, True, True], [False, False, True, False]]
    s = np.array([[0.005, 0.5, 0.995]], dtype=np.float32)
    assert dead_mask("sigmoid", s).tolist() == [[True, False, True]]
    assert dead_mask("identity", a) is None
    # a unit counts as dead only when it is dead on every example
    assert dead_mask("relu", a).all(axis=0).mean() == 0.5
    assert dead_mask("tanh", a).all(axis=0).mean() == 0.25


# ---- distinct units ----------------------------------------------------------------------------

def test_count_distinct_units():
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(5), rng.standard_normal(5)
    W = np.stack([u, u, v, u + 1e-9, v * 1.01], axis=1).astype(np.float32)
    assert count_distinct_units(W, np.zeros(5, np.float32)) == 3  # u (three times), v, 1.01 v
    b = np.array([0, 1, 0, 0, 0], dtype=np.float32)
    assert count_distinct_units(W, b) == 4  # the bias separates the second copy of u
    assert count_distinct_units(np.zeros((4, 7), np.float32), np.zeros(7, np.float32)) == 1
    assert count_distinct_units(rng.standard_normal((10, 30)), np.zeros(30)) == 30


def test_zero_init_units_stay_identical_while_they_learn(base, digits):
    cfg = network_config(load_config(None, ["preprocess.scale=std", "model.bias_init=0.5", "optim.lr=0.1"]),
                         scheme="zeros", depth=3, width=16, activation="relu", batchnorm=False, epochs=3)
    model, record = train_network(cfg, digits)
    assert record["status"] == "completed" and len(record["batch_losses"]) > 10
    for layer in list(model.linear_layers())[:-1]:
        W = layer.W.value
        assert np.abs(W).max() > 1e-6  # the weights moved away from zero ...
        # ... all units alike, to float32 rounding: a BLAS may compute the columns of one product with different
        # kernels (OpenBLAS's Haswell kernel on AMD EPYC does), which no training step can amplify past this
        assert np.abs(W - W[:, :1]).max() <= 1e-5 * np.abs(W).max()
    assert record["distinct_units"] == [1, 1, 1]
    he = network_config(base, scheme="he", depth=3, width=16, activation="relu", batchnorm=False, epochs=1)
    assert train_network(he, digits)[1]["distinct_units"] == [16, 16, 16]


# ---- training ----------------------------------------------------------------------------------

def test_batchnorm_rescues_small_init(base, digits):
    losses = {}
    for bn in (False, True):
        cfg = network_config(base, scheme="small", depth=5, width=48, activation="relu", batchnorm=bn, epochs=3)
        losses[bn] = [row["train_loss"] for row in train_network(cfg, digits)[1]["epochs"]]
    chance = np.log(10)
    assert min(losses[False]) > chance - 0.01  # stalls at chance level without BatchNorm
    assert losses[True][-1] < losses[True][0] - 0.8 and losses[True][-1] < 1.0


# ---- options and the command line --------------------------------------------------------------

def test_parse_schemes():
    assert parse_schemes("zeros, he") == ["zeros", "he"]
    with pytest.raises(UserInputError, match="allowed: zeros, small"):
        parse_schemes("he,glorot")
    with pytest.raises(UserInputError, match="more than once"):
        parse_schemes("he,he")


SMALL = ["--schemes", "zeros,small,he", "--depth", "3", "--width", "16", "--epochs", "2", "--examples", "100",
         "--set", "preprocess.scale=std"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_tables_figures_and_json(tmp_path):
    out = tmp_path / "a"
    result = invoke("compare-inits", *SMALL, "--jobs", "1", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    for text in ("forward pass at init", "training:", "distinct units", "dead units", "wrote", "activations.png",
                 "loss_curves.png"):
        assert text in result.stderr, text
    for name in ("activations.png", "loss_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "compare_inits.json").read_text())
    assert [(r["scheme"], r["batchnorm"]) for r in saved["training"]] == [
        ("zeros", False), ("small", False), ("he", False), ("zeros", True), ("small", True), ("he", True)]
    assert saved["forward"]["batchnorm"] is False

    # --json: one object on stdout; two worker processes give the same numbers as one job in this process
    result = invoke("compare-inits", *SMALL, "--no-batchnorm", "--jobs", "2", "--json", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["jobs"] == 2 and report["blas_threads"] == 1 and saved["jobs"] == 1
    assert set(report["files"]) == {"activations", "loss_curves", "statistics"}
    assert [r["batchnorm"] for r in report["training"]] == [False] * 3
    zeros = report["forward"]["schemes"]["zeros"]["layers"]
    assert [layer["dead_units"] for layer in zeros] == [1.0, 1.0, 1.0]
    by_scheme = {r["scheme"]: r for r in report["training"]}
    assert by_scheme["zeros"]["distinct_units"] == [1, 1, 1] and by_scheme["he"]["distinct_units"] == [16, 16, 16]
    for run, again in zip(saved["training"][:3], report["training"], strict=True):
        assert run["batch_losses"] == again["batch_losses"] and run["epochs"] == again["epochs"]
        assert run["blas_threads"] == again["blas_threads"] == 1

    # the same --out again is refused without --overwrite; bad options exit 2
    assert invoke("compare-inits", *SMALL, "--no-train", "--out", out).exit_code == 2
    assert invoke("compare-inits", *SMALL, "--no-train", "--out", out, "--overwrite").exit_code == 0
    for bad in (["--schemes", "he,glorot"], ["--depth", "0"], ["--activation", "softplus"], ["--jobs", "0"]):
        result = invoke("compare-inits", *SMALL, "--no-train", *bad, "--out", tmp_path / "c")
        assert result.exit_code == 2, bad
        assert "Traceback" not in result.output


def test_a_scheme_s_seconds_leave_out_the_process_one_time_kernel_set_up(base, digits, slow_kernel_set_up):
    """The first network a process trains used to carry the compiled kernels' one-time set-up (0.7 s; 1.5 s
    here) in its seconds, so the table made each worker's first scheme look twice as slow as the others."""
    cfg = network_config(base, scheme="he", depth=2, width=16, activation="relu", batchnorm=False, epochs=1)
    _, record = train_network(cfg, digits)
    assert slow_kernel_set_up and record["status"] == "completed"
    assert record["seconds"] < 1.0  # a one-epoch digits network: about 0.05 s
