"""Test-time flip averaging (`augment.test_flip`, `--flip-average`): the mirror is that of the raw image, the
probabilities are the mean of the two forward passes, a mirror-symmetric model is unchanged, the summary
records it and `nnrun evaluate` reproduces it, the options override the run's setting, bad combinations
exit 2 naming the key, and the GPU path gives the CPU's numbers."""

import ast
import inspect
import json
import textwrap

import numpy as np
import pytest
from sklearn.datasets import load_digits

from nnrun import augment
from nnrun.augment import Mirror
from nnrun.experiment import load_run
from nnrun.nn.layers import ACTIVATIONS
from nnrun.nn.losses import (
    LOSSES,
    BinnedRegression,
    HierarchicalSoftmax,
    SoftmaxCrossEntropy,
    Targets,
)
from nnrun.nn.model import build_mlp
from nnrun.preprocess import PreprocessSettings, fit_preprocessor
from nnrun.trainer import evaluate, evaluation_scores
from tests import fake_cupy
from tests.helpers import TINY_RUN, invoke_error, invoke_json, train_run

SHAPE = (2, 3, 5)  # channels, height, width: W != H, so a vertical flip or a transpose cannot pass for a mirror
D = int(np.prod(SHAPE))


def mirror_by_hand(X: np.ndarray, shape=SHAPE) -> np.ndarray:
    """out[c, i, j] = in[c, i, W - 1 - j], pixel by pixel (the reference the vectorized mirror is held to)."""
    c, h, w = shape
    images = X.reshape(len(X), c, h, w)
    out = np.empty_like(images)
    for j in range(w):
        out[..., j] = images[..., w - 1 - j]
    return out.reshape(len(X), -1)


def raw_images(n=40, seed=0) -> np.ndarray:
    """Raw pixels whose mean and spread differ from pixel to pixel and are not mirror-symmetric."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 255, (n, D)) * np.linspace(0.2, 1.0, D) + np.arange(D) * 3).astype(np.float32)


def softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def random_model(seed=0, n_in=D, n_out=4, symmetric=False):
    """A 2-layer MLP; `symmetric`: first-layer weights equal for each pixel and its mirror, so that every image
    and its mirror give the same scores."""
    rng = np.random.default_rng(seed)
    W1 = rng.standard_normal((n_in, 8)).astype(np.float32)
    if symmetric:
        W1 = (W1 + mirror_by_hand(W1.T).T) / 2
    W2 = rng.standard_normal((8, n_out)).astype(np.float32)
    return build_mlp([(W1, rng.standard_normal(8).astype(np.float32)), (W2, np.zeros(n_out, np.float32))],
                     activation=ACTIVATIONS["relu"])


# ---- the mirror -------------------------------------------------------------------------------------

def test_the_mirror_moves_a_marked_pixel_to_the_mirrored_column_of_its_row_and_channel():
    X = np.zeros((1, D), dtype=np.float32)
    X.reshape(1, *SHAPE)[0, 1, 2, 1] = 1.0
    out = Mirror(SHAPE)(X).reshape(*SHAPE)
    assert out[1, 2, SHAPE[2] - 1 - 1] == 1.0 and out.sum() == 1.0
    np.testing.assert_array_equal(Mirror(SHAPE)(raw_images()), mirror_by_hand(raw_images()))


@pytest.mark.parametrize("center", ["per_feature", "per_channel"])
def test_the_mirror_of_preprocessed_rows_is_the_preprocessing_of_the_mirrored_raw_image(center):
    X = raw_images()
    pre = fit_preprocessor(PreprocessSettings(center=center, scale="std"), X, SHAPE)
    Z = pre.transform(X)
    got = Mirror(SHAPE, pre.pixel_affine())(Z)
    want = pre.transform(mirror_by_hand(X))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # per-pixel statistics that are not mirror-symmetric: mirroring the standardized pixels would be wrong
    assert np.abs(mirror_by_hand(Z) - want).max() > 0.1
    np.testing.assert_array_equal(Z, pre.transform(X))  # the input is left alone


def test_after_zca_the_whitened_image_is_mirrored_as_it_is():
    X = raw_images(n=200)
    pre = fit_preprocessor(PreprocessSettings(whiten="zca", eps=0.1), X, SHAPE)
    assert pre.pixel_affine() is None  # ZCA has no per-pixel map: the whitened pixels are mirrored as they are
    Z = pre.transform(X)
    np.testing.assert_array_equal(Mirror(SHAPE, pre.pixel_affine())(Z), mirror_by_hand(Z))


# ---- averaging --------------------------------------------------------------------------------------

def test_a_mirror_symmetric_model_gives_the_same_predictions_with_and_without_flip_averaging():
    Z = raw_images() / 255
    y = np.arange(len(Z)) % 4
    model, loss = random_model(symmetric=True), SoftmaxCrossEntropy()
    np.testing.assert_allclose(model.forward(mirror_by_hand(Z)), model.forward(Z), rtol=1e-5, atol=1e-5)
    plain = evaluation_scores(model, loss, Z, 16)
    averaged = evaluation_scores(model, loss, Z, 16, Mirror(SHAPE))
    np.testing.assert_allclose(loss.predict_proba(averaged), loss.predict_proba(plain), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(loss.predict(averaged), loss.predict(plain))
    flat, flipped = evaluate(model, loss, Z, y, 16), evaluate(model, loss, Z, y, 16, mirror=Mirror(SHAPE))
    assert flipped == pytest.approx(flat, rel=1e-5)


def test_flip_averaged_probabilities_are_the_mean_of_the_two_forward_passes():
    Z = raw_images() / 255
    model, loss = random_model(seed=3), SoftmaxCrossEntropy()
    p_plain, p_mirror = softmax(model.forward(Z)), softmax(model.forward(mirror_by_hand(Z)))
    assert np.abs(p_plain - p_mirror).max() > 0.05  # it matters for this model
    averaged = evaluation_scores(model, loss, Z, 7, Mirror(SHAPE))  # batches of 7: a last short batch too
    np.testing.assert_allclose(loss.predict_proba(averaged), (p_plain + p_mirror) / 2, rtol=1e-5, atol=1e-6)
    y = np.arange(len(Z)) % 4
    want = -np.mean(np.log(((p_plain + p_mirror) / 2)[np.arange(len(Z)), y]))
    assert evaluate(model, loss, Z, y, 7, mirror=Mirror(SHAPE))["loss"] == pytest.approx(want, rel=1e-5)


def losses_with_probabilities():
    names = list("abcde")
    cases = [(name, cls.create(Targets(names, np.zeros(0), "t"))) for name, cls in LOSSES.items()
             if cls.has_proba and cls is not HierarchicalSoftmax]
    cases += [("hierarchical_softmax", HierarchicalSoftmax.balanced(5)),
              ("binned softmax", BinnedRegression(SoftmaxCrossEntropy(), np.arange(4.0), np.arange(5.0), None))]
    return cases


@pytest.mark.parametrize("name, loss", losses_with_probabilities(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_loss_with_probabilities_averages_them(name, loss):
    rng = np.random.default_rng(1)
    k = loss.output_dim(5)
    for spread in (1, 60):  # ordinary scores, and scores whose probabilities underflow float32
        a, b = (rng.standard_normal((2, 9, k)) * spread).astype(np.float32)
        averaged = loss.mean_proba_scores(a, b)
        assert averaged.shape == a.shape and averaged.dtype == np.float32 and np.isfinite(averaged).all()
        np.testing.assert_allclose(loss.predict_proba(averaged), (loss.predict_proba(a) + loss.predict_proba(b)) / 2,
                                   rtol=1e-4, atol=1e-6, err_msg=name)


# ---- runs, evaluate and predict ---------------------------------------------------------------------

FLIP_RUN = [*TINY_RUN, "preprocess.scale=std"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same digits run trained with and without augment.test_flip: (with, without)."""
    base = tmp_path_factory.mktemp("flip")
    return (train_run(base / "with", *FLIP_RUN, "augment.test_flip=true"), train_run(base / "without", *FLIP_RUN))


def summary(run) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_flip_averaging_changes_only_the_final_evaluation_and_evaluate_reproduces_it(runs):
    flipped, plain = runs
    assert summary(flipped)["flip_average"] is True and summary(plain)["flip_average"] is False
    # per-epoch validation is not flip-averaged: the same training, the same weights, the same metrics.jsonl
    assert (flipped / "metrics.jsonl").read_text().count("val_accuracy") == 2
    strip = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
             for run in runs for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert strip[:2] == strip[2:]
    assert summary(flipped)["test_loss"] != summary(plain)["test_loss"]
    for split in ("train", "val", "test"):
        result = invoke_json("evaluate", flipped, "--split", split)
        assert result["flip_average"] is True and result["summary_flip_average"] is True
        assert result["metrics"] == result["summary_metrics"]
        assert result["metrics"]["loss"] == summary(flipped)[f"{split}_loss"]


def test_the_options_override_the_run_setting(runs):
    flipped, plain = runs
    off = invoke_json("evaluate", flipped, "--no-flip-average")
    assert off["flip_average"] is False and off["metrics"]["loss"] == summary(plain)["test_loss"]
    on = invoke_json("evaluate", plain, "--flip-average")
    assert on["flip_average"] is True and on["metrics"]["loss"] == summary(flipped)["test_loss"]
    run = load_run(flipped)
    X, y = run.load_split("test")
    assert run.flip_average and not run.with_flip_average(False).flip_average
    # the probabilities: the mean of the run's plain probabilities of each raw image and of its mirror
    plain_run = run.with_flip_average(False)
    want = (plain_run.predict_proba(X) + plain_run.predict_proba(mirror_by_hand(X, (1, 8, 8)))) / 2
    np.testing.assert_allclose(run.predict_proba(X), want, rtol=1e-5, atol=1e-6)


def test_predict_follows_the_run_and_its_options(runs, tmp_path):
    flipped, plain = runs
    digits = load_digits()
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, X=digits.data[:25].astype(np.float32))

    def probabilities(*args):
        result = invoke_json("predict", *args, "--top-k", "10")
        rows = {r["id"]: {r[f"top{j}_class"]: r[f"top{j}_proba"] for j in range(1, 11)} for r in result["predictions"]}
        return result["flip_average"], rows

    by_run = probabilities(flipped, inputs)
    by_option = probabilities(plain, inputs, "--flip-average")
    assert by_run[0] is True and by_run == by_option
    without = probabilities(flipped, inputs, "--no-flip-average")
    assert without[0] is False and without != by_run
    assert without == probabilities(plain, inputs)


@pytest.mark.parametrize("sets, words", [
    (["loss.name=svm"], ["augment.test_flip", "loss.name=svm", "probabilities"]),
    (["loss.name=l2", "data.dataset=diabetes"], ["augment.test_flip", "loss.name=l2"]),
    (["preprocess.pca=10"], ["augment.test_flip", "preprocess.pca"]),
])
def test_bad_combinations_exit_2_naming_the_key_and_leave_no_run(tmp_path, sets, words):
    message = invoke_error("train", "configs/quickstart.yaml", "--set", "augment.test_flip=true",
                           *(a for s in sets for a in ("--set", s)), "--out", tmp_path / "run")
    assert all(w in message for w in words), message
    assert not (tmp_path / "run").exists()


def test_data_without_an_image_shape_exit_2_naming_the_key(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "flat.npz", X=rng.standard_normal((60, 6)).astype(np.float32), y=np.arange(60) % 3)
    message = invoke_error("train", "configs/quickstart.yaml", "--set", "data.dataset=npz", "--set",
                           f"data.path={tmp_path / 'flat.npz'}", "--set", "augment.test_flip=true", "--out",
                           tmp_path / "run")
    assert "augment.test_flip" in message and "no image shape" in message
    assert not (tmp_path / "run").exists()


def test_the_options_on_a_run_without_probabilities_exit_2_naming_the_option(tmp_path):
    run = train_run(tmp_path / "svm", *TINY_RUN, "loss.name=svm")
    np.savez(tmp_path / "inputs.npz", X=load_digits().data[:5].astype(np.float32))
    for command, extra in (("evaluate", []), ("predict", [tmp_path / "inputs.npz"])):
        message = invoke_error(command, run, *extra, "--flip-average")
        assert "--flip-average" in message and "loss.name=svm" in message
    assert invoke_json("evaluate", run, "--no-flip-average")["flip_average"] is False


# ---- the GPU path -----------------------------------------------------------------------------------

def test_on_the_gpu_the_mirror_and_the_averaged_scores_are_the_cpus(monkeypatch):
    cupy = fake_cupy.install(monkeypatch)
    X = raw_images()
    pre = fit_preprocessor(PreprocessSettings(scale="std"), X, SHAPE)
    Z = pre.transform(X)
    mirror = Mirror(SHAPE, pre.pixel_affine())
    on_device = mirror(cupy.asarray(Z))
    assert type(on_device).__module__.startswith("cupy")
    np.testing.assert_allclose(on_device.get(), mirror(Z), rtol=1e-6, atol=1e-6)
    loss = SoftmaxCrossEntropy()
    cpu = evaluation_scores(random_model(seed=2), loss, Z, 16, mirror)
    gpu = evaluation_scores(random_model(seed=2).to(cupy), loss, Z, 16, mirror)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-5)


def test_a_gpu_run_flip_averages_its_final_evaluation_as_the_cpu_run(monkeypatch, runs, tmp_path):
    fake_cupy.install(monkeypatch)
    gpu = summary(train_run(tmp_path / "gpu", *FLIP_RUN, "augment.test_flip=true", "train.device=gpu"))
    cpu = summary(runs[0])
    assert gpu["flip_average"] is True and "step_path" in gpu  # trained (and evaluated) on the (fake) GPU
    for split in ("train", "val", "test"):
        assert gpu[f"{split}_loss"] == pytest.approx(cpu[f"{split}_loss"], rel=1e-4), split


@pytest.mark.parametrize("function", [Mirror.__call__, augment._to_raw, augment._from_raw, augment._mirrored],
                         ids=lambda f: f.__qualname__)
def test_the_mirror_calls_no_numpy_function_on_the_batch(function):
    """On a GPU the batch is a CuPy array: the mirror must use the array's module (as tests/test_backend.py holds
    the training path to)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    named = {node.attr for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "np"}
    assert named <= {"ndarray"}  # annotations only
