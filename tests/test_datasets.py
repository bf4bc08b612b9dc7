"""Dataset loading: digits, CIFAR-10 folder / tarball / download, corrupt files, cache, splits."""

import hashlib
import http.server
import io
import os
import pickle
import socket
import struct
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nnrun.config import DataConfig
from nnrun.datasets import cifar10, download
from nnrun.errors import UserInputError
from tests.cifar_fixtures import PER_BATCH, cifar_tarball_bytes, write_cifar_folder
from tests.helpers import load


def cifar_cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(dataset="cifar10", root=str(root), val_size=kw.pop("val_size", 10), **kw)


def test_digits_split_sizes_disjoint_and_seeded():
    cfg = DataConfig(dataset="digits", val_size=0.1, test_size=0.2)
    a = load(cfg, seed=3)
    b = load(cfg, seed=3)
    c = load(cfg, seed=4)
    sizes = a.sizes()
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == round(0.2 * 1797)
    assert a.X_train.dtype == np.float32 and a.X_train.shape[1] == 64
    assert a.image_shape == (1, 8, 8) and a.n_classes == 10
    np.testing.assert_array_equal(a.X_val, b.X_val)
    assert not np.array_equal(a.y_train, c.y_train)
    rows = {r.tobytes() for r in a.X_test}
    assert not any(r.tobytes() in rows for r in a.X_train[:200]) or len(rows) < len(a.X_test)


def test_train_size_keeps_a_subset():
    data = load(DataConfig(dataset="digits", train_size=100), seed=0)
    assert len(data.X_train) == 100


def test_split_sizes_out_of_range_name_the_key():
    with pytest.raises(UserInputError, match="data.val_size"):
        load(DataConfig(dataset="digits", val_size=5000), seed=0)
    with pytest.raises(UserInputError, match="data.train_size"):
        load(DataConfig(dataset="digits", train_size=10**6), seed=0)


def test_cifar_folder_loads_float32_rows_and_carves_val(tmp_path):
    folder = write_cifar_folder(tmp_path)
    data = load(cifar_cfg(tmp_path), seed=0)
    assert data.sizes() == {"train": 5 * PER_BATCH - 10, "val": 10, "test": PER_BATCH}
    assert data.X_train.dtype == np.float32 and data.X_train.shape[1] == 3072
    assert data.image_shape == (3, 32, 32) and data.class_names[0] == "airplane"
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    np.testing.assert_array_equal(data.X_test, raw[b"data"].astype(np.float32))
    np.testing.assert_array_equal(data.y_test, raw[b"labels"])
    # Every training pool image lands in exactly one of train and val.
    pool = np.concatenate([data.X_train, data.X_val])
    assert len({r.tobytes() for r in pool}) == 5 * PER_BATCH


def test_root_may_be_the_batches_folder_itself(tmp_path):
    folder = write_cifar_folder(tmp_path)
    assert load(cifar_cfg(folder), seed=0).sizes()["test"] == PER_BATCH


def test_cache_makes_second_load_skip_the_batches(tmp_path, monkeypatch):
    folder = write_cifar_folder(tmp_path)
    first = load(cifar_cfg(tmp_path), seed=0)
    assert all(path.is_file() for path in cifar10.cifar10_cache_paths(folder).values())

    def fail(_folder):
        raise AssertionError("batches read although the cache is warm")

    monkeypatch.setattr(cifar10, "read_cifar10", fail)
    second = load(cifar_cfg(tmp_path), seed=0)
    np.testing.assert_array_equal(first.X_train, second.X_train)


def test_a_damaged_cache_file_is_rebuilt_from_the_batches(tmp_path):
    folder = write_cifar_folder(tmp_path)
    first = load(cifar_cfg(tmp_path), seed=0)
    paths = cifar10.cifar10_cache_paths(folder)
    paths["X_train"].write_bytes(paths["X_train"].read_bytes()[:200])  # truncated
    np.save(paths["y_test"], np.zeros(3, np.int64))  # readable, but of the wrong length
    second = load(cifar_cfg(tmp_path), seed=0)
    np.testing.assert_array_equal(first.X_train, second.X_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert np.load(paths["X_train"]).shape == (5 * PER_BATCH, 3072)


def test_changed_batch_file_invalidates_cache(tmp_path):
    folder = write_cifar_folder(tmp_path)
    load(cifar_cfg(tmp_path), seed=0)
    batch = {b"data": np.full((PER_BATCH, 3072), 7, np.uint8), b"labels": [1] * PER_BATCH}
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    os.utime(folder / "test_batch", ns=(1, 1))
    data = load(cifar_cfg(tmp_path), seed=0)
    assert (data.X_test == 7).all()


def test_unwritable_cache_still_loads(tmp_path, monkeypatch):
    write_cifar_folder(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv(cifar10.CACHE_ENV, str(blocker / "cache"))
    assert load(cifar_cfg(tmp_path), seed=0).sizes()["test"] == PER_BATCH


def test_missing_cifar_names_root_and_download_option(tmp_path):
    with pytest.raises(UserInputError, match="data.download=true") as e:
        load(cifar_cfg(tmp_path), seed=0)
    assert str(tmp_path) in str(e.value)


def test_truncated_batch_is_a_clear_error(tmp_path):
    folder = write_cifar_folder(tmp_path)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserInputError, match="corrupt CIFAR-10 batch file .*data_batch_3"):
        load(cifar_cfg(tmp_path), seed=0)


def test_batch_with_wrong_shape_is_rejected(tmp_path):
    folder = write_cifar_folder(tmp_path)
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(UserInputError, match=r"expected data \(N, 3072\)"):
        load(cifar_cfg(tmp_path), seed=0)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    folder = write_cifar_folder(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(UserInputError, match="refusing to load"):
        load(cifar_cfg(tmp_path), seed=0)


def as_official(monkeypatch, archive: Path) -> None:
    """Make `archive` pass the md5 check of the official archive (the tests' archives are small stand-ins)."""
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())


def test_tarball_in_root_is_extracted(tmp_path, monkeypatch):
    (tmp_path / cifar10.CIFAR10_ARCHIVE).write_bytes(cifar_tarball_bytes(tmp_path / "build"))
    as_official(monkeypatch, tmp_path / cifar10.CIFAR10_ARCHIVE)
    root = tmp_path
    data = load(cifar_cfg(root), seed=0)
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
    assert data.sizes()["test"] == PER_BATCH
    assert not list(root.glob(".extract-*"))


def test_tarball_member_escaping_root_is_refused(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    root = tmp_path / "root"
    root.mkdir()
    (root / cifar10.CIFAR10_ARCHIVE).write_bytes(buf.getvalue())
    as_official(monkeypatch, root / cifar10.CIFAR10_ARCHIVE)
    with pytest.raises(UserInputError, match="outside"):
        load(cifar_cfg(root), seed=0)
    assert not (tmp_path / "escaped.txt").exists()


def test_corrupt_tarball_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / cifar10.CIFAR10_ARCHIVE).write_bytes(b"not a tarball at all")
    with pytest.raises(UserInputError, match="not the official CIFAR-10 archive: md5"):
        load(cifar_cfg(tmp_path), seed=0)  # a local archive is checked before it is opened
    as_official(monkeypatch, tmp_path / cifar10.CIFAR10_ARCHIVE)
    with pytest.raises(UserInputError, match="cannot extract"):
        load(cifar_cfg(tmp_path), seed=0)


class ArchiveServer:
    """Serves `payload` at /cifar-10-python.tar.gz on 127.0.0.1, misbehaving as asked.

    `truncate`: every answer stops halfway; `fail_first`: the first answer stops halfway with a TCP
    reset ("reset") or stalls ("stall"); `ranges`: honour `Range` requests with 206; `status`: answer
    every request with this error status; `trickle`: send one byte every this many seconds, without end
    (`length`: the Content-Length announced, none when None). `requests` records each request's Range header.
    """

    def __init__(self, payload: bytes, truncate: bool = False, fail_first: str | None = None,
                 ranges: bool = True, status: int | None = None, trickle: float | None = None,
                 length: int | None = None) -> None:
        server = self
        self.requests: list[str | None] = []
        self.stopping = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                first = not server.requests
                server.requests.append(self.headers.get("Range"))
                if status is not None:
                    self.send_error(status)
                    return
                if trickle is not None:
                    self.send_response(200)
                    if length is not None:
                        self.send_header("Content-Length", str(length))
                    self.end_headers()
                    try:
                        while not server.stopping.is_set():
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            server.stopping.wait(trickle)
                    except OSError:
                        pass
                    return
                start = 0
                if ranges and self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
                else:
                    self.send_response(200)
                body = payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if truncate or (first and fail_first):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if first and fail_first == "stall":
                        time.sleep(2.0)
                    elif first and fail_first == "reset":
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/cifar-10-python.tar.gz"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """Downloads retry after 10 ms, and a stall is 0.5 s without a byte, so the tests stay quick."""
    monkeypatch.setattr(download, "BACKOFF_SECONDS", 0.01)
    monkeypatch.setattr(download, "READ_TIMEOUT", 0.5)


def test_download_verifies_md5_then_extracts(tmp_path, monkeypatch):
    payload = cifar_tarball_bytes(tmp_path / "build")
    root = tmp_path / "root"
    with ArchiveServer(payload) as server:
        monkeypatch.setattr(cifar10, "CIFAR10_URL", server.url)
        monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(payload).hexdigest())
        data = load(cifar_cfg(root, download=True), seed=0)
    assert data.sizes()["test"] == PER_BATCH
    assert (root / cifar10.CIFAR10_ARCHIVE).read_bytes() == payload


def test_download_checksum_mismatch_leaves_nothing_behind(tmp_path, monkeypatch):
    payload = cifar_tarball_bytes(tmp_path / "build")
    root = tmp_path / "root"
    with ArchiveServer(payload) as server:
        monkeypatch.setattr(cifar10, "CIFAR10_URL", server.url)
        monkeypatch.setattr(cifar10, "CIFAR10_MD5", "0" * 32)
        with pytest.raises(UserInputError, match="checksum mismatch"):
            load(cifar_cfg(root, download=True), seed=0)
    assert list(root.iterdir()) == []


def test_truncated_download_leaves_nothing_behind(tmp_path, monkeypatch):
    payload = cifar_tarball_bytes(tmp_path / "build")
    root = tmp_path / "root"
    with ArchiveServer(payload, truncate=True) as server:
        monkeypatch.setattr(cifar10, "CIFAR10_URL", server.url)
        monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(payload).hexdigest())
        with pytest.raises(UserInputError):
            load(cifar_cfg(root, download=True), seed=0)
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("failure", ["reset", "stall"])
def test_a_reset_or_stalled_download_is_retried_and_resumed_with_range(tmp_path, monkeypatch, failure):
    payload = cifar_tarball_bytes(tmp_path / "build")
    root = tmp_path / "root"
    with ArchiveServer(payload, fail_first=failure) as server:
        monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(payload).hexdigest())
        monkeypatch.setenv(cifar10.URL_ENV, server.url)  # a mirror, as on an air-gapped machine
        data = load(cifar_cfg(root, download=True), seed=0)
    assert data.sizes()["test"] == PER_BATCH
    assert server.requests[0] is None and server.requests[1].startswith("bytes=")  # resumed, not restarted
    assert 0 < int(server.requests[1].split("=")[1].rstrip("-")) <= len(payload) // 2
    assert (root / cifar10.CIFAR10_ARCHIVE).read_bytes() == payload
    assert not list(root.glob(".*.part"))


def test_a_server_without_range_support_starts_over(tmp_path, monkeypatch):
    payload = cifar_tarball_bytes(tmp_path / "build")
    root = tmp_path / "root"
    with ArchiveServer(payload, fail_first="reset", ranges=False) as server:
        monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(payload).hexdigest())
        load(cifar_cfg(root, download=True, url=server.url), seed=0)
    assert (root / cifar10.CIFAR10_ARCHIVE).read_bytes() == payload


def test_a_missing_file_on_the_server_is_not_retried(tmp_path, monkeypatch):
    with ArchiveServer(b"", status=404) as server:
        with pytest.raises(UserInputError, match="HTTP 404"):
            load(cifar_cfg(tmp_path / "root", download=True, url=server.url), seed=0)
    assert len(server.requests) == 1
    assert not list((tmp_path / "root").iterdir())


def test_an_unwritable_data_root_is_a_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("x")  # a root below a file cannot be written, even by root
    with pytest.raises(UserInputError, match="writable folder"):
        load(cifar_cfg(tmp_path / "a-file" / "root", download=True, url="http://127.0.0.1:9/x.tar.gz"), seed=0)
    if os.geteuid() != 0:  # permissions bind only other users
        root = tmp_path / "root"
        root.mkdir()
        root.chmod(0o555)
        try:
            with pytest.raises(UserInputError, match="writable folder"):
                load(cifar_cfg(root, download=True, url="http://127.0.0.1:9/x.tar.gz"), seed=0)
        finally:
            root.chmod(0o755)


def test_unreachable_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "CIFAR10_URL", "http://127.0.0.1:9/none.tar.gz")
    with pytest.raises(UserInputError, match="could not download"):
        load(cifar_cfg(tmp_path / "root", download=True), seed=0)


def test_real_cifar10(cifar10_folder):
    cfg = DataConfig(dataset="cifar10", root=str(cifar10_folder), val_size=1000)
    data = load(cfg, seed=0)
    assert data.sizes() == {"train": 49000, "val": 1000, "test": 10000}
    assert data.X_train.dtype == np.float32 and data.X_train.shape == (49000, 3072)
    assert 0 <= data.X_test.min() and data.X_test.max() <= 255
    np.testing.assert_array_equal(np.bincount(data.y_test, minlength=10), [1000] * 10)
    assert np.bincount(np.concatenate([data.y_train, data.y_val]), minlength=10).tolist() == [5000] * 10


@pytest.mark.parametrize("case", ["slow", "deadline", "announced_too_big", "grows_too_big"])
def test_a_trickling_or_oversized_download_is_given_up(case, tmp_path, monkeypatch):
    """A server that sends a byte every 50 ms never trips the read timeout: the minimum rate (or the overall
    deadline) gives it up; a body announced or growing past the download's byte cap is refused at once."""
    monkeypatch.setattr(download, "RATE_WINDOW", 0.3)
    monkeypatch.setattr(download, "MIN_RATE", 0 if case != "slow" else 1000)
    monkeypatch.setattr(download, "DEADLINE", 1.0 if case == "deadline" else 60.0)
    cap = {"announced_too_big": 10_000, "grows_too_big": 10}.get(case, 10**9)
    monkeypatch.setattr(cifar10, "CIFAR10_MAX_BYTES", cap)
    root = tmp_path / "root"
    expected = {"slow": "slower than 1000 bytes/s", "deadline": "not complete after 1 s",
                "announced_too_big": "announces 170498071 bytes, more than the 10000", "grows_too_big":
                "more than the 10 bytes"}[case]
    length = 170_498_071 if case == "announced_too_big" else None  # the official archive's size
    started = time.monotonic()
    with ArchiveServer(b"", trickle=0.001 if case == "grows_too_big" else 0.05, length=length) as server:
        with pytest.raises(UserInputError, match=expected) as e:
            load(cifar_cfg(root, download=True, url=server.url), seed=0)
    assert server.url in str(e.value) and "Traceback" not in str(e.value)
    assert time.monotonic() - started < 5
    assert list(root.iterdir()) == []
