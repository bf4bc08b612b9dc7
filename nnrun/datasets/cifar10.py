"""CIFAR-10 in the official python-batches layout: finding, reading, caching.

`load_cifar10` finds the `cifar-10-batches-py/` folder under `DataOptions.root` (or the folder
itself, or the official `cifar-10-python.tar.gz` there, extracted safely, or downloaded when
`download` is set, md5 checked first). Pixels become float32 `(N, 3072)` in the official layout
(1024 red, 1024 green, 1024 blue, row-major 32x32), values 0..255. The official test batch is
the test split; val is carved from the 50,000 training images. A uint8 cache in
`$NNRUN_CACHE_DIR` (one `.npy` file per array, memory-mapped) makes the second load fast.
Besides class labels it offers attribute targets from the class-to-attribute table
`CIFAR10_ATTRIBUTES` and one regression target, `contrast` (`image_contrast`: the RMS contrast
of each image). Batch files are read by an unpickler that only builds NumPy arrays.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from nnrun.datasets.dataset import DataOptions, Dataset, SplitRecord
from nnrun.datasets.download import download_file, extract_tarball, md5sum
from nnrun.datasets.safe import restricted_unpickle
from nnrun.datasets.split import split_indices
from nnrun.errors import UserInputError
from nnrun.io import atomic_write
from nnrun.rng import stream

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_MAX_BYTES = 200_000_000
"""Most bytes a CIFAR-10 download may have (the official archive: 170,498,071)."""
URL_ENV = "NNRUN_CIFAR10_URL"
"""Environment variable naming a mirror of the archive (for air-gapped machines: a local file server)."""
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_REGRESSION_TARGETS = ("contrast",)
"""The regression target CIFAR-10 offers: each image's RMS contrast (`image_contrast`)."""
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
MAX_BATCH_ROWS = 60_000
"""Most images one batch file may hold (the official ones hold 10,000)."""
TRAIN_POOL, TEST_POOL = "data_batches", "test_batch"
"""The pools of a CIFAR-10 split (`SplitRecord`): data_batch_1..5 concatenated (train, val); test_batch (test)."""
CACHE_ENV = "NNRUN_CACHE_DIR"
"""Environment variable naming the folder for cached arrays (default ~/.cache/nnrun)."""


def load_cifar10(options: DataOptions, seed: int) -> Dataset:
    """CIFAR-10: official test batch as test, val carved from the 50,000 training images."""
    folder = find_cifar10(Path(options.root), options.download, options.url)
    X_pool, y_pool, X_test, y_test = read_cifar10_cached(folder)
    train, val, _ = split_indices(len(X_pool), options, stream(seed, "split"), carve_test=False)
    # Index the uint8 arrays first, then convert: one float32 copy per split, no more.
    table = np.array([CIFAR10_ATTRIBUTES[c] for c in CIFAR10_CLASSES], dtype=np.float32)
    X_train, X_val = X_pool[train], X_pool[val]
    contrast = tuple(image_contrast(X)[:, None].astype(np.float32) for X in (X_train, X_val, X_test))
    return Dataset("cifar10",
                   X_train.astype(np.float32), y_pool[train],
                   X_val.astype(np.float32), y_pool[val],
                   X_test.astype(np.float32), y_test,
                   list(CIFAR10_CLASSES), (3, 32, 32),
                   attribute_names=list(CIFAR10_ATTRIBUTE_NAMES), target_names=list(CIFAR10_REGRESSION_TARGETS),
                   alternatives={"attributes": (table[y_pool[train]], table[y_pool[val]], table[y_test]),
                                 "regression": contrast},
                   split=SplitRecord({"train": train, "val": val, "test": np.arange(len(X_test))},
                                     {"train": TRAIN_POOL, "val": TRAIN_POOL, "test": TEST_POOL},
                                     {TRAIN_POOL: len(X_pool), TEST_POOL: len(X_test)}))


def image_contrast(X: np.ndarray, chunk_rows: int = 1024) -> np.ndarray:
    """The RMS contrast of each image: X (N, 3072) uint8 pixels -> (N,) float64, the population standard
    deviation (ddof 0) of the image's 3,072 values (all three channels), in pixel units (0 for a flat image,
    at most 127.5).

    A regression target that depends on the pixels nonlinearly (unlike the mean brightness, which is a
    linear function of them). Sums are taken exactly in integers, in blocks of `chunk_rows` rows.
    """
    out = np.empty(len(X))
    d = X.shape[1]
    for i in range(0, len(X), chunk_rows):
        block = X[i:i + chunk_rows].astype(np.uint16)
        sums = block.sum(axis=1, dtype=np.uint64).astype(np.float64)
        block *= block  # 255**2 fits in uint16
        squares = block.sum(axis=1, dtype=np.uint64).astype(np.float64)
        out[i:i + chunk_rows] = np.sqrt(np.maximum(squares / d - (sums / d) ** 2, 0.0))
    return out


def find_cifar10(root: Path, download: bool, url: str | None = None) -> Path:
    """The `cifar-10-batches-py` folder under `root`: present, extracted from the archive (md5 checked first), or
    downloaded from `url` (default `$NNRUN_CIFAR10_URL`, else `CIFAR10_URL`)."""
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
        download_file(url or os.environ.get(URL_ENV) or CIFAR10_URL, archive, CIFAR10_MD5, max_bytes=CIFAR10_MAX_BYTES)
    else:
        actual = md5sum(archive)
        if actual != CIFAR10_MD5:
            raise UserInputError(f"{archive} is not the official CIFAR-10 archive: md5 {actual}, expected "
                                 f"{CIFAR10_MD5}; remove it (or let data.download=true fetch a good one)")
    extract_tarball(archive, root, expect=CIFAR10_FOLDER)
    folder = root / CIFAR10_FOLDER
    if not folder.is_dir():
        raise UserInputError(f"{archive} does not contain the folder {CIFAR10_FOLDER}/")
    return folder


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One python-format batch -> (uint8 (N, 3072), int64 labels (N,)), 1 <= N <= `MAX_BATCH_ROWS`.

    The file is scanned and unpickled within bounds (`nnrun.datasets.safe`); `data` must be a uint8 array
    (pixels 0..255, nothing to wrap or round) and `labels` whole numbers 0..9. Anything else is a
    `UserInputError` naming the file and what was expected.
    """
    if not path.is_file():
        raise UserInputError(f"CIFAR-10 batch file missing: {path}")
    batch = restricted_unpickle(path, "CIFAR-10 batch file")
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise UserInputError(f"corrupt CIFAR-10 batch file {path}: expected a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise UserInputError(f"corrupt CIFAR-10 batch file {path}: b'data' must be a uint8 array of pixels 0..255, "
                             f"got {getattr(data, 'dtype', type(data).__name__)}")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) > MAX_BATCH_ROWS:
        raise UserInputError(f"corrupt CIFAR-10 batch file {path}: b'labels' must be a list of class numbers")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError, OverflowError) as e:
        raise UserInputError(f"corrupt CIFAR-10 batch file {path}: b'labels': {str(e)[:200]}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise UserInputError(
            f"corrupt CIFAR-10 batch file {path}: expected data (N, 3072) and N labels, "
            f"got data {data.shape} and labels {labels.shape}")
    if not 1 <= len(data) <= MAX_BATCH_ROWS:
        raise UserInputError(f"corrupt CIFAR-10 batch file {path}: {len(data)} images (expected 1..{MAX_BATCH_ROWS})")
    if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        raise UserInputError(f"corrupt CIFAR-10 batch file {path}: labels must be whole numbers 0..9, "
                             f"got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() > 9:
        raise UserInputError(f"corrupt CIFAR-10 batch file {path}: labels outside 0..9")
    return data, labels.astype(np.int64)


def read_cifar10(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All batches -> (X_train uint8 (50000, 3072), y_train, X_test uint8 (10000, 3072), y_test)."""
    parts = [read_cifar10_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    X_test, y_test = read_cifar10_batch(folder / CIFAR10_TEST_FILE)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), X_test, y_test)


def cache_dir() -> Path:
    """Where cached arrays go: $NNRUN_CACHE_DIR, else ~/.cache/nnrun."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "nnrun")


CACHE_ARRAYS = ("X_train", "y_train", "X_test", "y_test")
"""The arrays of the cache, one `.npy` file each."""


def cifar10_cache_paths(folder: Path) -> dict[str, Path]:
    """The cache files (`CACHE_ARRAYS`), keyed by the folder's absolute path and each batch file's size and mtime:
    `cifar10-KEY.X_train.npy`, ... in `cache_dir()`."""
    key = hashlib.sha1(str(folder.resolve()).encode())
    for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE):
        st = (folder / name).stat()
        key.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    stem = f"cifar10-{key.hexdigest()[:16]}"
    return {name: cache_dir() / f"{stem}.{name}.npy" for name in CACHE_ARRAYS}


def read_cifar10_cached(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`read_cifar10` through a uint8 cache of one `.npy` file per array; an unwritable cache folder just means
    no cache. The pixel arrays come back memory-mapped (read-only), so that a load which keeps a subset of the
    training images reads only their rows. A cache file that is missing, unreadable or of the wrong shape or
    dtype is rebuilt from the batches."""
    try:
        paths = cifar10_cache_paths(folder)
    except OSError:
        return read_cifar10(folder)
    cached = _read_cache(paths)
    if cached is not None:
        return cached
    arrays = read_cifar10(folder)
    try:
        for name, array in zip(CACHE_ARRAYS, arrays, strict=True):
            atomic_write(paths[name], lambda f, a=array: np.save(f, a))
        # the single .npz file earlier versions cached the same batches in
        (cache_dir() / f"{paths['X_train'].name.split('.')[0]}.npz").unlink(missing_ok=True)
    except OSError:
        pass
    return arrays


def _read_cache(paths: dict[str, Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The cached arrays, or None (the files removed) when any is missing or not what `read_cifar10` returns."""
    if not all(path.is_file() for path in paths.values()):
        return None
    try:
        arrays = tuple(np.load(paths[name], mmap_mode="r" if name.startswith("X") else None, allow_pickle=False)
                       for name in CACHE_ARRAYS)
    except (OSError, ValueError, EOFError):
        arrays = None
    if arrays is not None:
        X_train, y_train, X_test, y_test = arrays
        shapes_fit = all(X.dtype == np.uint8 and X.ndim == 2 and X.shape[1] == 3072 and y.dtype == np.int64
                         and y.shape == (len(X),) for X, y in ((X_train, y_train), (X_test, y_test)))
        if shapes_fit:
            return arrays
    for path in paths.values():
        path.unlink(missing_ok=True)
    return None
