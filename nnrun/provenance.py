"""Where a run came from: versions, source commit, command line, machine, BLAS, times and peak memory.

`start_record()` gathers what is known when a run starts; `end_record(record, status, seconds)` adds
the end time, the wall-clock seconds, the status and the peak resident memory. `nnrun train` writes
the record to the run directory's `provenance.json` at the start and again, completed, at the end.
The keys are listed in the README (the run directory section).
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GIT_TIMEOUT = 5.0
"""Seconds each git query may take before the commit is recorded as unknown."""


def start_record() -> dict[str, Any]:
    """What is known when a run starts: software, source, command line, machine, BLAS, start time."""
    return {**software(), **source_commit(), "command_line": shlex.join(sys.argv), "hostname": socket.gethostname(),
            **machine(), **blas(), "started": now(), "ended": None, "seconds": None, "status": "running",
            "peak_rss_mib": None}


def end_record(record: dict[str, Any], status: str, seconds: float) -> dict[str, Any]:
    """`record` completed: end time, the run's wall-clock `seconds`, its `status` and the process's peak
    resident memory."""
    return {**record, "ended": now(), "seconds": seconds, "status": status, "peak_rss_mib": peak_rss_mib()}


def now(t: float | None = None) -> str:
    """Local time `t` (default: now) as ISO 8601 with the UTC offset, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() if t is None else t))


@functools.cache
def software() -> dict[str, Any]:
    """nnrun, Python, NumPy and SciPy versions."""
    import numpy
    import scipy

    try:
        version = importlib.metadata.version("nnrun")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"nnrun_version": version, "python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__}


@functools.cache
def source_commit() -> dict[str, Any]:
    """`git_commit` and `git_dirty` (uncommitted changes to tracked files) of the checkout nnrun runs from;
    both None when nnrun is not run from a git checkout (an installed package) or git is unavailable."""
    package = Path(__file__).resolve().parent
    unknown = {"git_commit": None, "git_dirty": None}

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT, check=False)
        except (OSError, subprocess.SubprocessError):
            return None

    # nnrun's own files must be tracked: a package installed inside some other repository is not a checkout
    tracked = git("ls-files", "--error-unmatch", "__init__.py")
    head = git("rev-parse", "HEAD") if tracked is not None and tracked.returncode == 0 else None
    if head is None or head.returncode != 0:
        return unknown
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None or status.returncode != 0 else bool(status.stdout.strip())
    return {"git_commit": head.stdout.strip(), "git_dirty": dirty}


@functools.cache
def machine() -> dict[str, Any]:
    """The operating system's kernel and the processor architecture."""
    return {"kernel": f"{platform.system()} {platform.release()}", "architecture": platform.machine()}


def blas() -> dict[str, Any]:
    """The BLAS library NumPy uses (threadpoolctl): `blas` (name and version), `blas_kernel` (the CPU
    kernel it picked, e.g. OpenBLAS's Haswell), `blas_threads` (threads it may use now, after any limit),
    and `blas_libraries` (every BLAS threadpoolctl sees)."""
    from threadpoolctl import threadpool_info

    libraries = [{"library": info.get("internal_api"), "version": info.get("version"),
                  "kernel": info.get("architecture"), "threads": info.get("num_threads"),
                  "path": info.get("filepath")}
                 for info in threadpool_info() if info.get("user_api") == "blas"]
    # NumPy's own BLAS first (SciPy may bundle another)
    first = next((lib for lib in libraries if "numpy" in str(lib["path"])), libraries[0] if libraries else {})
    name = " ".join(str(v) for v in (first.get("library"), first.get("version")) if v) or None
    return {"blas": name, "blas_kernel": first.get("kernel"), "blas_threads": first.get("threads"),
            "blas_libraries": libraries}


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process so far in MiB (`getrusage`), None where unavailable. A sweep
    worker that ran several runs reports its peak over all of them."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
