"""Augmentation: flips and translations move a marked pixel where they should, from the seed alone; the
labels, val, test and the train-metrics subset are never touched; pixel-wise preprocessing commutes."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun.augment import Augmentation
from nnrun.cli import app
from nnrun.config import load_config
from nnrun.errors import UserInputError
from nnrun.experiment import assemble, load_run
from nnrun.nn.losses import SoftmaxCrossEntropy
from nnrun.preprocess import PreprocessSettings, fit_preprocessor
from nnrun.trainer import History, SilentReporter, fit

SHAPE = (2, 5, 7)  # channels, height, width: not square, so rows and columns cannot be confused
N = 300


def marked_batch(channel=1, row=1, col=2):
    """N images of zeros with one pixel set to 1."""
    X = np.zeros((N, np.prod(SHAPE)), dtype=np.float32)
    X.reshape(N, *SHAPE)[:, channel, row, col] = 1.0
    return X


def draws(seed, flip, k):
    """The flips and shifts `Augmentation` draws from a generator seeded with `seed` (its documented order)."""
    rng = np.random.default_rng(seed)
    flips = rng.random(N) < 0.5 if flip else np.zeros(N, dtype=bool)
    shifts = rng.integers(-k, k + 1, size=(2, N)) if k else np.zeros((2, N), dtype=int)
    return flips, shifts


@pytest.mark.parametrize("flip, k", [(True, 0), (False, 2), (True, 3)])
def test_the_marked_pixel_moves_by_the_drawn_shift_and_mirrors_with_the_drawn_flip(flip, k):
    c, h, w = SHAPE
    out = Augmentation(SHAPE, flip=flip, translate=k)(marked_batch(), np.random.default_rng(5)).reshape(N, *SHAPE)
    flips, (sy, sx) = draws(5, flip, k)
    for i in range(N):
        expected = np.zeros(SHAPE, dtype=np.float32)
        row, col = 1 + sy[i], 2 + sx[i]
        if 0 <= row < h and 0 <= col < w:  # else the mark left the image: zero padding came in
            expected[1, row, w - 1 - col if flips[i] else col] = 1.0
        np.testing.assert_array_equal(out[i], expected)
    assert flips.any() == flip and (sy != 0).any() == (k > 0)


def test_reflect_padding_mirrors_at_the_border_like_numpy_pad():
    c, h, w = SHAPE
    X = np.random.default_rng(0).standard_normal((N, c * h * w)).astype(np.float32)
    out = Augmentation(SHAPE, flip=True, translate=3, padding="reflect")(X, np.random.default_rng(2))
    flips, (sy, sx) = draws(2, True, 3)
    images = X.reshape(N, c, h, w)
    for i in range(N):  # reference: pad, crop at (k - sy, k - sx), mirror
        padded = np.pad(images[i], ((0, 0), (3, 3), (3, 3)), mode="reflect")
        crop = padded[:, 3 - sy[i]:3 - sy[i] + h, 3 - sx[i]:3 - sx[i] + w]
        np.testing.assert_array_equal(out[i].reshape(c, h, w), crop[:, :, ::-1] if flips[i] else crop)


def test_same_seed_same_batches_and_the_input_is_left_alone():
    X = np.random.default_rng(1).standard_normal((N, np.prod(SHAPE))).astype(np.float32)
    before = X.copy()
    augment = Augmentation(SHAPE, flip=True, translate=2, padding="reflect")
    a = augment(X, np.random.default_rng(9))
    assert np.array_equal(a, augment(X, np.random.default_rng(9)))
    assert not np.array_equal(a, augment(X, np.random.default_rng(10)))
    assert np.array_equal(X, before) and a.dtype == np.float32 and a.shape == X.shape


@pytest.mark.parametrize("settings", [{"scale": "std"}, {"center": "per_channel"}, {"scale": "minmax"}])
def test_augmenting_the_preprocessed_batch_equals_preprocessing_the_augmented_raw_batch(settings):
    X = (np.random.default_rng(3).random((N, np.prod(SHAPE))) * 255).astype(np.float32)
    pre = fit_preprocessor(PreprocessSettings(**settings), X, SHAPE)
    raw = Augmentation(SHAPE, flip=True, translate=2)  # zero padding: a raw 0, which preprocessing then maps
    done = Augmentation(SHAPE, flip=True, translate=2, pixel_affine=pre.pixel_affine())
    expected = pre.transform(raw(X, np.random.default_rng(4)))
    np.testing.assert_allclose(done(pre.transform(X), np.random.default_rng(4)), expected, atol=2e-5)


class Recorder:
    """An augmentation that records what it is given and returns it unchanged (rows of X_train only)."""

    def __init__(self):
        self.calls = []

    def __call__(self, X, rng):
        self.calls.append(X.copy())
        return X


class LabelSpy(SoftmaxCrossEntropy):
    """Softmax that records the labels of every training batch."""

    def __init__(self):
        super().__init__()
        self.labels = []

    def loss_and_grad(self, scores, y):
        self.labels.append(y.copy())
        return super().loss_and_grad(scores, y)


def digits_experiment(*sets):
    return assemble(load_config("configs/quickstart.yaml", ["train.epochs=2", "train.batch_size=100", *sets]))


def test_only_training_batches_are_augmented_and_labels_and_batch_order_stay():
    experiment = digits_experiment("augment.flip=true", "augment.translate=1")
    data, setup = experiment.data, experiment.setup
    recorder = Recorder()
    setup.augment = recorder
    spy = LabelSpy()
    fit(experiment.model, spy, data, setup, SilentReporter(), History())
    n_batches = -(-len(data.X_train) // 100)
    assert len(recorder.calls) == 2 * n_batches  # once per training batch; evaluation never calls it
    train_rows = {row.tobytes() for row in data.X_train}
    assert all(row.tobytes() in train_rows for batch in recorder.calls for row in batch)
    # the same seed without augmentation sees the same labels in the same order: labels are left alone
    # and the augment stream moves no other stream
    plain = digits_experiment()
    plain_spy = LabelSpy()
    fit(plain.model, plain_spy, plain.data, plain.setup, SilentReporter(), History())
    assert len(plain_spy.labels) == len(spy.labels)
    assert all(np.array_equal(a, b) for a, b in zip(plain_spy.labels, spy.labels, strict=True))


def test_augmentation_changes_training_but_not_how_val_and_test_are_scored(tmp_path):
    runs = {}
    for name, sets in (("plain", []), ("flipped", ["augment.flip=true", "augment.translate=1"])):
        out = tmp_path / name
        result = CliRunner().invoke(app, ["train", "configs/quickstart.yaml", "--set", "train.epochs=3", "--out",
                                          str(out), "--json", "--quiet", *[a for s in sets for a in ("--set", s)]])
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(result.stdout)
    assert runs["plain"]["test_accuracy"] != runs["flipped"]["test_accuracy"]
    trained = load_run(tmp_path / "flipped")  # scoring a trained run never augments: same result every time
    X, y = trained.load_split("test")
    first = trained.score(X, y)
    assert first == trained.score(X, y) and first["accuracy"] == runs["flipped"]["test_accuracy"]


@pytest.mark.parametrize("sets, message", [
    (["augment.flip=true", "preprocess.whiten=true"], "whiten: zca"),
    (["augment.translate=1", "preprocess.pca=20"], "augment.flip and augment.translate"),
    (["augment.translate=8"], r"augment\.translate: shifts of up to 7 pixels"),
    (["augment.padding=wrap"], r"augment\.padding"),
    (["augment.translate=-1"], r"augment\.translate"),
])
def test_bad_augmentation_settings_name_the_key(sets, message):
    with pytest.raises(UserInputError, match=message):
        assemble(load_config("configs/quickstart.yaml", sets))


def test_augmentation_needs_images_and_exits_2_without_a_run_folder(tmp_path):
    result = CliRunner().invoke(app, ["train", "configs/quickstart.yaml", "--set", "data.dataset=diabetes",
                                      "--set", "loss.name=l2", "--set", "augment.flip=true",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "augment" in result.output and "image" in result.output
    assert not (tmp_path / "run").exists()


def test_augmentation_after_zca_moves_the_whitened_images():
    experiment = digits_experiment("augment.flip=true", "preprocess.whiten=zca", "preprocess.eps=0.1")
    augment = experiment.setup.augment
    assert augment.pixel_affine is None  # ZCA mixes pixels: the whitened images themselves are mirrored
    X = experiment.data.X_train[:N]
    out = augment(X, np.random.default_rng(0))
    flips, _ = draws(0, True, 0)
    images = X.reshape(-1, 1, 8, 8)
    expected = np.where(flips[:len(X), None, None, None], images[..., ::-1], images).reshape(len(X), 64)
    np.testing.assert_array_equal(out, expected)
