"""Your own dataset as a NumPy `.npz` file (`data.path`), checked key by key before use.

Keys are listed in `load_npz`; anything malformed is a `UserInputError` naming the file and key.
The pool is carved into test, then val, then train with the `split` stream, like `digits`.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from nnrun.datasets.dataset import DataOptions, Dataset, SplitRecord
from nnrun.datasets.split import split_indices
from nnrun.errors import UserInputError
from nnrun.rng import stream


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
    """Read and check a dataset `.npz` (keys in `load_npz`).

    Returns (X float32 (N, D), targets by kind in the order classes, attributes, regression,
    names by key with defaults filled in, image_shape or None).
    """
    if not path.is_file():
        raise UserInputError(f"data.path: npz file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise UserInputError(f"data.path: cannot read {path} as an .npz file: {e}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserInputError(f"data.path: {path} is a single .npy array, not an .npz archive with an 'X' key")
    with archive:
        keys = set(archive.files)

        def get(key: str) -> np.ndarray:
            try:
                return archive[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
                raise UserInputError(f"{path}: key '{key}' cannot be read: {e}") from None

        def bad(key: str, problem: str) -> UserInputError:
            return UserInputError(f"{path}: key '{key}' {problem}")

        if "X" not in keys:
            raise UserInputError(f"{path}: missing key 'X' (the (N, D) feature matrix); keys found: "
                                 f"{', '.join(sorted(keys)) or 'none'}")
        X = get("X")
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise bad("X", f"must be a non-empty (N, D) matrix, got shape {X.shape}")
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise bad("X", f"must hold numbers, got dtype {X.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):
            X = X.astype(np.float32)
        if not np.isfinite(X).all():
            raise bad("X", "holds NaN or infinite values (after conversion to float32)")
        n = len(X)
        targets: dict[str, np.ndarray] = {}
        if "y" in keys:
            y = get("y")
            if y.ndim != 1 or len(y) != n:
                raise bad("y", f"must be (N,) = ({n},) class labels, got shape {y.shape}")
            if not np.issubdtype(y.dtype, np.integer):
                raise bad("y", f"must hold integer class labels, got dtype {y.dtype}; "
                          "store regression targets under 'targets'")
            if y.min() < 0:
                raise bad("y", f"holds a negative class label ({y.min()}); labels must be 0..C-1")
            targets["classes"] = y.astype(np.int64)
        attr_keys = [k for k in ("attributes", "Y") if k in keys]
        if len(attr_keys) == 2:
            raise UserInputError(f"{path}: holds both 'attributes' and 'Y'; keep one attribute matrix")
        if attr_keys:
            key = attr_keys[0]
            a = get(key)
            if a.ndim != 2 or len(a) != n or a.shape[1] == 0:
                raise bad(key, f"must be an (N, A) = ({n}, A) attribute matrix, got shape {a.shape}")
            if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
                raise bad(key, f"must hold 0/1 values, got dtype {a.dtype}")
            if a.dtype != bool and not np.isfinite(a).all():
                raise bad(key, "holds NaN or infinite values")
            values = set(np.unique(a).tolist())
            if values <= {0, 1}:
                targets["attributes"] = a.astype(np.float32)
            elif values <= {-1, 1}:
                targets["attributes"] = (a > 0).astype(np.float32)
            else:
                raise bad(key, f"must hold 0/1 (or -1/+1) values, found {sorted(values)[:5]}")
        if "targets" in keys:
            t = get("targets")
            if t.ndim not in (1, 2) or len(t) != n or (t.ndim == 2 and t.shape[1] == 0):
                raise bad("targets", f"must be (N,) or (N, T) with N = {n}, got shape {t.shape}")
            if not np.issubdtype(t.dtype, np.number):
                raise bad("targets", f"must hold numbers, got dtype {t.dtype}")
            with np.errstate(over="ignore", invalid="ignore"):
                t = t.astype(np.float32).reshape(n, -1)
            if not np.isfinite(t).all():
                raise bad("targets", "holds NaN or infinite values (after conversion to float32)")
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
            given = get(key)
            if given.ndim != 1 or given.dtype.kind not in "US":
                raise bad(key, f"must be a 1-D array of strings, got dtype {given.dtype} shape {given.shape}")
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
            shape = get("image_shape")
            if shape.shape != (3,) or not np.issubdtype(shape.dtype, np.integer) or int(np.prod(shape)) != X.shape[1]:
                raise bad("image_shape", f"must be 3 ints (channels, height, width) multiplying to "
                          f"D = {X.shape[1]}, got {shape.tolist()}")
            image_shape = tuple(int(v) for v in shape)
    return X, targets, names, image_shape
