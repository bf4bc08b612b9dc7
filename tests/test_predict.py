"""`nnrun predict`: CSV, npz and JSON outputs; images equal the rows they were written from; a model
rebuilt in PyTorch from the documented run files predicts the same; bad inputs exit 2 naming the file."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import nnrun
from nnrun.datasets.cifar10 import CIFAR10_CLASSES, read_cifar10_batch
from tests.cifar_fixtures import write_cifar_folder
from tests.helpers import TINY_RUN, invoke, invoke_error, invoke_json, train_run


def predict_json(*args) -> dict:
    return invoke_json("predict", *args)


def predict_error(*args) -> str:
    return invoke_error("predict", *args)


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny run on a synthetic CIFAR-10 folder (20 images per batch): (run directory, batches folder)."""
    base = tmp_path_factory.mktemp("cifar")
    folder = write_cifar_folder(base)
    run = train_run(base / "run", "data.dataset=cifar10", f"data.root={base}", "data.val_size=10", *TINY_RUN)
    return run, folder


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("digits") / "run", *TINY_RUN)


def write_png(row: np.ndarray, path: Path) -> Path:
    """A CIFAR-10 row (3072 uint8, channel-major) as a 32x32 RGB PNG."""
    Image.fromarray(row.reshape(3, 32, 32).transpose(1, 2, 0), "RGB").save(path)
    return path


def test_png_files_predict_exactly_as_the_rows_they_were_written_from(cifar_run, tmp_path):
    run, folder = cifar_run
    X, labels = read_cifar10_batch(folder / "test_batch")
    pngs = [write_png(X[i], tmp_path / f"img{i}.png") for i in range(6)]
    from_rows = predict_json(run, folder / "test_batch")["predictions"][:6]
    from_images = predict_json(run, *pngs)["predictions"]
    for a, b in zip(from_rows, from_images, strict=True):
        assert a["target"] == CIFAR10_CLASSES[labels[a["row"]]] and "target" not in b
        keys = [k for k in a if k.startswith(("prediction", "top"))]
        assert [a[k] for k in keys] == [b[k] for k in keys]
    invoke("predict", run, *pngs, "--out", tmp_path / "images.npz")
    invoke("predict", run, folder / "test_batch", "--out", tmp_path / "rows.npz")
    with np.load(tmp_path / "images.npz") as zi, np.load(tmp_path / "rows.npz") as zr:
        # the same inputs and weights; the BLAS may sum a 6-row product and a 10,000-row one in other orders
        # (OpenBLAS's Haswell kernel on AMD EPYC does), so scores agree to float32 rounding
        np.testing.assert_allclose(zi["scores"], zr["scores"][:6], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(zi["proba"], zr["proba"][:6], rtol=1e-5, atol=1e-7)
        assert zi["source"].tolist() == [str(p) for p in pngs] and zr["target"].tolist() == labels.tolist()


def test_images_of_another_size_or_mode_are_converted_and_resized(cifar_run, tmp_path):
    run, _ = cifar_run
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 48), dtype=np.uint8), "L").save(tmp_path / "gray.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "RGB").save(tmp_path / "photo.jpg")
    result = invoke("predict", run, tmp_path / "gray.png", tmp_path / "alpha.png", tmp_path / "photo.jpg", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["n"] == 3 and out["resized"] == [str(tmp_path / "gray.png"), str(tmp_path / "photo.jpg")]
    assert "gray.png was resized" in result.stderr


def test_a_digits_image_is_scaled_to_the_digits_pixel_range(digits_run, tmp_path):
    X, _ = nnrun.load_run(digits_run).load_split("test")
    pixels = np.round(X[0] * 255 / 16).astype(np.uint8)  # digits pixels are 0..16, image pixels 0..255
    Image.fromarray(pixels.reshape(8, 8), "L").save(tmp_path / "digit.png")
    np.savez(tmp_path / "row.npz", X=pixels[None].astype(np.float32) * np.float32(16 / 255))
    from_image = predict_json(digits_run, tmp_path / "digit.png")["predictions"][0]
    from_row = predict_json(digits_run, tmp_path / "row.npz")["predictions"][0]
    assert from_image["prediction"] == from_row["prediction"] and from_image["top1_proba"] == from_row["top1_proba"]


def test_undecodable_image_names_the_file(cifar_run, tmp_path):
    run, _ = cifar_run
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    text = predict_error(run, tmp_path / "broken.png")
    assert "broken.png" in text and "cannot decode" in text


def test_images_need_a_model_trained_on_images(tmp_path):
    run = train_run(tmp_path / "run", "data.dataset=diabetes", "loss.name=l2", *TINY_RUN)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8), "L").save(tmp_path / "x.png")
    text = predict_error(run, tmp_path / "x.png")
    assert "x.png" in text and "not images" in text and ".npz" in text


@pytest.mark.parametrize("arrays, text", [
    ({"X": np.zeros((4, 100))}, r"key 'X' must be (N, 3072) rows or (N, 3, 32, 32) images"),
    ({"X": np.array([["a"] * 3072])}, "must hold real numbers"),
    ({"Z": np.zeros((4, 3072))}, "missing key 'X'"),
    ({"X": np.zeros((2, 3072)), "y": np.array([0, 1]), "class_names": np.array(list("abcdefghij"))},
     "do not match the run's"),
])
def test_bad_npz_inputs_name_the_file_and_what_was_expected(cifar_run, tmp_path, arrays, text):
    run, _ = cifar_run
    np.savez(tmp_path / "in.npz", **arrays)
    message = predict_error(run, tmp_path / "in.npz")
    assert "in.npz" in message and text in message


def test_a_cifar_batch_needs_a_model_of_3072_features(digits_run, cifar_run):
    _, folder = cifar_run
    text = predict_error(digits_run, folder / "test_batch")
    assert "test_batch" in text and "3,072" in text and "64 features" in text


def test_unknown_input_kind_and_missing_file(digits_run, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "not an input nnrun reads" in predict_error(digits_run, tmp_path / "notes.txt")
    assert "not found" in predict_error(digits_run, tmp_path / "nope.npz")


def test_out_file_is_not_overwritten_without_the_flag(digits_run, tmp_path):
    X, y = nnrun.load_run(digits_run).load_split("test")
    np.savez(tmp_path / "in.npz", X=X, y=y)
    (tmp_path / "mine.csv").write_text("mine")
    assert "--overwrite" in predict_error(digits_run, tmp_path / "in.npz", "--out", tmp_path / "mine.csv")
    assert (tmp_path / "mine.csv").read_text() == "mine"
    assert ".csv or .npz" in predict_error(digits_run, tmp_path / "in.npz", "--out", tmp_path / "p.txt")
    result = invoke("predict", digits_run, tmp_path / "in.npz", "--out", tmp_path / "mine.csv", "--overwrite")
    assert result.exit_code == 0 and result.stdout == "" and "wrote 359 predictions" in result.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "mine.csv").read_text())))
    assert len(rows) == len(y)
    accuracy = np.mean([r["prediction"] == r["target"] for r in rows])
    assert accuracy == json.loads((digits_run / "summary.json").read_text())["test_accuracy"]


def test_csv_on_stdout_lists_top_k_classes_with_probabilities(digits_run, tmp_path):
    X, _ = nnrun.load_run(digits_run).load_split("test")
    np.savez(tmp_path / "in.npz", X=X[:4])
    result = invoke("predict", digits_run, tmp_path / "in.npz", "--top-k", "2")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["id", "source", "row", "prediction", "top1_class", "top1_proba", "top2_class", "top2_proba"]
    proba = nnrun.load_run(digits_run).predict_proba(X[:4])
    for line, p in zip(rows[1:], proba, strict=True):
        assert line[3] == line[4] == str(p.argmax())
        assert np.float32(line[5]) == p.max() and float(line[5]) >= float(line[7])


def test_regression_and_attribute_columns(tmp_path):
    diabetes = train_run(tmp_path / "l2", "data.dataset=diabetes", "loss.name=l2", *TINY_RUN)
    X, y = nnrun.load_run(diabetes).load_split("test")
    np.savez(tmp_path / "d.npz", X=X, targets=y)
    out = predict_json(diabetes, tmp_path / "d.npz")
    assert list(out["predictions"][0]) == ["id", "source", "row", "target", "prediction"]
    predicted = np.array([r["prediction"] for r in out["predictions"]], dtype=np.float32)
    np.testing.assert_array_equal(predicted, nnrun.load_run(diabetes).predict(X)[:, 0])
    cifar = write_cifar_folder(tmp_path / "c")
    attributes = train_run(tmp_path / "attr", "data.dataset=cifar10", f"data.root={cifar.parent}",
                           "data.val_size=10", "loss.name=attribute_hinge", *TINY_RUN)
    row = predict_json(attributes, cifar / "test_batch")["predictions"][0]
    assert row["target"] == "vehicle|can_fly|has_wheels"  # test row 0 is an airplane (labels cycle 0..9)
    assert [k for k in row if k.startswith("score_")][0] == "score_animal" and "proba_animal" not in row


@pytest.mark.parametrize("mode", ["inverted", "vanilla"])
def test_a_model_rebuilt_in_pytorch_from_the_documented_files_predicts_the_same(tmp_path, mode):
    """Only the README's file layouts: split.npz rows of scikit-learn's digits, preprocess.npz, model.npz and
    config.yaml, rebuilt in PyTorch, against `nnrun predict` on the recovered test rows."""
    torch = pytest.importorskip("torch")
    from sklearn.datasets import load_digits

    run = train_run(tmp_path / "run", "model.hidden=[32, 16]", "model.batchnorm=true", "model.dropout=0.8",
                    f"model.dropout_mode={mode}", "preprocess.scale=std", "preprocess.pca=40",
                    "preprocess.whiten=true", "train.epochs=3")
    with np.load(run / "split.npz") as z:
        assert str(z["test_pool"]) == "all"
        test_rows = z["test"]
    X = load_digits().data[test_rows].astype(np.float32)
    np.savez(tmp_path / "test.npz", X=X)
    assert invoke("predict", run, tmp_path / "test.npz", "--out", tmp_path / "p.npz").exit_code == 0
    with np.load(tmp_path / "p.npz") as z:
        nnrun_prediction, nnrun_scores = z["prediction"], z["scores"]

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    with np.load(run / "preprocess.npz") as p, np.load(run / "model.npz") as m:
        pre = {k: torch.from_numpy(p[k]) for k in ("mean", "std", "components", "eigenvalues")}
        eps, w = float(p["eps"]), {k: torch.from_numpy(m[k]) for k in m.files}
    F = torch.nn.functional
    std = torch.where(pre["std"] > 0, pre["std"], 1).double()
    x = (torch.from_numpy(X).double() - pre["mean"].double()) / std
    x = (x @ pre["components"].double() / torch.sqrt(pre["eigenvalues"] + eps)).float()
    n_hidden = len(cfg["model"]["hidden"])
    with torch.no_grad():
        for i in range(n_hidden + 1):
            x = F.linear(x, w[f"fc{i}.W"].T, w[f"fc{i}.b"])  # W is (fan_in, fan_out): scores are x @ W + b
            if i < n_hidden:
                x = F.batch_norm(x, w[f"bn{i}.running_mean"], w[f"bn{i}.running_var"], w[f"bn{i}.gamma"],
                                 w[f"bn{i}.beta"], training=False, eps=cfg["model"]["bn_eps"])
                x = F.relu(x)
                if mode == "vanilla":  # vanilla dropout scales by the keep probability at test time
                    x = x * cfg["model"]["dropout"]
    scores = x.numpy()
    np.testing.assert_allclose(scores, nnrun_scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(scores.argmax(axis=1), nnrun_prediction)


def test_real_cifar10_predict_on_the_test_batch_matches_the_summary(cifar10_folder, tmp_path):
    run = train_run(tmp_path / "run", "data.dataset=cifar10", f"data.root={cifar10_folder.parent}",
                    "data.train_size=500", "data.val_size=500", "model.hidden=[32]", "train.epochs=1")
    summary = json.loads((run / "summary.json").read_text())
    evaluated = json.loads(invoke("evaluate", run, "--split", "test", "--json").stdout)
    assert evaluated["metrics"]["accuracy"] == summary["test_accuracy"] and evaluated["n"] == 10000
    result = invoke("predict", run, cifar10_folder / "test_batch", "--out", tmp_path / "preds.csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "preds.csv").read_text())))
    assert len(rows) == 10000
    assert np.mean([r["prediction"] == r["target"] for r in rows]) == summary["test_accuracy"]


@pytest.mark.parametrize("name", ["huge_shape_header", "zip_bomb"])
def test_hostile_npz_inputs_are_refused_before_allocation_as_dataset_files_are(cifar_run, tmp_path, monkeypatch,
                                                                              name):
    from nnrun.datasets import safe
    from tests import hostile_cases

    monkeypatch.setattr(safe, "MAX_BOMB_FREE_BYTES", 1 << 20)  # a 2 MiB bomb stands for a 6 GB one
    run, _ = cifar_run
    path, expected = hostile_cases.NPZ_CASES[name](tmp_path)
    message = predict_error(run, path)
    assert str(path) in message and expected in message


def test_target_column_is_kept_when_only_some_inputs_hold_targets(cifar_run, tmp_path):
    """Issue 27, defect 10: `predict photo.png test_batch` keeps `target`, empty for the image's row."""
    run, folder = cifar_run
    X, y = read_cifar10_batch(folder / "test_batch")
    png = write_png(X[0], tmp_path / "photo.png")
    out = tmp_path / "preds.csv"
    result = invoke("predict", run, png, folder / "test_batch", "--out", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert "target" in rows[0] and len(rows) == 1 + len(y)
    assert rows[0]["target"] == ""                                         # the image: unknown
    assert [r["target"] for r in rows[1:]] == [CIFAR10_CLASSES[t] for t in y]
    as_json = predict_json(run, png, folder / "test_batch")["predictions"]
    assert as_json[0]["target"] is None and as_json[1]["target"] == CIFAR10_CLASSES[y[0]]
    invoke("predict", run, png, folder / "test_batch", "--out", tmp_path / "preds.npz")
    with np.load(tmp_path / "preds.npz") as z:
        assert z["target_known"].tolist() == [False] + [True] * len(y)
        assert z["target"][0] == -1 and z["target"][1:].tolist() == list(y)
