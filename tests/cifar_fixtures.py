"""Small CIFAR-10-format folders and archives built on the fly for dataset tests."""

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

PER_BATCH = 20


def batch_dict(n: int, seed: int) -> dict:
    """A python-format batch: uint8 data (n, 3072) and n labels cycling through 0..9."""
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(i % 10) for i in range(n)],
            b"batch_label": b"test batch", b"filenames": [b"x.png"] * n}


def write_cifar_folder(parent: Path, per_batch: int = PER_BATCH) -> Path:
    """Write `parent/cifar-10-batches-py/` with 5 training batches and a test batch."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        (folder / name).write_bytes(pickle.dumps(batch_dict(per_batch, seed)))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c"] * 10}))
    return folder


def cifar_tarball_bytes(tmp: Path) -> bytes:
    """The bytes of a `cifar-10-python.tar.gz` holding a small folder."""
    src = tmp / "src"
    folder = write_cifar_folder(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return buf.getvalue()
