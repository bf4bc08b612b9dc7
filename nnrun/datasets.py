"""Datasets: raw arrays and a seeded train/val/test split. Nothing is fitted here.

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download).
- `cifar10`: the official python batches, found under `data.root` as the
  `cifar-10-batches-py/` folder, or as the official `cifar-10-python.tar.gz` archive there
  (extracted safely), or downloaded when `data.download` is true (md5 checked first).
  Pixels become float32 `(N, 3072)` in the official layout (1024 red, 1024 green, 1024 blue,
  row-major 32x32), values 0..255. A uint8 cache makes the second load fast. Besides class
  labels it offers attribute targets from the class-to-attribute table `CIFAR10_ATTRIBUTES`.
- `diabetes`: scikit-learn's bundled diabetes regression data (442 patients, 10 features
  as scikit-learn ships them: centred and scaled; target: disease progression after a year).
- `npz`: a NumPy `.npz` file at `data.path` (keys in `load_npz`).

Targets come in three kinds: `classes` (int64 (N,)), `attributes` (float32 (N, A) of 0/1)
and `regression` (float32 (N, T)). A dataset's `y_*` arrays hold one kind; other kinds it can
offer wait in `alternatives` until `Dataset.use_targets(kind)` swaps them in.

Splits: a dataset with an official test split keeps it as test and carves val from the
training pool; others carve test first, then val. All draws come from the `split` stream.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnrun.errors import UserInputError
from nnrun.io import atomic_write
from nnrun.rng import stream

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_ATTRIBUTE_NAMES = ("animal", "vehicle", "can_fly", "has_wheels", "on_water", "has_fur", "four_legs")
CIFAR10_ATTRIBUTES = {
    #             animal vehicle can_fly has_wheels on_water has_fur four_legs
    "airplane":   (0,     1,      1,      1,         0,       0,      0),
    "automobile": (0,     1,      0,      1,         0,       0,      0),
    "bird":       (1,     0,      1,      0,         0,       0,      0),
    "cat":        (1,     0,      0,      0,         0,       1,      1),
    "deer":       (1,     0,      0,      0,         0,       1,      1),
    "dog":        (1,     0,      0,      0,         0,       1,      1),
    "frog":       (1,     0,      0,      0,         0,       0,      1),
    "horse":      (1,     0,      0,      0,         0,       1,      1),
    "ship":       (0,     1,      0,      0,         1,       0,      0),
    "truck":      (0,     1,      0,      1,         0,       0,      0),
}
"""The attributes of each CIFAR-10 class (1 = has it), a property of the class, not of each image:
airplanes have landing-gear wheels, ships travel on water, frogs have four legs and no fur."""
CACHE_ENV = "NNRUN_CACHE_DIR"
"""Environment variable naming the folder for cached arrays (default ~/.cache/nnrun)."""


TARGET_KINDS = ("classes", "attributes", "regression")
"""The kinds of targets: int class labels (N,), a 0/1 attribute matrix (N, A), float outputs (N, T)."""
TARGET_WORDS = {"classes": "class-label", "attributes": "attribute", "regression": "regression"}
"""How messages name each kind of target."""


@dataclass
class Dataset:
    """A split dataset. X_*: float32 (N, D); y_*: targets of kind `target_kind`.

    y_*: int64 (N,) class labels for `classes`, float32 (N, A) of 0/1 for `attributes`,
    float32 (N, T) for `regression`. `image_shape` is (channels, height, width) of one row
    reshaped, or None for non-images. `class_names`, `attribute_names` and `target_names`
    name the classes, attributes and regression outputs the dataset has (empty when none).
    `alternatives` maps another target kind the dataset offers to its (train, val, test) arrays.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    image_shape: tuple[int, int, int] | None
    target_kind: str = "classes"
    attribute_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)
    alternatives: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_targets(self) -> int:
        """Classes, attributes or regression outputs of the current targets."""
        if self.target_kind == "classes":
            return self.n_classes
        return self.y_train.shape[1]

    def target_kinds(self) -> list[str]:
        """Every kind of target this dataset can train on, the current one first."""
        return [self.target_kind, *self.alternatives]

    def use_targets(self, kind: str, loss_name: str) -> None:
        """Make `kind` the current targets (swapping in an alternative), or raise `UserInputError`."""
        if kind == self.target_kind:
            return
        if kind not in self.alternatives:
            offered = " and ".join(TARGET_WORDS[k] for k in self.target_kinds())
            raise UserInputError(
                f"loss.name={loss_name} needs {TARGET_WORDS[kind]} targets, but data.dataset={self.name} "
                f"provides {offered} targets only; choose a loss for those "
                f"({', '.join(losses_for(self.target_kinds()))}) or a dataset with {TARGET_WORDS[kind]} targets")
        current = (self.y_train, self.y_val, self.y_test)
        self.y_train, self.y_val, self.y_test = self.alternatives.pop(kind)
        self.alternatives[self.target_kind] = current
        self.target_kind = kind

    def sizes(self) -> dict[str, int]:
        """Examples per split."""
        return {"train": len(self.X_train), "val": len(self.X_val), "test": len(self.X_test)}


def load_dataset(cfg, seed: int) -> Dataset:
    """Load and split the dataset that `cfg` (a `DataConfig`) names, with the `split` stream of `seed`."""
    return DATASETS[cfg.dataset](cfg, seed)


def losses_for(kinds: list[str] | tuple[str, ...]) -> list[str]:
    """Names of the losses that train on any of these target kinds."""
    from nnrun.nn.losses import LOSSES

    return [name for name, loss in LOSSES.items() if loss.target_kind in kinds]


def resolve_count(size: int | float, total: int, key: str) -> int:
    """A split size given as a count or a fraction in (0, 1) -> a count in [1, total - 1]."""
    if isinstance(size, float) and not size.is_integer():
        if not 0 < size < 1:
            raise UserInputError(f"{key}: a fraction must be in (0, 1), got {size}")
        count = max(1, int(round(size * total)))  # a fraction always keeps at least one example
    else:
        count = int(size)
    if not 1 <= count < total:
        raise UserInputError(f"{key}: needs between 1 and {total - 1} examples here, got {size}")
    return count


def split_indices(n_pool: int, cfg, rng: np.random.Generator, carve_test: bool):
    """Seeded index arrays (train, val, test-or-None) over a pool of `n_pool` examples."""
    order = rng.permutation(n_pool)
    test = None
    if carve_test:
        n_test = resolve_count(cfg.test_size, n_pool, "data.test_size")
        test, order = order[:n_test], order[n_test:]
    n_val = resolve_count(cfg.val_size, len(order), "data.val_size")
    val, train = order[:n_val], order[n_val:]
    if cfg.train_size is not None:
        if cfg.train_size > len(train):
            raise UserInputError(
                f"data.train_size: only {len(train)} training examples are available, got {cfg.train_size}")
        train = train[: cfg.train_size]
    return np.sort(train), np.sort(val), None if test is None else np.sort(test)


def load_digits(cfg, seed: int) -> Dataset:
    """scikit-learn's 8x8 digits, pixel values 0..16, carved into train/val/test."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    X = bunch.data.astype(np.float32)
    y = bunch.target.astype(np.int64)
    train, val, test = split_indices(len(X), cfg, stream(seed, "split"), carve_test=True)
    return Dataset("digits", X[train], y[train], X[val], y[val], X[test], y[test],
                   [str(c) for c in bunch.target_names], (1, 8, 8))


def load_cifar10(cfg, seed: int) -> Dataset:
    """CIFAR-10: official test batch as test, val carved from the 50,000 training images."""
    folder = find_cifar10(cfg.resolved_root(), cfg.download)
    X_pool, y_pool, X_test, y_test = read_cifar10_cached(folder)
    train, val, _ = split_indices(len(X_pool), cfg, stream(seed, "split"), carve_test=False)
    # Index the uint8 arrays first, then convert: one float32 copy per split, no more.
    table = np.array([CIFAR10_ATTRIBUTES[c] for c in CIFAR10_CLASSES], dtype=np.float32)
    return Dataset("cifar10",
                   X_pool[train].astype(np.float32), y_pool[train],
                   X_pool[val].astype(np.float32), y_pool[val],
                   X_test.astype(np.float32), y_test,
                   list(CIFAR10_CLASSES), (3, 32, 32),
                   attribute_names=list(CIFAR10_ATTRIBUTE_NAMES),
                   alternatives={"attributes": (table[y_pool[train]], table[y_pool[val]], table[y_test])})


def load_diabetes(cfg, seed: int) -> Dataset:
    """scikit-learn's diabetes regression data: 442 x 10 features, one float target, carved like digits."""
    from sklearn.datasets import load_diabetes as sk_load_diabetes

    bunch = sk_load_diabetes()
    X = bunch.data.astype(np.float32)
    y = bunch.target.astype(np.float32)[:, None]
    train, val, test = split_indices(len(X), cfg, stream(seed, "split"), carve_test=True)
    return Dataset("diabetes", X[train], y[train], X[val], y[val], X[test], y[test], [], None,
                   target_kind="regression", target_names=["progression"])


def load_npz(cfg, seed: int) -> Dataset:
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
    if not cfg.path:
        raise UserInputError("data.path: data.dataset=npz needs the path of an .npz file")
    path = Path(cfg.path)
    X, targets, names, image_shape = read_npz(path)
    train, val, test = split_indices(len(X), cfg, stream(seed, "split"), carve_test=True)
    splits = {kind: (t[train], t[val], t[test]) for kind, t in targets.items()}
    kind = next(iter(splits))
    y_train, y_val, y_test = splits.pop(kind)
    return Dataset("npz", X[train], y_train, X[val], y_val, X[test], y_test,
                   names["class_names"], image_shape, target_kind=kind,
                   attribute_names=names["attribute_names"], target_names=names["target_names"],
                   alternatives=splits)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "cifar10": load_cifar10,
    "diabetes": load_diabetes,
    "npz": load_npz,
}
"""Registry: config name -> loader `(DataConfig, seed) -> Dataset`."""

DATASET_TARGETS: dict[str, tuple[str, ...] | None] = {
    "digits": ("classes",),
    "cifar10": ("classes", "attributes"),
    "diabetes": ("regression",),
    "npz": None,
}
"""The target kinds each dataset offers; None: known only once the file is read."""


# ---- npz files --------------------------------------------------------------------------------

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


# ---- CIFAR-10 files -------------------------------------------------------------------------

def find_cifar10(root: Path, download: bool) -> Path:
    """The `cifar-10-batches-py` folder under `root`: present, extracted from the archive, or downloaded."""
    for candidate in (root / CIFAR10_FOLDER, root):
        if (candidate / CIFAR10_TEST_FILE).is_file() or (candidate / "data_batch_1").is_file():
            return candidate
    archive = root / CIFAR10_ARCHIVE
    if not archive.is_file():
        if not download:
            raise UserInputError(
                f"CIFAR-10 not found under data root {root}: expected the folder {root / CIFAR10_FOLDER} "
                f"or the archive {archive}. Set data.root to the folder that holds them, "
                f"or set data.download=true to fetch the official archive.")
        download_file(CIFAR10_URL, archive, CIFAR10_MD5)
    extract_tarball(archive, root)
    folder = root / CIFAR10_FOLDER
    if not folder.is_dir():
        raise UserInputError(f"{archive} does not contain the folder {CIFAR10_FOLDER}/")
    return folder


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex md5 digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str, progress: bool = True) -> Path:
    """Download `url` to `dest`, verifying `md5` before `dest` appears.

    The bytes go to a temporary file beside `dest`; only a complete file with the right
    checksum is renamed into place, so a partial or corrupt download never looks complete.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=60)
            except (urllib.error.URLError, OSError) as e:
                raise UserInputError(f"could not download {url}: {e}") from None
            with response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                              TransferSpeedColumn(), disable=not progress, transient=True) as bar:
                    task = bar.add_task(f"downloading {dest.name}", total=total)
                    received = 0
                    while block := response.read(1 << 20):
                        out.write(block)
                        received += len(block)
                        bar.update(task, advance=len(block))
            if total is not None and received != total:
                raise UserInputError(f"download of {url} stopped after {received} of {total} bytes")
        actual = md5sum(tmp)
        if actual != md5:
            raise UserInputError(
                f"checksum mismatch for {url}: md5 {actual}, expected {md5}; the download was discarded")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def extract_tarball(archive: Path, dest: Path) -> None:
    """Extract `archive` into `dest`, refusing members that would land outside `dest`."""
    dest = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                target = (dest / member.name).resolve()
                if not (target == dest or target.is_relative_to(dest)):
                    raise UserInputError(f"{archive}: member {member.name!r} would be written outside {dest}")
                if not (member.isfile() or member.isdir()):
                    raise UserInputError(f"{archive}: member {member.name!r} is not a plain file or folder")
            with tempfile.TemporaryDirectory(dir=dest, prefix=".extract-") as tmp:
                tar.extractall(tmp, members=members, filter="data")
                for top in {Path(m.name).parts[0] for m in members}:
                    final = dest / top
                    if final.exists():
                        raise UserInputError(
                            f"cannot extract {archive}: {final} already exists but holds no complete "
                            "CIFAR-10 batches; move it away and run again")
                    os.replace(Path(tmp) / top, final)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserInputError(f"cannot extract {archive}: {e}") from None


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that builds only NumPy arrays: a data file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python-format batch -> (uint8 (N, 3072), int64 labels (N,)); a bad file is a `UserInputError`."""
    if not path.is_file():
        raise UserInputError(f"CIFAR-10 batch file missing: {path}")
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise UserInputError(f"corrupt CIFAR-10 batch file {path}: {type(e).__name__}: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise UserInputError(
            f"corrupt CIFAR-10 batch file {path}: expected data (N, 3072) and N labels, "
            f"got data {data.shape} and labels {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise UserInputError(f"corrupt CIFAR-10 batch file {path}: labels outside 0..9")
    return data, labels


def read_cifar10(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All batches -> (X_train uint8 (50000, 3072), y_train, X_test uint8 (10000, 3072), y_test)."""
    parts = [read_cifar10_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    X_test, y_test = read_cifar10_batch(folder / CIFAR10_TEST_FILE)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), X_test, y_test)


def cache_dir() -> Path:
    """Where cached arrays go: $NNRUN_CACHE_DIR, else ~/.cache/nnrun."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "nnrun")


def cifar10_cache_path(folder: Path) -> Path:
    """Cache file keyed by the folder's absolute path and each batch file's size and mtime."""
    key = hashlib.sha1(str(folder.resolve()).encode())
    for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE):
        st = (folder / name).stat()
        key.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return cache_dir() / f"cifar10-{key.hexdigest()[:16]}.npz"


def read_cifar10_cached(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`read_cifar10` through a uint8 `.npz` cache; an unwritable cache folder just means no cache."""
    try:
        cache = cifar10_cache_path(folder)
    except OSError:
        return read_cifar10(folder)
    if cache.is_file():
        try:
            with np.load(cache) as z:
                return z["X_train"], z["y_train"], z["X_test"], z["y_test"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
            cache.unlink(missing_ok=True)
    arrays = read_cifar10(folder)
    try:
        named = dict(zip(("X_train", "y_train", "X_test", "y_test"), arrays, strict=True))
        atomic_write(cache, lambda f: np.savez(f, **named))
    except OSError:
        pass
    return arrays
