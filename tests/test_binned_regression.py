"""Binned regression (`loss.bins`): expectation and argmax decoding, the NLL and interval coverage of the
piecewise-uniform predictive distribution (hand cases), what a run records, and runs saved before
`loss.decode` existed, which evaluate as they did (argmax)."""

import math

import numpy as np
import pytest
import yaml

from nnrun.config import LossConfig, load_config
from nnrun.errors import UserInputError
from nnrun.evaluate import evaluate_run
from nnrun.experiment import describe_choices, inactive_keys, load_run
from nnrun.metrics import binned_cdf, binned_nll, binned_quantile, central_interval, interval_coverage
from nnrun.nn.losses import (
    BinnedRegression,
    HierarchicalSoftmax,
    MulticlassSVM,
    SoftmaxCrossEntropy,
    Targets,
    fit_bounds,
)
from nnrun.predict import predict_run
from nnrun.rundir import RunDir
from nnrun.train import run_experiment

Y_TRAIN = np.arange(10, dtype=np.float64).reshape(-1, 1)  # two bins: [0, 4.5) centre 2, [4.5, 9] centre 7


def two_bins(inner=SoftmaxCrossEntropy.create, decode="auto"):
    return BinnedRegression.create(Targets(["t"], Y_TRAIN, "t"), bins=2, inner=inner, decode=decode)


# ---- hand cases -------------------------------------------------------------------------------

def test_expectation_is_the_probability_weighted_mean_of_the_bin_centres():
    rng = np.random.default_rng(0)
    y = rng.gamma(2.0, 10.0, 500).reshape(-1, 1)
    loss = BinnedRegression.create(Targets(["t"], y, "t"), bins=5, inner=SoftmaxCrossEntropy.create)
    assert loss.decode == "expectation"
    scores = rng.standard_normal((7, 5)).astype(np.float32)
    p = np.exp(scores.astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    expected = [sum(p[i, k] * loss.centres[k] for k in range(5)) for i in range(7)]
    np.testing.assert_allclose(loss.predict(scores)[:, 0], expected, rtol=1e-6)
    argmax = BinnedRegression(loss.inner, loss.edges, loss.centres, None, decode="argmax")
    np.testing.assert_array_equal(argmax.predict(scores)[:, 0], loss.centres[scores.argmax(axis=1)])
    values = loss.metrics(scores, np.asarray(expected).reshape(-1, 1))
    assert values["rmse"] == pytest.approx(0, abs=1e-5) and values["mae"] == pytest.approx(0, abs=1e-5)


def test_nll_coverage_and_intervals_on_a_hand_case():
    loss = two_bins()
    np.testing.assert_array_equal(loss.bounds, [0.0, 4.5, 9.0])
    np.testing.assert_array_equal(loss.centres, [2.0, 7.0])
    scores = np.log([[0.25, 0.75], [0.5, 0.5]])
    y = np.array([[3.0], [7.0]])
    # row 0: y = 3 in bin 0, density 0.25 / 4.5; row 1: y = 7 in bin 1, density 0.5 / 4.5
    nll = (math.log(4.5 / 0.25) + math.log(4.5 / 0.5)) / 2
    # 80 %: quantiles 0.1 and 0.9. Row 0: 0.1 / 0.25 of bin 0 = 1.8; 4.5 + (0.9 - 0.25) / 0.75 * 4.5 = 8.4.
    # Row 1: 0.1 / 0.5 * 4.5 = 0.9; 4.5 + 0.4 / 0.5 * 4.5 = 8.1.
    np.testing.assert_allclose(loss.interval(scores, 0.8), [[1.8, 8.4], [0.9, 8.1]])
    metrics = loss.metrics(scores, y, detail=True)
    assert metrics["nll"] == pytest.approx(nll, rel=1e-12)
    assert metrics["coverage_80"] == 1.0 and metrics["coverage_95"] == 1.0
    assert metrics["rmse"] == pytest.approx(math.sqrt(((5.75 - 3) ** 2 + (4.5 - 7) ** 2) / 2))
    outside = np.array([[1.0], [8.5]])  # below row 0's 1.8, above row 1's 8.1
    assert loss.metrics(scores, outside, detail=True)["coverage_80"] == 0.0
    assert "nll" not in loss.metrics(scores, y)  # epoch rows: unchanged


def test_cdf_and_quantiles_are_inverse_and_coverage_counts_the_central_interval():
    rng = np.random.default_rng(1)
    bounds = np.array([-3.0, -1.0, 0.5, 0.7, 4.0])
    p = rng.dirichlet(np.ones(4), 50)
    p[0] = [0.0, 0.5, 0.0, 0.5]  # empty bins: the CDF is flat there
    for q in (0.05, 0.1, 0.5, 0.9, 0.975):
        np.testing.assert_allclose(binned_cdf(p, bounds, binned_quantile(p, bounds, q)), q, atol=1e-12)
    y = rng.uniform(-4, 5, 50)
    F = binned_cdf(p, bounds, y)
    assert np.all(F[y < -3] == 0) and np.all(F[y > 4] == 1)
    for level in (0.5, 0.8, 0.95):
        inside = np.abs(F - 0.5) <= level / 2
        assert interval_coverage(p, bounds, y, level) == pytest.approx(inside.mean())
        lo, hi = central_interval(p, bounds, level).T
        assert np.all(lo <= hi)
    # a target beyond the bounds counts in the outer bin, with that bin's width
    p1 = np.array([[0.2, 0.3, 0.1, 0.4]])
    assert binned_nll(p1, bounds, np.array([9.0])) == pytest.approx(-math.log(0.4 / 3.3))
    assert binned_nll(p1, bounds, np.array([-9.0])) == pytest.approx(-math.log(0.2 / 2.0))
    assert np.isfinite(binned_nll(np.array([[1.0, 0.0, 0.0, 0.0]]), bounds, np.array([3.0])))


def test_a_top_bin_of_no_width_gets_the_mean_width_of_the_bins_below():
    y = np.array([0.0, 1, 2, 3, 8, 8, 8, 8, 8, 8])
    edges = np.array([2.5, 8.0])
    np.testing.assert_array_equal(fit_bounds(y, edges), [0.0, 2.5, 8.0, 12.0])
    np.testing.assert_array_equal(fit_bounds(y[:5], np.array([2.5])), [0.0, 2.5, 8.0])


def test_auto_decodes_by_expectation_where_there_are_probabilities_and_argmax_elsewhere():
    assert two_bins().decode == "expectation"
    assert two_bins(lambda t: HierarchicalSoftmax.balanced(len(t.names))).decode == "expectation"
    svm = two_bins(MulticlassSVM.create)
    assert svm.decode == "argmax" and not svm.has_intervals
    assert "nll" not in svm.metrics(np.zeros((2, 2)), np.ones((2, 1)), detail=True)
    assert two_bins(decode="argmax").decode == "argmax"
    with pytest.raises(ValueError, match="needs bin probabilities"):
        two_bins(MulticlassSVM.create, decode="expectation")
    with pytest.raises(UserInputError, match="loss.decode=expectation .* svm does not give"):
        load_config(None, ["data.dataset=diabetes", "loss.name=svm", "loss.bins=4", "loss.decode=expectation"])
    assert LossConfig().decode == "auto"


def test_the_config_says_what_decode_does():
    binned = load_config(None, ["data.dataset=diabetes", "loss.bins=4"])
    assert "decoded by expectation" in describe_choices(binned)["loss"]
    assert "loss.decode" not in inactive_keys(binned)
    svm = load_config(None, ["data.dataset=diabetes", "loss.name=svm", "loss.bins=4"])
    assert "decoded by argmax" in describe_choices(svm)["loss"]
    assert inactive_keys(load_config(None, []))["loss.decode"] == "loss.bins is null"


# ---- runs -------------------------------------------------------------------------------------

def train(folder, *sets):
    cfg = load_config(None, ["data.dataset=diabetes", "model.hidden=[]", "loss.bins=5", "optim.name=adam",
                             "optim.lr=0.1", "train.epochs=5", "train.batch_size=32", *sets])
    return run_experiment(cfg, RunDir.create(folder))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("binned")
    return {decode: (root / decode, train(root / decode, f"loss.decode={decode}")) for decode in ("auto", "argmax")}


def test_a_run_records_its_decoding_and_reports_nll_and_coverage(runs):
    path, summary = runs["auto"]
    assert summary["decode"] == "expectation"
    with np.load(path / "targets.npz") as z:
        assert str(z["bin_decode"]) == "expectation" and z["bin_bounds"].shape == (6,)
    for split in ("train", "val", "test"):
        assert np.isfinite(summary[f"{split}_nll"]) and 0 <= summary[f"{split}_coverage_80"] <= 1
        assert summary[f"{split}_coverage_80"] <= summary[f"{split}_coverage_95"]
    result = evaluate_run(path, split="test")
    assert result["decode"] == "expectation"
    for key in ("rmse", "nll", "coverage_80", "coverage_95"):
        assert result["metrics"][key] == pytest.approx(result["summary_metrics"][key], rel=1e-9)
    run = load_run(path)
    X, y = run.load_split("test")
    np.testing.assert_allclose(run.predict(X)[:, 0], run.predict_proba(X) @ run.loss.centres, rtol=1e-5)
    assert runs["argmax"][1]["decode"] == "argmax"


def test_predict_gives_the_decoded_value_and_the_central_intervals(runs, tmp_path):
    path, _ = runs["auto"]
    run = load_run(path)
    X, y = run.load_split("test")
    data = tmp_path / "rows.npz"
    np.savez(data, X=X[:6], targets=y[:6])
    result = predict_run(path, [data], out=tmp_path / "p.npz")
    columns = result["columns"]
    assert columns[-5:] == ["prediction", "lower_80", "upper_80", "lower_95", "upper_95"]
    rows = np.array([line[-5:] for line in result["rows"]], dtype=np.float64)
    scores = run.scores(X[:6])
    np.testing.assert_allclose(rows[:, 0], run.loss.predict(scores)[:, 0])
    np.testing.assert_allclose(rows[:, 1:3], run.loss.interval(scores, 0.8))
    assert np.all(rows[:, 3] <= rows[:, 1]) and np.all(rows[:, 2] <= rows[:, 4])
    with np.load(tmp_path / "p.npz") as z:
        np.testing.assert_allclose(z["interval_95"], rows[:, 3:5])


def test_a_run_saved_before_decode_existed_evaluates_as_it_did(runs, tmp_path):
    """An older nnrun decoded by argmax and wrote no bin_decode, bin_bounds or loss.decode: made so here from an
    argmax run, it must give its summary's metrics again, and no NLL or intervals (no bounds recorded)."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(runs["argmax"][0], old)
    run = RunDir(old)
    targets = run.read_arrays("targets.npz")
    run.write_targets({k: v for k, v in targets.items() if k not in ("bin_decode", "bin_bounds")})
    config = yaml.safe_load((old / "config.yaml").read_text())
    del config["loss"]["decode"]
    (old / "config.yaml").write_text(yaml.safe_dump(config))
    summary = run.read_summary()
    run.write_summary({k: v for k, v in summary.items() if k != "decode" and "nll" not in k and "coverage" not in k})
    loaded = load_run(old)
    assert loaded.cfg.loss.decode == "auto" and loaded.loss.decode == "argmax" and not loaded.loss.has_intervals
    result = evaluate_run(old, split="test")
    assert set(result["metrics"]) == {"loss", "accuracy", "mae", "rmse", "rmse_baseline"}
    for key, value in result["metrics"].items():
        assert value == pytest.approx(result["summary_metrics"][key], rel=1e-9), key
    X, _ = loaded.load_split("test")
    np.testing.assert_array_equal(loaded.predict(X)[:, 0], loaded.loss.centres[loaded.predict_proba(X).argmax(1)])
