"""Your own dataset as a NumPy `.npz` file (`data.path`), checked key by key before use.

Keys are listed in `load_npz`; anything malformed is a `UserInputError` naming the file and key.
The pool is carved into test, then val, then train with the `split` stream, like `digits`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nnrun.datasets.dataset import DataOptions, Dataset, SplitRecord
from nnrun.datasets.safe import read_npz_arrays
from nnrun.datasets.split import split_indices
from nnrun.errors import UserInputError
from nnrun.rng import stream

MAX_CLASSES = 100_000
"""Most classes a label column may have (labels 0..MAX_CLASSES-1)."""
MAX_OUTPUTS = 100_000
"""Most attributes or regression outputs."""

def load_npz(options: DataOptions, seed: int) -> Dataset:
    """A NumPy `.npz` file at `data.path`, carved into train/val/test like digits.

    Keys (a `UserInputError` names the file and key of anything malformed):
    - `X`: (N, D) numbers, all finite (required);
    - targets, at least one of: `y` integer class labels (N,) in 0..C-1; `attributes` (or `Y`)
      a binary attribute matrix (N, A) of 0/1 (or -1/+1, or bool); `targets` float regression
      targets (N,) or (N, T). All finite. The first present in that order is the default kind;
      the loss picks the kind it needs;
    - optional: `class_names` (C,), `attribute_names` (A,), `target_names` (T,) strings;
      `image_shape` three ints (channels, height, width) whose product is D.
    """
    if not options.path:
        raise UserInputError("data.path: data.dataset=npz needs the path of an .npz file")
    path = Path(options.path)
    X, targets, names, image_shape = read_npz(path)
    train, val, test = split_indices(len(X), options, stream(seed, "split"), carve_test=True)
    splits = {kind: (t[train], t[val], t[test]) for kind, t in targets.items()}
    kind = next(iter(splits))
    y_train, y_val, y_test = splits.pop(kind)
    return Dataset("npz", X[train], y_train, X[val], y_val, X[test], y_test,
                   names["class_names"], image_shape, target_kind=kind,
                   attribute_names=names["attribute_names"], target_names=names["target_names"],
                   alternatives=splits, split=SplitRecord.carved(len(X), train, val, test))


def read_npz(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, list[str]], tuple | None]:
    """Read and check a dataset `.npz` (keys in `load_npz`); every array is bounded before it is read
    (`nnrun.datasets.safe.read_npz_arrays`).

    Returns (X float32 (N, D), targets by kind in the order classes, attributes, regression,
    names by key with defaults filled in, image_shape or None).
    """
    if not path.is_file():
        raise UserInputError(f"data.path: npz file not found: {path}")
    arrays = read_npz_arrays(path)
    keys = set(arrays)

    def bad(key: str, problem: str) -> UserInputError:
        return UserInputError(f"{path}: key '{key}' {problem}")

    if "X" not in keys:
        raise UserInputError(f"{path}: missing key 'X' (the (N, D) feature matrix); keys found: "
                             f"{', '.join(sorted(keys)) or 'none'}")
    X = arrays["X"]
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise bad("X", f"must be a non-empty (N, D) matrix, got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating) or X.dtype == bool):
        raise bad("X", f"must hold numbers (real, not complex), got dtype {X.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        X = X.astype(np.float32)
    check_finite(X, "X", path, "after conversion to float32")
    n = len(X)
    targets: dict[str, np.ndarray] = {}
    if "y" in keys:
        targets["classes"] = class_labels(arrays["y"], n, path)
    attr_keys = [k for k in ("attributes", "Y") if k in keys]
    if len(attr_keys) == 2:
        raise UserInputError(f"{path}: holds both 'attributes' and 'Y'; keep one attribute matrix")
    if attr_keys:
        key = attr_keys[0]
        a = arrays[key]
        if a.ndim != 2 or len(a) != n or a.shape[1] == 0:
            raise bad(key, f"must be an (N, A) = ({n}, A) attribute matrix, got shape {a.shape}")
        if a.shape[1] > MAX_OUTPUTS:
            raise bad(key, f"has {a.shape[1]} attributes (at most {MAX_OUTPUTS})")
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating) or a.dtype == bool):
            raise bad(key, f"must hold 0/1 values, got dtype {a.dtype}")
        if a.dtype != bool:
            check_finite(a, key, path)
        values = set(np.unique(a).tolist())
        if values <= {0, 1}:
            targets["attributes"] = a.astype(np.float32)
        elif values <= {-1, 1}:
            targets["attributes"] = (a > 0).astype(np.float32)
        else:
            raise bad(key, f"must hold 0/1 (or -1/+1) values, found {sorted(values)[:5]}")
    if "targets" in keys:
        t = arrays["targets"]
        if t.ndim not in (1, 2) or len(t) != n or (t.ndim == 2 and t.shape[1] == 0):
            raise bad("targets", f"must be (N,) or (N, T) with N = {n}, got shape {t.shape}")
        if t.ndim == 2 and t.shape[1] > MAX_OUTPUTS:
            raise bad("targets", f"has {t.shape[1]} outputs (at most {MAX_OUTPUTS})")
        if not (np.issubdtype(t.dtype, np.integer) or np.issubdtype(t.dtype, np.floating)):
            raise bad("targets", f"must hold numbers (real, not complex), got dtype {t.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):
            t = t.astype(np.float32).reshape(n, -1)
        check_finite(t, "targets", path, "after conversion to float32")
        targets["regression"] = t
    if not targets:
        raise UserInputError(f"{path}: no targets; add 'y' (class labels), 'attributes' (0/1 matrix) "
                             f"or 'targets' (regression); keys found: {', '.join(sorted(keys))}")
    counts = {"class_names": int(targets["classes"].max()) + 1 if "classes" in targets else 0,
              "attribute_names": targets["attributes"].shape[1] if "attributes" in targets else 0,
              "target_names": targets["regression"].shape[1] if "regression" in targets else 0}
    defaults = {"class_names": lambda i: str(i), "attribute_names": lambda i: f"a{i}",
                "target_names": lambda i: f"t{i}"}
    names: dict[str, list[str]] = {}
    for key, count in counts.items():
        if key not in keys:
            names[key] = [defaults[key](i) for i in range(count)]
            continue
        given = arrays[key]
        if given.ndim != 1 or given.dtype.kind not in "US" or len(given) > MAX_CLASSES:
            raise bad(key, f"must be a 1-D array of at most {MAX_CLASSES} strings, got dtype {given.dtype} "
                           f"shape {given.shape}")
        listed = [str(v) for v in given.tolist()]
        if key == "class_names" and "classes" in targets:
            if len(listed) < count:
                raise bad("y", f"holds label {count - 1} but 'class_names' names only {len(listed)} classes")
        elif len(listed) != count:
            raise bad(key, f"names {len(listed)} entries, the targets have {count}")
        if len(set(listed)) != len(listed):
            raise bad(key, "repeats a name")
        names[key] = listed
    image_shape = None
    if "image_shape" in keys:
        shape = arrays["image_shape"]
        if (shape.shape != (3,) or not np.issubdtype(shape.dtype, np.integer) or np.any(shape < 1)
                or math.prod(int(v) for v in shape) != X.shape[1]):
            raise bad("image_shape", f"must be 3 positive ints (channels, height, width) multiplying to "
                                     f"D = {X.shape[1]}, got {shape.tolist()[:8]}")
        image_shape = tuple(int(v) for v in shape)
    return X, targets, names, image_shape


def check_finite(a: np.ndarray, key: str, path: Path, when: str = "") -> None:
    """Refuse NaN or infinite entries of `a`, saying how many and where the first one is."""
    finite = np.isfinite(a)
    if not finite.all():
        bad = int(a.size - np.count_nonzero(finite))
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise UserInputError(f"{path}: key '{key}' holds {bad} NaN or infinite values" + (f" ({when})" if when else "")
                             + f", the first at index {first}")


def class_labels(y: np.ndarray, n: int, path: Path) -> np.ndarray:
    """`y` as int64 class labels (N,) in 0..C-1, C <= `MAX_CLASSES`: an integer dtype, or floats that are whole
    numbers; anything else is a `UserInputError` naming the key."""
    if y.ndim != 1 or len(y) != n:
        raise UserInputError(f"{path}: key 'y' must be (N,) = ({n},) class labels, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        whole = np.isfinite(y) & (y == np.floor(y))
        if not whole.all():
            first = int(np.argmin(whole))
            raise UserInputError(f"{path}: key 'y' must hold integer class labels (whole numbers), got {y[first]!r} "
                                 f"at index {first}; store regression targets under 'targets'")
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise UserInputError(f"{path}: key 'y' must hold integer class labels, got dtype {y.dtype}; "
                             "store regression targets under 'targets'")
    low, high = y.min(), y.max()
    if low < 0:
        raise UserInputError(f"{path}: key 'y' holds a negative class label ({low}); labels must be 0..C-1")
    if high >= MAX_CLASSES:
        raise UserInputError(f"{path}: key 'y' holds class label {high}; at most {MAX_CLASSES} classes "
                             f"(labels 0..{MAX_CLASSES - 1})")
    return y.astype(np.int64)
