"""Datasets: raw arrays and a seeded train/val/test split. Nothing is fitted here.

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download).
- `cifar10`: the official python batches, found under `data.root` as the
  `cifar-10-batches-py/` folder, or as the official `cifar-10-python.tar.gz` archive there
  (extracted safely), or downloaded when `data.download` is true (md5 checked first).
  Pixels become float32 `(N, 3072)` in the official layout (1024 red, 1024 green, 1024 blue,
  row-major 32x32), values 0..255. A uint8 cache makes the second load fast.

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
from collections.abc import Callable
from dataclasses import dataclass
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
CACHE_ENV = "NNRUN_CACHE_DIR"
"""Environment variable naming the folder for cached arrays (default ~/.cache/nnrun)."""


@dataclass
class Dataset:
    """A split dataset. X_*: float32 (N, D); y_*: targets (N,) int class labels.

    `image_shape` is (channels, height, width) of one row reshaped, or None for non-images.
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

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict[str, int]:
        """Examples per split."""
        return {"train": len(self.X_train), "val": len(self.X_val), "test": len(self.X_test)}


def load_dataset(cfg, seed: int) -> Dataset:
    """Load and split the dataset that `cfg` (a `DataConfig`) names, with the `split` stream of `seed`."""
    return DATASETS[cfg.dataset](cfg, seed)


def resolve_count(size: int | float, total: int, key: str) -> int:
    """A split size given as a count or a fraction in (0, 1) -> a count in [1, total - 1]."""
    if isinstance(size, float) and not size.is_integer():
        if not 0 < size < 1:
            raise UserInputError(f"{key}: a fraction must be in (0, 1), got {size}")
        count = int(round(size * total))
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
    return Dataset("cifar10",
                   X_pool[train].astype(np.float32), y_pool[train],
                   X_pool[val].astype(np.float32), y_pool[val],
                   X_test.astype(np.float32), y_test,
                   list(CIFAR10_CLASSES), (3, 32, 32))


DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "cifar10": load_cifar10,
}
"""Registry: config name -> loader `(DataConfig, seed) -> Dataset`."""


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
        except (OSError, ValueError, KeyError, EOFError):
            cache.unlink(missing_ok=True)
    arrays = read_cifar10(folder)
    try:
        atomic_write(cache, lambda f: np.savez(f, **dict(zip(("X_train", "y_train", "X_test", "y_test"), arrays))))
    except OSError:
        pass
    return arrays
