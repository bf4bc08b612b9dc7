"""The study's derived metrics of mechanisms: gradient norms and dead units at initialization, accuracy on rows
outside every split (the leak's fresh-data control), and Monte Carlo dropout against the analytic prediction."""

import numpy as np
import pytest

from nnrun.compare_inits import build_network, forward_statistics
from nnrun.config import ModelConfig, load_config
from nnrun.experiment import build_model, load_run, prepare_data
from nnrun.nn.layers import BatchNorm
from nnrun.rng import stream
from nnrun.study.metrics import (
    FRESH_METRICS,
    MC_METRICS,
    Measurer,
    check_metric,
    fresh_rows,
    fresh_statistics,
    init_statistics,
    mc_dropout_average,
    mc_dropout_statistics,
    parse_metric,
    probe,
)

from .helpers import train_run


def test_new_metric_names_parse_and_the_trained_ones_need_class_targets():
    assert parse_metric("init_grad_norm@2").layer == 2 and parse_metric("init_dead_units").kind == "derived"
    for name in (*FRESH_METRICS, *MC_METRICS):
        assert parse_metric(name).kind == "derived"
    regression = probe(load_config(None, ["data.dataset=diabetes", "loss.name=l2"]))
    assert "class targets" in check_metric("fresh_accuracy", regression, [8])
    assert "class targets" in check_metric("mc_dropout_gap", regression, [8])
    assert check_metric("test_optimism", probe(load_config(None)), [8]) is None


def test_init_gradient_norms_are_those_of_a_backward_pass_and_small_weights_shrink_them():
    cfg = load_config(None, ["preprocess.scale=std", "model.hidden=[32, 16]"])
    prepared = prepare_data(cfg)
    values = init_statistics(cfg, prepared, examples=200)
    # the same examples through compare-inits' forward and backward pass (no dropout: identical passes)
    idx = np.sort(stream(cfg.seed, "study_init").permutation(len(prepared.data.X_train))[:200])
    _, layers, _ = forward_statistics(build_network(cfg, prepared), prepared.loss, prepared.data.X_train[idx],
                                      prepared.data.y_train[idx])
    assert values["init_grad_norm"] == pytest.approx([layer["weight_grad_norm"] for layer in layers], rel=1e-5)
    assert values["init_dead_units"] == pytest.approx([layer["dead_units"] for layer in layers])

    deep = ["preprocess.scale=std", "model.hidden=[32, 32, 32, 32]"]
    he = init_statistics(load_config(None, deep), prepared)["init_grad_norm"]
    small_cfg = load_config(None, [*deep, "model.init=small"])
    small = init_statistics(small_cfg, prepare_data(small_cfg))["init_grad_norm"]
    # the first layer's gradient is a product of the small weights above it: orders of magnitude below He's
    assert small[0] < 1e-3 * he[0]


@pytest.mark.parametrize("hidden, bias, dead", [("[16, 8]", -100.0, [1.0, 1.0]), ("[16]", 100.0, [0.0])])
def test_init_dead_units_count_units_dead_on_every_example(hidden, bias, dead):
    cfg = load_config(None, [f"model.hidden={hidden}", f"model.bias_init={bias}"])
    assert init_statistics(cfg, prepare_data(cfg))["init_dead_units"] == dead


def test_a_fresh_row_is_in_no_split_and_test_optimism_is_test_minus_fresh(tmp_path):
    run = load_run(train_run(tmp_path / "run", "model.hidden=[16]", "train.epochs=2", "data.train_size=600"))
    whole = Measurer()._whole_data(run.cfg)
    rows = fresh_rows(run, whole)
    pool_rows = whole.split.indices["train"][rows]
    used = np.concatenate([run.split.indices[s] for s in ("train", "val", "test")])
    # digits: 1,797 images, 359 test and 144 val carved first; 600 of the other 1,294 train, 694 fresh
    assert len(rows) == 694 and not np.isin(pool_rows, used).any()
    stats = fresh_statistics(run, whole)
    labels = run.predict(whole.X_train[rows])
    assert stats["fresh_accuracy"] == pytest.approx(np.mean(labels == whole.y_train[rows]))
    assert stats["test_optimism"] == pytest.approx(run.summary["test_accuracy"] - stats["fresh_accuracy"])

    everything = load_run(train_run(tmp_path / "all", "model.hidden=[16]", "train.epochs=1"))
    assert fresh_statistics(everything, Measurer()._whole_data(everything.cfg)) == dict.fromkeys(FRESH_METRICS)


@pytest.mark.parametrize("mode", ["inverted", "vanilla"])
def test_the_mean_of_sampled_dropout_scores_is_the_analytic_prediction(mode):
    model = build_model(ModelConfig(hidden=[64], batchnorm=True, dropout=0.5, dropout_mode=mode), 8, 3,
                        np.random.default_rng(0))
    bn = next(layer for layer in model.layers if isinstance(layer, BatchNorm))
    bn.running_mean[:] = 0.5  # running statistics unlike the batch's: BatchNorm must stay in evaluation mode
    bn.running_var[:] = 4.0
    X = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    analytic = model.scores(X, 50)
    one = mc_dropout_average(model, X, 1, np.random.default_rng(2))
    assert not np.allclose(one, analytic, atol=1e-3)  # a single pass samples a mask
    # after the dropout layer the network is linear, so the mean of the sampled scores is the analytic score
    many = mc_dropout_average(model, X, 4000, np.random.default_rng(2))
    assert np.abs(many - analytic).max() < 0.05 * np.abs(analytic).max()


def test_each_sampled_pass_masks_every_dropout_layer_and_keeps_batchnorm_in_evaluation_mode():
    model = build_model(ModelConfig(hidden=[32, 16], batchnorm=True, dropout=0.5), 8, 3, np.random.default_rng(0))
    for bn in (layer for layer in model.layers if isinstance(layer, BatchNorm)):
        bn.running_mean[:], bn.running_var[:] = 0.5, 4.0
    X = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    sampled = mc_dropout_average(model, X, 3, np.random.default_rng(2))
    # the reference: every layer in turn, the Dropout layers in training mode, from the same generator
    model.set_dropout_rng(np.random.default_rng(2))
    passes = []
    for _ in range(3):
        x = X
        for layer in model.layers:
            x = layer.forward(x, train=type(layer).__name__ == "Dropout")
        passes.append(x.astype(np.float64))
    assert np.allclose(sampled, np.mean(passes, axis=0), rtol=1e-5, atol=1e-6)


def test_mc_dropout_statistics_of_a_trained_run(tmp_path):
    run = load_run(train_run(tmp_path / "run", "model.hidden=[64]", "train.epochs=3", "model.dropout=0.5"))
    X, y = run.load_split("test")
    stats = mc_dropout_statistics(run, run.transform(X), y, samples=50)
    assert 0.9 <= stats["mc_dropout_agreement"] <= 1.0 and abs(stats["mc_dropout_gap"]) < 0.05
    plain = load_run(train_run(tmp_path / "plain", "model.hidden=[16]", "train.epochs=1"))
    assert mc_dropout_statistics(plain, plain.transform(X), y) == dict.fromkeys(MC_METRICS)
