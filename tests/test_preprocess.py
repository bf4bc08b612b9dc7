"""Preprocessing: centring and scaling modes, PCA and whitening (against scikit-learn), no leaks,
round trips, bad input, and the `nnrun preprocess` command."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.config import load_config, validate_config
from nnrun.errors import UserInputError
from nnrun.experiment import load_data, preprocess_settings
from nnrun.preprocess import (
    Preprocessor,
    PreprocessSettings,
    fit_preprocessor,
    load_preprocessor,
    scatter_matrix,
    symmetric_eigh,
)
from nnrun.preprocess_report import REPORT_FILES
from nnrun.rundir import RunDir

runner = CliRunner()


def correlated(n=800, d=12, seed=0, offset=5.0):
    """Gaussian rows with a random full-rank covariance and a nonzero mean: float32 (n, d)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d)) * np.linspace(3.0, 0.3, d)[:, None]
    return (rng.standard_normal((n, d)) @ A + offset * rng.standard_normal(d)).astype(np.float32)


def cov0(Z):
    """Covariance with ddof 0, in float64."""
    Z = np.asarray(Z, dtype=np.float64)
    Zc = Z - Z.mean(axis=0)
    return Zc.T @ Zc / len(Z)


def digits_train():
    data = load_data(validate_config({}))
    return data.X_train, data.image_shape


# ---- centring and scaling against independent formulas ------------------------------------------

def image_data(n=300, seed=1):
    """Rows of 3x4x4 'images', channel-major, each channel with its own offset and spread."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3, 4, 4)) * [[[2.0]], [[0.5]], [[1.0]]] + [[[10.0]], [[-3.0]], [[0.5]]]
    return X.reshape(n, 48).astype(np.float32), (3, 4, 4)


@pytest.mark.parametrize("center", ["none", "per_feature", "global", "per_channel"])
def test_centring_modes_match_formulas(center):
    X, shape = image_data()
    X64 = X.astype(np.float64)
    expected = {
        "none": X64,
        "per_feature": X64 - X64.mean(axis=0),
        "global": X64 - X64.mean(),
        "per_channel": (X64.reshape(len(X), 3, 16) - X64.reshape(len(X), 3, 16).mean(axis=(0, 2))[:, None])
        .reshape(len(X), 48),
    }[center]
    pre = fit_preprocessor(PreprocessSettings(center=center), X, shape)
    out = pre.transform(X)
    assert out.dtype == np.float32 and out.shape == X.shape
    np.testing.assert_allclose(out, expected, atol=2e-5)
    if center == "per_channel":  # each channel of the output has mean 0, but not each feature
        means = out.reshape(len(X), 3, 16).mean(axis=(0, 2))
        np.testing.assert_allclose(means, 0, atol=1e-5)


def test_scaling_std_and_minmax_match_formulas():
    X = correlated(d=6)
    X[:, 2] = 7.0  # a constant feature: left unscaled rather than divided by zero
    X64 = X.astype(np.float64)
    std = fit_preprocessor(PreprocessSettings(center="per_feature", scale="std"), X).transform(X)
    sd = X64.std(axis=0)
    expected = (X64 - X64.mean(axis=0)) / np.where(sd > 0, sd, 1)
    np.testing.assert_allclose(std, expected, atol=1e-5)
    np.testing.assert_allclose(np.delete(std.std(axis=0), 2), 1, atol=1e-5)
    assert np.all(std[:, 2] == 0)
    # std without centring divides the raw feature
    raw = fit_preprocessor(PreprocessSettings(center="none", scale="std"), X).transform(X)
    np.testing.assert_allclose(raw, X64 / np.where(sd > 0, sd, 1), rtol=1e-5)

    for center in ("per_feature", "none", "global"):
        mm = fit_preprocessor(PreprocessSettings(center=center, scale="minmax"), X).transform(X)
        lo, hi = X64.min(axis=0), X64.max(axis=0)
        span = np.where(hi > lo, hi - lo, 2.0)
        np.testing.assert_allclose(mm, 2 * (X64 - lo) / span - 1 + (hi == lo), atol=1e-5)
        np.testing.assert_allclose(np.delete(mm.min(axis=0), 2), -1, atol=1e-6)
        np.testing.assert_allclose(np.delete(mm.max(axis=0), 2), 1, atol=1e-6)
        assert np.all(mm[:, 2] == 0)


def test_transform_copy_semantics():
    X = correlated(d=5)
    before = X.copy()
    pre = fit_preprocessor(PreprocessSettings(scale="std"), X)
    assert np.array_equal(X, before)  # fit never writes to X
    out = pre.transform(X, copy=True)
    assert np.array_equal(X, before) and not np.shares_memory(out, X)
    out = pre.transform(X, copy=False)
    assert np.shares_memory(out, X)  # in place
    frozen = before.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(pre.transform(frozen, copy=False), pre.transform(before))
    whiten_all = fit_preprocessor(PreprocessSettings(whiten=True), before)
    Y = before.copy()
    Z = whiten_all.transform(Y, copy=False)
    assert np.shares_memory(Z, Y)
    np.testing.assert_allclose(Z, whiten_all.transform(before), atol=1e-5)
    reduced = fit_preprocessor(PreprocessSettings(pca=2), before)
    Y = before.copy()
    assert reduced.transform(Y, copy=False).shape == (len(Y), 2) and np.array_equal(Y, before)


# ---- PCA and whitening ---------------------------------------------------------------------------

def test_whitened_covariance_is_identity_and_rotation_is_diagonal():
    X = correlated(n=2000, d=16)
    white = fit_preprocessor(PreprocessSettings(pca=10, whiten=True, eps=0.0), X)
    Z = white.transform(X)
    assert Z.shape == (2000, 10)
    np.testing.assert_allclose(cov0(Z), np.eye(10), atol=1e-4)
    rot = fit_preprocessor(PreprocessSettings(pca=16), X)
    C = cov0(rot.transform(X))
    np.testing.assert_allclose(C, np.diag(np.diag(C)), atol=1e-3 * C.max())
    np.testing.assert_allclose(np.diag(C), rot.eigenvalues, rtol=1e-4, atol=1e-6 * C.max())
    assert np.all(np.diff(rot.eigenvalues) <= 0)  # descending
    # eps shrinks each component to variance S / (S + eps)
    eps = 0.5
    shrunk = fit_preprocessor(PreprocessSettings(pca=10, whiten=True, eps=eps), X)
    S = shrunk.eigenvalues[:10]
    np.testing.assert_allclose(np.diag(cov0(shrunk.transform(X))), S / (S + eps), rtol=1e-4)


def test_whiten_without_pca_keeps_and_whitens_all_components():
    X = correlated(n=1500, d=8)
    pre = fit_preprocessor(PreprocessSettings(whiten=True, pca=None, eps=0.0), X)
    Z = pre.transform(X)
    assert Z.shape == X.shape and pre.n_components == 8
    np.testing.assert_allclose(cov0(Z), np.eye(8), atol=1e-4)


@pytest.mark.parametrize("scale", ["none", "std"])
def test_zca_is_pca_whitening_rotated_back_and_its_covariance_is_the_identity(scale):
    X = correlated(n=2000, d=16)
    zca = fit_preprocessor(PreprocessSettings(scale=scale, whiten="zca", eps=0.0), X)
    Z = zca.transform(X)
    assert Z.shape == X.shape and zca.n_output == 16
    np.testing.assert_allclose(cov0(Z), np.eye(16), atol=1e-4)
    pca = fit_preprocessor(PreprocessSettings(scale=scale, whiten=True, eps=0.0), X)
    U = pca.components.astype(np.float64)
    np.testing.assert_allclose(Z, pca.transform(X).astype(np.float64) @ U.T, atol=1e-4)
    # the whitening matrix is symmetric: W = U diag(1 / sqrt(S)) U.T, applied to the centred (scaled) rows
    W = np.linalg.lstsq((X - X.mean(axis=0, dtype=np.float64)) / (X.std(axis=0) if scale == "std" else 1),
                        Z.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(W, W.T, atol=1e-4 * np.abs(W).max())
    # with pca: k, only the top k whitened directions come back: the covariance is the projection U_k U_k.T
    low = fit_preprocessor(PreprocessSettings(scale=scale, pca=5, whiten="zca", eps=0.0), X)
    np.testing.assert_allclose(cov0(low.transform(X)), U[:, :5] @ U[:, :5].T, atol=1e-4)
    assert low.transform(X).shape == X.shape


def test_zca_with_fewer_rows_than_features_divides_null_directions_by_sqrt_eps():
    """N < D: the covariance has rank N - 1, and its D - N + 1 null directions must get eigenvalue 0, so
    that whitening scales them by 1 / sqrt(eps) as documented. Float32 products left noise eigenvalues
    there (2.6e-3 on these 300 pixel-scale rows, far above eps), and held-out rows came out 62 % off
    a float64 fit; the fit now multiplies in float64 when N < D."""
    rng = np.random.default_rng(0)
    d, eps = 1024, 1e-5
    basis = rng.standard_normal((40, d)) * 30

    def images(n):  # integer pixels in [0, 255] with strong correlations, like raw images
        mixed = 128 + rng.standard_normal((n, 40)) @ basis / 6 + rng.standard_normal((n, d)) * 3
        return np.clip(np.rint(mixed), 0, 255).astype(np.float32)

    X, held_out = images(300), images(50)
    zca = fit_preprocessor(PreprocessSettings(whiten="zca", eps=eps), X)
    assert np.all(zca.eigenvalues[len(X):] == 0)
    X64 = X.astype(np.float64)
    mean = X64.mean(axis=0)
    w, U = np.linalg.eigh(cov0(X64))
    w[w < d * np.finfo(np.float64).eps * w.max()] = 0.0
    expected = (held_out - mean) @ (U / np.sqrt(w + eps)) @ U.T
    got = zca.transform(held_out).astype(np.float64)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-4


def test_zca_rounds_trip_through_preprocess_npz_and_bool_files_still_load(tmp_path):
    X, shape = image_data()
    zca = fit_preprocessor(PreprocessSettings(whiten="zca", eps=0.01), X, shape)
    loaded = load_preprocessor(zca.save(tmp_path / "zca.npz"))
    assert loaded.settings.whiten == "zca" and np.array_equal(loaded.transform(X), zca.transform(X))
    assert zca.pixel_affine() is None
    white = fit_preprocessor(PreprocessSettings(whiten=True, eps=0.01), X, shape)
    with np.load(white.save(tmp_path / "white.npz")) as z:
        assert z["whiten"].dtype == bool  # what earlier versions wrote, and still write for true/false
    assert load_preprocessor(tmp_path / "white.npz").settings.whiten is True
    assert load_config(None, ["preprocess.whiten=zca"]).preprocess.whiten == "zca"
    assert load_config(None, ["preprocess.whiten=true"]).preprocess.whiten is True
    with pytest.raises(UserInputError, match=r"preprocess\.whiten"):
        load_config(None, ["preprocess.whiten=pca"])


@pytest.mark.parametrize("scale", ["none", "std"])
def test_pca_whitening_matches_sklearn(scale):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    X, shape = digits_train()
    n, k = len(X), 20
    X64 = X.astype(np.float64)
    ref_input = StandardScaler().fit_transform(X64) if scale == "std" else X64
    sk = PCA(n_components=k, whiten=True, svd_solver="full").fit(ref_input)
    pre = fit_preprocessor(PreprocessSettings(scale=scale, pca=k, whiten=True, eps=0.0), X, shape)
    # ddof: our eigenvalues are sklearn's explained variance * (N - 1) / N
    np.testing.assert_allclose(pre.eigenvalues, sk.explained_variance_ * (n - 1) / n, rtol=1e-4)
    signs = np.sign(np.sum(pre.components * sk.components_.T, axis=0))
    assert np.all(signs != 0)
    np.testing.assert_allclose(pre.components * signs, sk.components_.T, atol=2e-4)
    ours = pre.transform(X)
    theirs = sk.transform(ref_input) * np.sqrt(n / (n - 1)) * signs
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    np.testing.assert_allclose(pre.explained_variance_ratio(), sk.explained_variance_ratio_, rtol=1e-4)


def test_scatter_blocks_and_subset_eigh_agree_with_float64():
    X = correlated(n=1000, d=40, offset=50.0)
    mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    S = scatter_matrix(X, mean, chunk_rows=128)  # eight blocks
    Xc = X.astype(np.float64) - mean
    exact = Xc.T @ Xc
    upper = np.triu_indices(40)
    np.testing.assert_allclose(S[upper], exact[upper], rtol=1e-5, atol=1e-5 * np.abs(exact).max())
    C = exact / 1000
    w_sub, U_sub = symmetric_eigh(np.asfortranarray(np.triu(C)), 5)  # subset path (5 <= 40 // 4)
    w_all, U_all = symmetric_eigh(np.asfortranarray(np.triu(C)), 40)
    ref = np.linalg.eigvalsh(C)[::-1]
    np.testing.assert_allclose(w_all, ref, rtol=1e-9)
    np.testing.assert_allclose(w_sub, ref[:5], rtol=1e-9)
    np.testing.assert_allclose(U_sub, U_all[:, :5], atol=1e-8)  # same sign convention
    assert np.all(U_all[np.argmax(np.abs(U_all), axis=0), np.arange(40)] > 0)


# ---- no leaks ------------------------------------------------------------------------------------

def test_val_and_test_data_do_not_change_fitted_statistics(tmp_path, monkeypatch):
    import nnrun.experiment as experiment
    import nnrun.train as train

    cfg = validate_config({"preprocess": {"scale": "std", "pca": 24, "whiten": True},
                           "model": {"hidden": [16]}, "train": {"epochs": 1, "batch_size": 256}})
    real_load = experiment.load_dataset
    seen = {}

    def perturbed(name, options, seed):
        data = real_load(name, options, seed)
        data.X_val = data.X_val * 3.0 + 100.0
        data.X_test = np.random.default_rng(5).uniform(-50, 50, data.X_test.shape).astype(np.float32)
        return data

    def remember(name, options, seed):
        data = real_load(name, options, seed)
        seen["X_train"] = data.X_train.copy()
        return data

    monkeypatch.setattr(experiment, "load_dataset", remember)
    train.run_experiment(cfg, RunDir.create(tmp_path / "plain"))
    monkeypatch.setattr(experiment, "load_dataset", perturbed)
    train.run_experiment(cfg, RunDir.create(tmp_path / "perturbed"))
    with np.load(tmp_path / "plain" / "preprocess.npz") as a, np.load(tmp_path / "perturbed" / "preprocess.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key
        # the statistics are those of the training split alone
        np.testing.assert_allclose(a["mean"], seen["X_train"].mean(axis=0), atol=1e-4)
        np.testing.assert_allclose(a["std"], seen["X_train"].std(axis=0), atol=1e-4)
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("plain", "perturbed")]
    assert summaries[0]["val_loss"] != summaries[1]["val_loss"]  # the perturbation did reach val


def test_the_deliberate_leak_needs_its_flag_and_fits_on_every_split(tmp_path):
    from nnrun.experiment import prepare_data

    with pytest.raises(UserInputError, match="preprocess.allow_leak: true") as e:
        load_config(None, ["preprocess.fit_on=all"])
    assert "leaks" in str(e.value)
    result = runner.invoke(app, ["train", "configs/quickstart.yaml", "--set", "preprocess.fit_on=all",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "allow_leak" in result.output and not (tmp_path / "run").exists()
    honest = load_config(None, ["preprocess.scale=std"])
    leaked = load_config(None, ["preprocess.scale=std", "preprocess.fit_on=all", "preprocess.allow_leak=true"])
    assert honest.preprocess.fit_on == "train" and not honest.preprocess.allow_leak
    raw = load_data(honest)
    every = np.concatenate([raw.X_train, raw.X_val, raw.X_test])
    np.testing.assert_allclose(prepare_data(leaked).preprocessor.mean, every.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(prepare_data(leaked).preprocessor.std, every.std(axis=0), atol=1e-4)
    np.testing.assert_allclose(prepare_data(honest).preprocessor.mean, raw.X_train.mean(axis=0), atol=1e-4)


# ---- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [
    {"center": "none"}, {"center": "global"}, {"center": "per_channel"}, {"scale": "std"},
    {"center": "none", "scale": "minmax"}, {"pca": 48}, {"pca": 48, "whiten": True},
    {"scale": "std", "whiten": True, "eps": 1e-3}, {"scale": "minmax", "pca": 48, "whiten": True},
    {"whiten": "zca", "eps": 1e-3}, {"scale": "std", "pca": 48, "whiten": "zca"},
])
def test_inverse_transform_round_trip_and_save_load(settings, tmp_path):
    X, shape = image_data()
    pre = fit_preprocessor(PreprocessSettings(**settings), X, shape)
    back = pre.inverse_transform(pre.transform(X))
    np.testing.assert_allclose(back, X, atol=1e-4 * np.abs(X).max())
    path = pre.save(tmp_path / "preprocess.npz")
    loaded = load_preprocessor(path)
    assert loaded.settings == pre.settings and loaded.image_shape == shape
    for key, value in pre.statistics().items():
        assert np.array_equal(loaded.statistics()[key], value), key
    assert np.array_equal(loaded.transform(X), pre.transform(X))
    assert np.array_equal(loaded.inverse_transform(pre.transform(X)), back)


def test_reduction_inverse_is_the_projection():
    X = correlated(n=500, d=10)
    pre = fit_preprocessor(PreprocessSettings(pca=4, whiten=True), X)
    back = pre.inverse_transform(pre.transform(X)).astype(np.float64)
    U = pre.components[:, :4].astype(np.float64)
    mean = X.mean(axis=0, dtype=np.float64)
    np.testing.assert_allclose(back, (X - mean) @ U @ U.T + mean, atol=1e-3)
    rotated_back = pre.inverse_transform(pre.transform(X), unwhiten=False)
    np.testing.assert_allclose(rotated_back, pre.transform(X) @ U.T, atol=1e-4)


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "other.npz"
    np.savez(bad, weights=np.zeros(3))
    with pytest.raises(UserInputError, match="not a preprocess.npz"):
        load_preprocessor(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserInputError, match="cannot read"):
        load_preprocessor(tmp_path / "junk.npz")


@pytest.mark.parametrize("name", ["header_bomb", "zip_bomb", "many_members", "truncated"])
def test_load_reads_a_scripts_own_file_through_the_data_files_checks(name, tmp_path, monkeypatch):
    """Preprocessor.load (a script's own preprocess.npz, not a run directory's) refuses header bombs, zip bombs
    and extra members before allocating what they claim, naming the file (a 36 TiB header was a MemoryError)."""
    from nnrun.datasets import safe
    from tests import hostile_cases

    monkeypatch.setattr(safe, "MAX_BOMB_FREE_BYTES", 1 << 20)  # a 4 MiB bomb stands for a 6 GB one
    X, shape = image_data()
    path = fit_preprocessor(PreprocessSettings(pca=8, whiten=True), X, shape).save(tmp_path / "preprocess.npz")
    build, expected = hostile_cases.RUN_NPZ_CASES[name]
    build(path)
    for load in (load_preprocessor, Preprocessor.load):
        with pytest.raises(UserInputError) as caught:
            load(path)
        assert str(path) in str(caught.value) and expected in str(caught.value), caught.value


# ---- bad input -----------------------------------------------------------------------------------

def test_bad_preprocessing_input_names_the_key():
    X = correlated(d=6)
    with pytest.raises(UserInputError, match=r"preprocess\.pca.*allowed: 1\.\.6"):
        fit_preprocessor(PreprocessSettings(pca=7), X)
    with pytest.raises(UserInputError, match=r"preprocess\.center: per_channel.*allowed here: none, per_feature"):
        fit_preprocessor(PreprocessSettings(center="per_channel"), X, None)
    with pytest.raises(UserInputError, match=r"preprocess\.eps"):
        load_config(None, ["preprocess.eps=-1"])
    with pytest.raises(UserInputError, match=r"preprocess\.center must be per_feature"):
        load_config(None, ["preprocess.center=global", "preprocess.whiten=true"])
    with pytest.raises(UserInputError, match=r"preprocess\.pca"):
        load_config(None, ["preprocess.pca=0"])
    with pytest.raises(UserInputError, match=r"preprocess\.scale.*'none', 'std', 'global' or 'minmax'"):
        load_config(None, ["preprocess.scale=range"])
    X[:, 0] = 1.0  # rank 5: whitening 6 components with eps = 0 would divide by zero
    with pytest.raises(UserInputError, match=r"preprocess\.eps.*only 5 of the 6"):
        fit_preprocessor(PreprocessSettings(whiten=True, eps=0.0), X)


# ---- the command ---------------------------------------------------------------------------------

def test_cli_preprocess_writes_figures_and_prints_paths(tmp_path):
    out = tmp_path / "pp"
    result = runner.invoke(app, ["preprocess", "--whiten", "--pca", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in REPORT_FILES.values():
        path = out / name
        assert path.is_file() and path.stat().st_size > 0
        assert str(path) in result.output
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "64" in result.output and "16" in result.output and "variance kept" in result.output
    loaded = load_preprocessor(out / "preprocess.npz")
    assert loaded.settings.pca == 16 and loaded.settings.whiten
    zca = runner.invoke(app, ["preprocess", "--zca", "--eps", "0.1", "--out", str(tmp_path / "zca")])
    assert zca.exit_code == 0, zca.output
    assert load_preprocessor(tmp_path / "zca" / "preprocess.npz").settings.whiten == "zca"
    both = runner.invoke(app, ["preprocess", "--zca", "--whiten", "--out", str(tmp_path / "both")])
    assert both.exit_code == 2 and "--zca" in both.output
    # a second run does not overwrite silently
    again = runner.invoke(app, ["preprocess", "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_cli_preprocess_json(tmp_path):
    out = tmp_path / "pp"
    result = runner.invoke(app, ["preprocess", "--out", str(out), "--json", "--set", "preprocess.scale=std"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["input_shape"][1] == 64 and report["output_shape"] == report["input_shape"]
    assert report["scale"] == "std" and report["pca"] is None
    assert set(report["files"]) == set(REPORT_FILES)
    values = [report["explained_variance"][k] for k in ("10", "50")]
    assert 0 < values[0] < values[1] <= 1
    assert report["figure_components"] == 16  # 144 capped at D // 4 for 8x8 digits


@pytest.mark.parametrize("args, key", [
    (["--pca", "65"], "preprocess.pca"),
    (["--eps", "-1"], "preprocess.eps"),
    (["--set", "preprocess.center=global", "--whiten"], "preprocess.center"),
])
def test_cli_preprocess_bad_input_exits_2(tmp_path, args, key):
    result = runner.invoke(app, ["preprocess", "--out", str(tmp_path / "pp"), *args])
    assert result.exit_code == 2, result.output
    assert key in result.output and "Traceback" not in result.output


def test_report_tells_its_progress_through_every_slow_step(tmp_path):
    from nnrun.preprocess_report import preprocess_report

    heard = []
    preprocess_report(validate_config({"preprocess": {"pca": 8}}), out=tmp_path / "pp",
                      progress=lambda stage, done, total: heard.append((stage, done, total)))
    stages = list(dict.fromkeys(stage for stage, _, _ in heard))
    assert stages[0].startswith("loading digits") and stages[-1] == "figures"
    covariance = [(done, total) for stage, done, total in heard if stage.startswith("covariance")]
    n = len(digits_train()[0])
    assert covariance and covariance[-1] == (n, n)                 # rows of the covariance, block by block
    eig = [(done, total) for stage, done, total in heard if stage.startswith("eigendecomposition (64 x 64)")]
    assert eig == [(0, None), (1, 1)]                                # before and after
    # figures: eigenvectors, reconstructions, ZCA, explained variance, toy cloud
    assert [(done, total) for stage, done, total in heard if stage == "figures"][-1] == (5, 5)


def test_eigenvector_grid_labels_each_tile_and_flags_zero_variance_directions():
    from nnrun.plots import eigenvector_figure

    X, shape = digits_train()
    pre = Preprocessor(PreprocessSettings(), shape).fit(X, spectrum=True)
    fig = eigenvector_figure(pre.components, shape, 144, pre.eigenvalues)
    texts = fig.axes[0].texts
    assert len(texts) == 64                                          # one label per component of the 8x8 digits
    assert texts[0].get_text() == f"1: {pre.eigenvalues[0]:.3g}"
    zero = int(np.count_nonzero(pre.eigenvalues <= 0))
    assert zero > 0                                                  # digits' border pixels never vary
    flagged = [t.get_text() for t in texts if t.get_color() == "tab:red"]
    assert flagged == [f"{i + 1}: 0" for i in range(64 - zero, 64)]
    assert len(fig.axes[0].patches) == zero and f"{zero} zero-variance" in fig.axes[0].get_title()


@pytest.mark.parametrize("marks", [[16], [16, 60], [63]])
def test_explained_variance_labels_stay_inside_the_figure(marks):
    from nnrun.plots import explained_variance_plot

    X, shape = digits_train()
    pre = Preprocessor(PreprocessSettings(), shape).fit(X, spectrum=True)
    fig = explained_variance_plot(pre.eigenvalues, pre.total_variance, marks, "digits")
    fig.canvas.draw()
    box = fig.bbox
    labels = fig.axes[0].texts
    assert len(labels) == len(marks)
    for label in labels:
        extent = label.get_window_extent()
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1


# ---- real data -----------------------------------------------------------------------------------

def test_cifar10_whitening_and_smooth_first_components(cifar10_folder):
    cfg = validate_config({"data": {"dataset": "cifar10", "root": str(cifar10_folder.parent), "train_size": 4000},
                           "preprocess": {"pca": 100, "whiten": True}})
    data = load_data(cfg)
    pre = Preprocessor(preprocess_settings(cfg.preprocess), data.image_shape).fit(data.X_train)
    Z = pre.transform(data.X_train)
    np.testing.assert_allclose(cov0(Z), np.eye(100), atol=2e-3)
    images = pre.components[:, :100].T.reshape(100, 3, 32, 32)
    roughness = (np.abs(np.diff(images, axis=3)).mean(axis=(1, 2, 3)) / np.abs(images).mean(axis=(1, 2, 3)))
    assert roughness[:5].max() < 0.15 < roughness[-20:].mean()  # the first components are low frequency


def test_cifar10_zca_turns_images_into_edge_maps(cifar10_folder):
    cfg = validate_config({"data": {"dataset": "cifar10", "root": str(cifar10_folder.parent), "train_size": 4000},
                           "preprocess": {"scale": "std", "whiten": "zca", "eps": 0.1}})
    data = load_data(cfg)
    pre = Preprocessor(preprocess_settings(cfg.preprocess), data.image_shape).fit(data.X_train)

    def neighbour_correlation(X):  # of horizontally adjacent pixels, over images and positions
        images = X[:500].reshape(-1, 3, 32, 32).astype(np.float64)
        return np.corrcoef(images[..., :-1].ravel(), images[..., 1:].ravel())[0, 1]

    Z = pre.transform(data.X_val)  # images it was not fitted on
    assert Z.shape == data.X_val.shape
    assert neighbour_correlation(data.X_val) > 0.9 and abs(neighbour_correlation(Z)) < 0.5  # measured 0.94, 0.39
