"""The data files `nnrun predict` and `nnrun evaluate --data` read: .npz files, CIFAR-10 batches, images.

`read_inputs(paths, model_input)` turns files into raw rows for a trained model, checked against
its input (`ModelInput`: features per row, image shape, pixel range), each problem a
`UserInputError` naming the file and what was expected:

- an `.npz` file with `X` (N, D) rows of real numbers; optionally targets and names as a dataset
  file has them (`y`, `attributes`, `targets`, `class_names`, ...; checked as
  `nnrun.datasets.npz.load_npz` checks them); without targets, X may also be (N, C, H, W) images;
- a CIFAR-10 python batch file (`data_batch_1`, `test_batch`, ...): 3,072 uint8 pixels per row, with
  its labels (class targets, and the attribute targets of `CIFAR10_ATTRIBUTES`) and each image's
  contrast (the regression target, `image_contrast`);
- a PNG or JPEG image, decoded with Pillow: converted to the model's channels (RGB or grayscale),
  resized to its height and width (bicubic) when the size differs, and laid out as one row of
  channel-major pixel values (C, H, W), 0..255 (0..16 for `digits`, whose pixels range so). An
  image of more than `MAX_IMAGE_PIXELS` pixels is refused from its header, before it is decoded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnrun.datasets.cifar10 import (
    CIFAR10_ATTRIBUTE_NAMES,
    CIFAR10_ATTRIBUTES,
    CIFAR10_CLASSES,
    CIFAR10_REGRESSION_TARGETS,
    image_contrast,
    read_cifar10_batch,
)
from nnrun.datasets.npz import read_npz
from nnrun.datasets.safe import read_npz_arrays
from nnrun.errors import UserInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""File name endings read as images."""
PNG_MAGIC, JPEG_MAGIC, ZIP_MAGIC, PICKLE_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"PK\x03\x04", b"\x80"
"""The first bytes of a PNG, a JPEG, an .npz (a zip archive) and a pickle (a CIFAR-10 batch)."""
MAX_IMAGE_PIXELS = 40_000_000
"""Most pixels of an image to predict on (a 40-megapixel photo: 120 MB decoded as RGB), checked from its header."""
PIXEL_MAX = {"digits": 16.0}
"""Datasets whose pixels do not range over 0..255: an image's 0..255 values are scaled to 0..max."""
TARGET_KEYS = {"classes": "y", "attributes": "attributes", "regression": "targets"}
"""The .npz key of each kind of target."""
NAME_KEYS = {"classes": "class_names", "attributes": "attribute_names", "regression": "target_names"}
"""The .npz key naming each kind of target."""


@dataclass(frozen=True)
class ModelInput:
    """What a trained model takes: `n_features` values per row, `image_shape` (C, H, W) when rows are
    images, and the `dataset` it was trained on (for the pixel range of images)."""

    n_features: int
    image_shape: tuple[int, int, int] | None
    dataset: str


@dataclass
class Inputs:
    """Rows read from files: `X` (N, D) (uint8 or float32, raw), the file each row came from (`source`) and
    its row number there (`row`); `targets[kind]` and `names[kind]` where some file holds targets of that
    kind (names: those the files state, None when only implied, and `named_by[kind]` the file that states
    them), with `known[kind]` (N,) true for the rows whose file holds them (the others hold zeros, to be
    ignored); `resized`: image files that were resized."""

    X: np.ndarray
    source: list[str]
    row: np.ndarray
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    names: dict[str, list[str] | None] = field(default_factory=dict)
    named_by: dict[str, str] = field(default_factory=dict)
    resized: list[str] = field(default_factory=list)
    known: dict[str, np.ndarray] = field(default_factory=dict)


def read_inputs(paths: list[Path] | tuple[Path, ...], model_input: ModelInput) -> Inputs:
    """The rows of every file in `paths`, in order; targets are kept for the kinds any file has, `known` saying
    which rows have them (an image beside a CIFAR-10 batch has none)."""
    if not paths:
        raise UserInputError("no input files given: name .npz files, CIFAR-10 batch files or PNG/JPEG images")
    parts = [read_input_file(Path(p), model_input) for p in paths]
    kinds = list(dict.fromkeys(k for p in parts for k in p.targets))
    names: dict[str, list[str] | None] = {}
    named_by: dict[str, str] = {}
    for kind in kinds:
        stated = [(p.source[0], p.names.get(kind)) for p in parts if p.names.get(kind) is not None]
        for source, listed in stated[1:]:
            if listed != stated[0][1]:
                raise UserInputError(f"{source}: {NAME_KEYS[kind]} {listed} do not match those of {stated[0][0]} "
                                     f"({stated[0][1]})")
        names[kind] = stated[0][1] if stated else None
        if stated:
            named_by[kind] = stated[0][0]
    dtype = np.uint8 if all(p.X.dtype == np.uint8 for p in parts) else np.float32
    targets, known = {}, {}
    for kind in kinds:
        given = next(p.targets[kind] for p in parts if kind in p.targets)
        targets[kind] = np.concatenate([p.targets[kind] if kind in p.targets
                                        else np.zeros((len(p.X), *given.shape[1:]), dtype=given.dtype)
                                        for p in parts])
        known[kind] = np.concatenate([np.full(len(p.X), kind in p.targets) for p in parts])
    return Inputs(np.concatenate([p.X.astype(dtype, copy=False) for p in parts]),
                  [s for p in parts for s in p.source], np.concatenate([p.row for p in parts]),
                  targets, names, named_by, [r for p in parts for r in p.resized], known)


def read_input_file(path: Path, model_input: ModelInput) -> Inputs:
    """One file's rows; its kind is told by its first bytes (and an image's name ending)."""
    if not path.is_file():
        raise UserInputError(f"input file not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise UserInputError(f"cannot read input file {path}: {e.strerror or e}") from None
    if head.startswith((PNG_MAGIC, JPEG_MAGIC)) or path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image(path, model_input)
    if head.startswith(ZIP_MAGIC) or path.suffix.lower() == ".npz":
        return read_npz_input(path, model_input)
    if head.startswith(PICKLE_MAGIC):
        return read_cifar10_input(path, model_input)
    raise UserInputError(f"{path}: not an input nnrun reads; expected an .npz file with X, a CIFAR-10 batch "
                         "file (data_batch_N, test_batch) or a PNG/JPEG image")


def check_rows(X: np.ndarray, path: Path, model_input: ModelInput, key: str = "X") -> np.ndarray:
    """X as (N, D) rows the model takes (uint8 kept, other reals as float32), or an error naming `path`."""
    d, shape = model_input.n_features, model_input.image_shape
    if X.dtype.kind not in "biuf":
        raise UserInputError(f"{path}: key '{key}' must hold real numbers, got dtype {X.dtype}")
    if shape is not None and X.ndim == 4 and X.shape[1:] == tuple(shape):
        X = X.reshape(len(X), -1)
    if X.ndim != 2 or X.shape[1] != d or len(X) == 0:
        images = f" or (N, {', '.join(map(str, shape))}) images" if shape is not None else ""
        raise UserInputError(f"{path}: key '{key}' must be (N, {d}) rows{images} for this model "
                             f"(trained on {model_input.dataset}), got shape {X.shape}")
    if X.dtype == np.uint8:
        return X
    with np.errstate(over="ignore", invalid="ignore"):
        X = X.astype(np.float32)
    if not np.isfinite(X).all():
        raise UserInputError(f"{path}: key '{key}' holds NaN or infinite values (after conversion to float32)")
    return X


def read_npz_input(path: Path, model_input: ModelInput) -> Inputs:
    """An .npz with X: with targets it is read and checked as a dataset file; names count only where stated."""
    arrays = read_npz_arrays(path, what="input")  # the size, memory and zip-bomb checks of a dataset file
    keys = set(arrays)
    X = arrays.get("X")
    if X is None:
        raise UserInputError(f"{path}: missing key 'X' (the rows to predict); keys found: "
                             f"{', '.join(sorted(keys)) or 'none'}")
    X = check_rows(X, path, model_input)
    targets: dict[str, np.ndarray] = {}
    names: dict[str, list[str] | None] = {}
    if keys & {"y", "attributes", "Y", "targets"}:
        _, targets, all_names, _ = read_npz(path)
        names = {kind: all_names[NAME_KEYS[kind]] if NAME_KEYS[kind] in keys else None for kind in targets}
    return Inputs(X, [str(path)] * len(X), np.arange(len(X)), targets, names)


def read_cifar10_input(path: Path, model_input: ModelInput) -> Inputs:
    """A CIFAR-10 batch file: uint8 rows of 3,072 pixels, its labels as class and attribute targets, and each
    image's contrast as the regression target."""
    if model_input.n_features != 3072:
        raise UserInputError(f"{path} is a CIFAR-10 batch (3,072 pixels per row); this model takes "
                             f"{model_input.n_features} features per row (trained on {model_input.dataset})")
    X, labels = read_cifar10_batch(path)
    table = np.array([CIFAR10_ATTRIBUTES[c] for c in CIFAR10_CLASSES], dtype=np.float32)
    return Inputs(X, [str(path)] * len(X), np.arange(len(X)),
                  {"classes": labels, "attributes": table[labels],
                   "regression": image_contrast(X)[:, None].astype(np.float32)},
                  {"classes": list(CIFAR10_CLASSES), "attributes": list(CIFAR10_ATTRIBUTE_NAMES),
                   "regression": list(CIFAR10_REGRESSION_TARGETS)})


def read_image(path: Path, model_input: ModelInput) -> Inputs:
    """One PNG/JPEG image as a row of channel-major pixel values, converted and resized to the model's input."""
    from PIL import Image, UnidentifiedImageError

    shape = model_input.image_shape
    if shape is None:
        raise UserInputError(f"{path}: this model was trained on {model_input.dataset}, whose rows are not "
                             "images; give an .npz file with X instead")
    channels, height, width = shape
    if channels not in (1, 3):
        raise UserInputError(f"{path}: images can be read for models of 1 or 3 channels; this one takes "
                             f"{channels} (image_shape {shape})")
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: the size is checked here, below its bound
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)  # reads the header only
        with image:
            w, h = image.size
            if w * h > MAX_IMAGE_PIXELS:
                raise UserInputError(f"{path}: {w:,} x {h:,} pixels; an image to predict on has at most "
                                     f"{MAX_IMAGE_PIXELS:,} (shrink it to the model's {width} x {height} first)")
            image.load()
            converted = image.convert("RGB" if channels == 3 else "L")
        resized = converted.size != (width, height)
        if resized:
            converted = converted.resize((width, height), Image.Resampling.BICUBIC)
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise UserInputError(f"{path}: cannot decode as a PNG or JPEG image: {e}") from None
    pixels = np.asarray(converted, dtype=np.uint8).reshape(height, width, channels)
    row = pixels.transpose(2, 0, 1).reshape(1, -1)
    pixel_max = PIXEL_MAX.get(model_input.dataset)
    if pixel_max is not None:
        row = row.astype(np.float32) * np.float32(pixel_max / 255.0)
    return Inputs(row, [str(path)], np.zeros(1, dtype=np.int64), resized=[str(path)] if resized else [])


def check_names(inputs: Inputs, kind: str, expected: list[str]) -> None:
    """An error naming the file when the files state names of `kind` that differ from the model's `expected`."""
    stated = inputs.names.get(kind)
    if stated is not None and list(stated) != list(expected):
        raise UserInputError(f"{inputs.named_by[kind]}: its {NAME_KEYS[kind]} {list(stated)} do not match the run's "
                             f"{list(expected)}")
