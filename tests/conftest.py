"""Shared fixtures: the real CIFAR-10 copy (skips without it), an isolated cache folder, and the stop signals' handlers
restored after each test."""

import os
import signal
from pathlib import Path

import pytest

from nnrun.signals import STOP_SIGNALS

# Before anything imports nnrun: rich fixes a console's width from COLUMNS when the console is made (nnrun's
# consoles are made at import), and pytest-xdist's workers inherit COLUMNS=80 from execnet.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

CIFAR10_ENV = "NNRUN_TEST_CIFAR10"
"""Environment variable naming a `cifar-10-batches-py` folder for real-data tests."""


@pytest.fixture
def cifar10_folder() -> Path:
    """The real `cifar-10-batches-py` folder; the test skips when the variable is unset."""
    folder = os.environ.get(CIFAR10_ENV)
    if not folder or not (Path(folder) / "data_batch_1").is_file():
        pytest.skip(f"set {CIFAR10_ENV} to a cifar-10-batches-py folder to run real-data tests")
    return Path(folder)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own cache folder unless the CI already set a shared one."""
    if not os.environ.get("NNRUN_CACHE_DIR"):
        monkeypatch.setenv("NNRUN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def natural_table_width(monkeypatch):
    """Off a terminal nnrun prints tables at their natural width unless `COLUMNS` sets one; pytest-xdist's
    workers inherit `COLUMNS=80` from execnet, so every test starts without it (tests of a width set it)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture(autouse=True, scope="session")
def one_blas_thread_in_process():
    """In-process tests use one BLAS thread: their products are small, and on a busy machine (another job, a
    second test run) spinning BLAS threads would cost far more than they give. Subprocesses run nnrun's own
    thread policy; tests that compare thread counts set them explicitly."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(autouse=True)
def stop_signal_handlers_restored():
    """A test that stops inside `stop_on_signals()` leaves the stop signals ignored, as a process on its way out
    keeps them (nnrun.signals); the next test in the same worker gets the handlers it started with."""
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture
def slow_kernel_set_up(monkeypatch):
    """`cpu_kernels.warm` replaced by a fake whose first call sleeps 1.5 s, as numba's one-time set-up (0.7 s)
    does in a fresh process, and whose later calls return at once; yields the list of its calls."""
    import time

    from nnrun import cpu_kernels

    calls = []

    def slow_first_warm(*arrays):
        if not calls:
            time.sleep(1.5)
        calls.append(len(arrays))

    monkeypatch.setattr(cpu_kernels, "warm", slow_first_warm)
    return calls
