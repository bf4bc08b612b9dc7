"""`preprocess.scale: global`: one scalar, the standard deviation of all training values about their grand mean,
against a hand computation and scikit-learn, with every centring mode, PCA and whitening, preprocess.npz,
augmentation's pixel affine, the GPU path (fake CuPy) and the config."""

import numpy as np
import pytest

from nnrun.augment import Augmentation
from nnrun.backend import is_device_array
from nnrun.config import load_config
from nnrun.errors import UserInputError
from nnrun.experiment import describe_choices, inactive_keys, preprocess_settings
from nnrun.io import write_npz
from nnrun.preprocess import Preprocessor, PreprocessSettings, fit_preprocessor, load_preprocessor
from tests import fake_cupy

SHAPE = (3, 4, 4)


def images(n=200, seed=0):
    """Channel-major 3x4x4 'images' whose pixels have different means and spreads: float32 (n, 48)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 48)) * rng.uniform(0.5, 4.0, 48) + rng.uniform(-20, 60, 48)
    return X.astype(np.float32)


def hand_scalar(X):
    """sqrt(sum_ij (X_ij - m)^2 / (N D)) with m the mean of all N x D values, in float64."""
    X64 = np.asarray(X, dtype=np.float64)
    return np.sqrt(np.sum((X64 - X64.sum() / X64.size) ** 2) / X64.size)


@pytest.mark.parametrize("center", ["none", "per_feature", "global", "per_channel"])
def test_one_scalar_for_every_feature_whatever_the_centring(center):
    from sklearn.preprocessing import StandardScaler

    X = images()
    X64 = X.astype(np.float64)
    s = hand_scalar(X)
    np.testing.assert_allclose(s, StandardScaler().fit(X64.reshape(-1, 1)).scale_[0], rtol=1e-12)
    assert not np.isclose(s, X64.std(axis=0)).any()  # not any feature's own std
    pre = fit_preprocessor(PreprocessSettings(center=center, scale="global"), X, SHAPE)
    np.testing.assert_allclose(pre.std, np.full(48, s), rtol=1e-6)
    centred = fit_preprocessor(PreprocessSettings(center=center), X, SHAPE).transform(X).astype(np.float64)
    np.testing.assert_allclose(pre.transform(X), centred / s, rtol=1e-5, atol=1e-5)
    scale, shift = pre.pixel_affine()
    np.testing.assert_allclose(scale, np.full(48, s), rtol=1e-6)
    np.testing.assert_allclose(X64 - shift, centred, atol=1e-4)


def test_the_global_centring_and_scaling_is_standard_scaler_on_the_flattened_array():
    from sklearn.preprocessing import StandardScaler

    X = images(seed=1)
    out = fit_preprocessor(PreprocessSettings(center="global", scale="global"), X).transform(X)
    expected = StandardScaler().fit_transform(X.astype(np.float64).reshape(-1, 1)).reshape(X.shape)
    np.testing.assert_allclose(out, expected, atol=2e-5)
    np.testing.assert_allclose(out.std(dtype=np.float64), 1, rtol=1e-5)


def test_constant_data_is_left_unscaled_like_a_constant_feature():
    X = np.full((20, 6), 3.5, dtype=np.float32)
    pre = fit_preprocessor(PreprocessSettings(scale="global"), X)
    assert np.all(pre.std == 0)
    np.testing.assert_array_equal(pre.pixel_affine()[0], np.ones(6, dtype=np.float32))  # divisor 1
    assert np.all(pre.transform(X) == 0)
    raw = fit_preprocessor(PreprocessSettings(center="none", scale="global"), X).transform(X)
    np.testing.assert_array_equal(raw, X)


def test_pca_and_whitening_work_on_the_covariance_of_the_globally_scaled_data():
    X = images(400, seed=2)
    s = hand_scalar(X)
    plain = fit_preprocessor(PreprocessSettings(pca=10), X)
    scaled = fit_preprocessor(PreprocessSettings(scale="global", pca=10), X)
    np.testing.assert_allclose(scaled.eigenvalues, plain.eigenvalues / s ** 2, rtol=1e-4)
    np.testing.assert_allclose(scaled.total_variance, plain.total_variance / s ** 2, rtol=1e-5)
    np.testing.assert_allclose(scaled.transform(X), plain.transform(X) / s, rtol=1e-3, atol=1e-4)
    X64 = X.astype(np.float64)
    Xs = (X64 - X64.mean(axis=0)) / s
    w = np.linalg.eigvalsh(Xs.T @ Xs / len(X))[::-1]
    np.testing.assert_allclose(scaled.eigenvalues, w[:10], rtol=1e-4)
    for whiten in (True, "zca"):
        white = fit_preprocessor(PreprocessSettings(scale="global", whiten=whiten, eps=0.0), X).transform(X)
        Z = white.astype(np.float64) - white.mean(axis=0)
        np.testing.assert_allclose(Z.T @ Z / len(Z), np.eye(48), atol=2e-3)
        back = fit_preprocessor(PreprocessSettings(scale="global", whiten=whiten, eps=0.0), X)
        np.testing.assert_allclose(back.inverse_transform(white), X, rtol=1e-3, atol=2e-2)


@pytest.mark.parametrize("settings", [
    PreprocessSettings(scale="global"),
    PreprocessSettings(center="per_channel", scale="global"),
    PreprocessSettings(scale="global", pca=7, whiten=True),
])
def test_round_trip_through_preprocess_npz(settings, tmp_path):
    X = images(seed=3)
    pre = fit_preprocessor(settings, X, SHAPE)
    back = load_preprocessor(pre.save(tmp_path / "preprocess.npz"))
    assert back.settings == settings
    np.testing.assert_array_equal(back.std, pre.std)
    np.testing.assert_array_equal(back.transform(X), pre.transform(X))
    np.testing.assert_allclose(back.inverse_transform(back.transform(X)), X if settings.pca is None else
                               pre.inverse_transform(pre.transform(X)), rtol=1e-5, atol=1e-3)


def test_a_file_whose_global_scale_is_not_one_value_is_refused(tmp_path):
    X = images(seed=4)
    stats = fit_preprocessor(PreprocessSettings(scale="global"), X).statistics()
    stats["std"] = stats["std"] * np.linspace(1, 2, 48, dtype=np.float32)
    with pytest.raises(UserInputError, match="scale is global, but std holds more than one value"):
        load_preprocessor(write_npz(tmp_path / "preprocess.npz", stats))
    stats.pop("std")
    with pytest.raises(UserInputError, match="std missing"):
        load_preprocessor(write_npz(tmp_path / "other.npz", stats))


def test_augmenting_the_globally_scaled_batch_equals_scaling_the_augmented_raw_batch():
    X = (np.random.default_rng(5).random((32, 48)) * 255).astype(np.float32)
    pre = fit_preprocessor(PreprocessSettings(scale="global"), X, SHAPE)
    raw = Augmentation(SHAPE, flip=True, translate=1)
    done = Augmentation(SHAPE, flip=True, translate=1, pixel_affine=pre.pixel_affine())
    expected = pre.transform(raw(X, np.random.default_rng(6)))
    np.testing.assert_allclose(done(pre.transform(X), np.random.default_rng(6)), expected, atol=2e-5)


def test_the_gpu_fit_and_transform_match_the_cpu(monkeypatch):
    gpu = fake_cupy.install(monkeypatch)
    X = images(seed=7)
    for settings in (PreprocessSettings(scale="global"), PreprocessSettings(center="none", scale="global"),
                     PreprocessSettings(scale="global", pca=5, whiten=True)):
        cpu = Preprocessor(settings, SHAPE).fit(X)
        dev = Preprocessor(settings, SHAPE).fit(X, xp=gpu)
        np.testing.assert_allclose(dev.std, cpu.std, rtol=1e-6)
        out = dev.transform(gpu.asarray(X))
        assert is_device_array(out)
        np.testing.assert_allclose(out.get(), cpu.transform(X), rtol=1e-4, atol=1e-4)


def test_the_config_accepts_it_and_describes_it():
    cfg = load_config(None, ["preprocess.scale=global", "preprocess.pca=5", "preprocess.whiten=true"])
    assert preprocess_settings(cfg.preprocess) == PreprocessSettings(scale="global", pca=5, whiten=True)
    assert "global scaling" in describe_choices(cfg)["preprocessing"]
    assert "preprocess.scale" not in inactive_keys(cfg)
    with pytest.raises(UserInputError, match="'none', 'std', 'global' or 'minmax'"):
        load_config(None, ["preprocess.scale=globl"])
