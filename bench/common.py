"""Shared pieces of the benchmark scripts: the reference workload, timing, the BLAS ceiling,
machine facts and the result format.

Reference workload: one training epoch of a 3072-512-512-10 ReLU MLP, batch 256, momentum SGD
(lr 0.01, mu 0.9), softmax cross-entropy, over 50,000 CIFAR-10-shaped float32 samples.
Work per epoch (forward, weight gradients, input gradients except for the first layer):
`2 N (D H + H H + H C) * 3 - 2 N D H` FLOP, about 395 GFLOP.

Every part script writes one JSON object (`--json PATH`) of the form
`{"part", "title", "environment", "rows": [{"name", "seconds", ...}], "checks": [...], "notes": [...]}`;
a check is `{"name", "value", "limit", "op", "ok", "unit"}` (`op` is "<=" or ">=").
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

N, D, H, C, B = 50_000, 3072, 512, 10, 256
"""Reference workload: samples, input features, hidden width, classes, batch size."""
LR, MOMENTUM = 0.01, 0.9
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
"""Variables that pin OpenBLAS to an older kernel; bench/run_all.py unsets or keeps both together."""
CIFAR10_ENV = "NNRUN_TEST_CIFAR10"
"""Environment variable naming the real `cifar-10-batches-py` folder (as the tests use it)."""

if str(REPO) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(REPO))


def epoch_flops(n: int = N, d: int = D, hidden: Sequence[int] = (H, H), c: int = C) -> int:
    """FLOP of one epoch: forward, weight gradients and input gradients (none for the input layer)."""
    sizes = [d, *hidden, c]
    products = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return 2 * n * products * 3 - 2 * n * sizes[0] * sizes[1]


def reference_data(n: int = N, d: int = D, c: int = C, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian float32 inputs (n, d) and int64 labels (n,) in 0..c-1."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d), dtype=np.float32), rng.integers(0, c, n)


_clock = time.perf_counter
SINGLE_THREAD = False
"""True after `use_cpu_clock()`: one BLAS (and PyTorch) thread, times from the process's CPU clock."""


def now() -> float:
    """The benchmark clock: wall time, or the process's CPU time after `use_cpu_clock()`."""
    return _clock()


def use_cpu_clock() -> None:
    """Time by the process's CPU clock with one BLAS thread (PyTorch too: see `threads()`).

    The CPU time of a single-threaded computation hardly moves when other processes load the
    machine (its wall time does), so ratios measured this way hold up on a busy machine; they
    leave out what a second thread would gain. Helper threads (a progress display) count.
    """
    global _clock, SINGLE_THREAD
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _clock, SINGLE_THREAD = time.process_time, True


def threads() -> int:
    """Threads a competitor may use: the cores this process may run on (1 with the CPU clock)."""
    if SINGLE_THREAD:
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def rounds(competitors: dict[str, Callable[[], float]], repeats: int,
           progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Run each competitor `repeats` times, interleaved (the order rotates every round).

    Each callable returns its own measured seconds (set-up excluded). Interleaving spreads the
    noise of a shared machine over all competitors instead of favouring the one run last.
    """
    names = list(competitors)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            seconds = competitors[name]()
            times[name].append(seconds)
            if progress is not None:
                progress(f"round {r + 1}/{repeats}: {name} {seconds:.3f} s")
    return times


def summarize(times: list[float]) -> dict[str, float]:
    """Best (the figure compared), median and worst of repeated timings, in seconds."""
    return {"seconds": min(times), "median": statistics.median(times), "worst": max(times), "runs": len(times)}


def timed(fn: Callable[[], Any]) -> float:
    """Seconds `fn()` takes."""
    start = now()
    fn()
    return now() - start


# ---- the BLAS ceiling ---------------------------------------------------------------------------

class GemmSquare:
    """Seconds of one (n, n) @ (n, n) float32 product into a preallocated output (`flops` = 2 n^3).

    Run as a competitor of `rounds`, so the peak is sampled all through a part, not at one moment.
    """

    def __init__(self, n: int = 4096, dtype=np.float32):
        rng = np.random.default_rng(1)
        self.a = rng.standard_normal((n, n), dtype=dtype)
        self.b = rng.standard_normal((n, n), dtype=dtype)
        self.out = np.empty((n, n), dtype=dtype)
        self.flops = 2 * n ** 3
        np.matmul(self.a, self.b, out=self.out)

    def __call__(self) -> float:
        return timed(lambda: np.matmul(self.a, self.b, out=self.out))


class GemmEpoch:
    """The epoch's matrix products alone, at the workload's shapes, into preallocated buffers.

    Per batch: 3 forward products, 3 weight-gradient products and 2 input-gradient products,
    exactly the FLOP of `epoch_flops`; nothing else (no bias, activation, loss or update).
    """

    def __init__(self, n: int = N, d: int = D, hidden: Sequence[int] = (H, H), c: int = C, batch: int = B):
        rng = np.random.default_rng(2)
        self.n, self.batch = n, batch
        sizes = [d, *hidden, c]
        self.W = [rng.standard_normal((a, b), dtype=np.float32) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        self.dW = [np.empty_like(w) for w in self.W]
        self.x = rng.standard_normal((batch, d), dtype=np.float32)
        self.acts = [np.empty((batch, s), dtype=np.float32) for s in sizes[1:]]
        self.grads = [rng.standard_normal((batch, s), dtype=np.float32) for s in sizes[1:]]
        self.dx = [np.empty((batch, s), dtype=np.float32) for s in sizes[1:-1]]

    def __call__(self) -> float:
        W, dW, acts, grads, dx = self.W, self.dW, self.acts, self.grads, self.dx
        inputs = [self.x, *acts[:-1]]
        start = now()
        for _ in range(0, self.n, self.batch):
            for k in range(len(W)):
                np.matmul(inputs[k], W[k], out=acts[k])
            for k in reversed(range(len(W))):
                np.matmul(inputs[k].T, grads[k], out=dW[k])
                if k > 0:
                    np.matmul(grads[k], W[k].T, out=dx[k - 1])
        return now() - start


# ---- machine facts ------------------------------------------------------------------------------

def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{'+dirty' if dirty else ''}" if head else None


def blas_info() -> list[dict[str, Any]]:
    """The BLAS libraries loaded in this process (threadpoolctl): library, version, kernel, threads."""
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer", "prefix")
    return [{**{k: info.get(k) for k in keys}, "file": Path(info.get("filepath") or "").name}
            for info in threadpool_info()]


def environment() -> dict[str, Any]:
    """Machine, library versions, the BLAS kernel numpy runs and the OpenBLAS variables in force."""
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpu": _cpu_model(), "cores": cores, "memory_gib": round(memory_gib, 1) if memory_gib else None,
                    "platform": platform.platform(), "python": platform.python_version()},
        "versions": {p: _version(p) for p in ("nnrun", "numpy", "torch", "scikit-learn", "threadpoolctl", "rich")},
        "blas": blas_info(),
        "openblas_env": {v: os.environ.get(v) for v in OPENBLAS_VARS},
        "git": _git_commit(),
    }


def blas_kernel(env: dict[str, Any]) -> str:
    """One line naming numpy's BLAS and its kernel, e.g. 'openblas 0.3.31 SkylakeX x2'."""
    libs = [lib for lib in env.get("blas", []) if lib.get("user_api") == "blas"]
    # NumPy's own copy first (scipy, loaded by scikit-learn, may bring a second OpenBLAS).
    libs.sort(key=lambda lib: "openblas64_" not in str(lib.get("file", "")))
    for lib in libs:
        if lib:
            version = ".".join(str(lib.get("version")).split(".")[:3])
            return f"{lib.get('internal_api')} {version} {lib.get('architecture')} x{lib.get('num_threads')}"
    return "unknown"


# ---- results ------------------------------------------------------------------------------------

def check(name: str, value: float | None, limit: float, op: str, unit: str = "") -> dict[str, Any]:
    """A target: `value op limit` (op '<=' or '>='); a missing value fails."""
    ok = value is not None and (value <= limit if op == "<=" else value >= limit)
    return {"name": name, "value": value, "limit": limit, "op": op, "ok": bool(ok), "unit": unit}


def part_result(part: str, title: str, rows: list[dict[str, Any]], checks: list[dict[str, Any]] | None = None,
                notes: list[str] | None = None, skipped: str | None = None) -> dict[str, Any]:
    """The JSON object a part script writes."""
    result = {"part": part, "title": title, "environment": environment(), "rows": rows,
              "checks": checks or [], "notes": notes or []}
    if skipped:
        result["skipped"] = skipped
    return result


def skip_result(part: str, title: str, reason: str) -> dict[str, Any]:
    """The result of a part that could not run here, with the reason."""
    return part_result(part, title, [], notes=[f"skipped: {reason}"], skipped=reason)


def save_result(result: dict[str, Any], path: str) -> None:
    """`result` as JSON at `path`, replaced whole (a stopped part never leaves half a file)."""
    from nnrun.io import write_text

    write_text(path, json.dumps(result, indent=2, default=str) + "\n")


def write_result(result: dict[str, Any], path: str | None) -> None:
    """Write `result` to `path` (when given) and print its tables."""
    if path:
        save_result(result, path)
    print_result(result)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.3f}" if s < 10 else f"{s:.1f}"


def print_result(result: dict[str, Any]) -> None:
    """Print a part's rows and checks as rich tables (on stdout)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if result.get("skipped"):
        console.print(f"[bold]{escape(result['title'])}[/bold]: skipped ({escape(result['skipped'])})")
        return
    rows = result["rows"]
    if rows:
        table = Table(title=result["title"], title_justify="left")
        extra = [k for k in ("ratio", "gflops", "tflops", "of_ceiling", "peak_rss_mib", "median")
                 if any(k in r for r in rows)]
        table.add_column("what")
        table.add_column("s (best)", justify="right")
        headers = {"ratio": "ratio", "gflops": "GFLOP/s", "tflops": "TFLOP/s", "of_ceiling": "of ceiling",
                   "peak_rss_mib": "peak RSS MiB", "median": "s (median)"}
        for k in extra:
            table.add_column(headers[k], justify="right")
        for r in rows:
            cells = [r["name"], fmt_seconds(r.get("seconds"))]
            for k in extra:
                v = r.get(k)
                if v is None:
                    cells.append("-")
                elif k == "of_ceiling":
                    cells.append(f"{v:.0%}")
                elif k == "ratio":
                    cells.append(f"{v:.2f}x")
                elif k == "median":
                    cells.append(fmt_seconds(v))
                elif k == "tflops":
                    cells.append(f"{v:.1f}")
                else:
                    cells.append(f"{v:.0f}")
            table.add_row(*cells)
        console.print(table)
    if result["checks"]:
        console.print(checks_table(result["checks"], "targets"))
    for note in result["notes"]:
        console.print(f"note: {escape(note)}", soft_wrap=True)


def checks_table(checks: list[dict[str, Any]], title: str):
    """A rich table of targets: value, limit, pass/fail."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("target", "value", "limit", ""):
        table.add_column(col, justify="left" if col == "target" else "right")
    for c in checks:
        value = "-" if c["value"] is None else _fmt_value(c["value"], c["unit"])
        table.add_row(c["name"], value, f"{c['op']} {_fmt_value(c['limit'], c['unit'])}",
                      "[green]ok[/green]" if c["ok"] else "[red]MISSED[/red]")
    return table


def _fmt_value(v: float, unit: str) -> str:
    if unit == "%":
        return f"{v:.0%}"
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "s":
        return f"{v:.2f} s"
    if unit == "MiB":
        return f"{v:.0f} MiB"
    return f"{v:.3g}"


def part_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every part script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", metavar="PATH", help="Also write the result as JSON to PATH.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per competitor (the best counts).")
    return parser


def timing_parser(description: str) -> argparse.ArgumentParser:
    """`part_parser` plus the options of the timing parts: --samples and --cpu-clock."""
    parser = part_parser(description)
    parser.add_argument("--samples", type=int, default=N, help="Training samples (fewer for a quick look).")
    parser.add_argument("--cpu-clock", action="store_true",
                        help="One thread everywhere, timed by the process's CPU clock (for a busy machine).")
    return parser


def parse_timing_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse a timing part's options and, with --cpu-clock, switch to the one-thread CPU clock."""
    args = parser.parse_args()
    if args.cpu_clock:
        use_cpu_clock()
    return args


def clock_note(args: argparse.Namespace) -> str:
    """What a table title adds when the part was timed by the CPU clock."""
    return " [1 thread, CPU clock]" if args.cpu_clock else ""


def cifar10_folder(given: str | None) -> Path | None:
    """The real CIFAR-10 folder: `given`, else $NNRUN_TEST_CIFAR10; None when neither holds the batches."""
    for candidate in (given, os.environ.get(CIFAR10_ENV)):
        if not candidate:
            continue
        path = Path(candidate)
        for folder in (path, path / "cifar-10-batches-py"):
            if (folder / "data_batch_1").is_file():
                return folder
    return None


REFERENCE_TRAIN_ARGS = [
    "--set", "model.hidden=[512, 512]", "--set", "model.init=he", "--set", "preprocess.center=none",
    "--set", "preprocess.scale=none", "--set", "regularization.l2=0", "--set", "optim.name=momentum",
    "--set", "optim.lr=0.01", "--set", "train.batch_size=256", "--set", "train.restore_best=false",
    "--set", "data.val_size=1000", "--set", "data.test_size=100"]
"""`--set` options that make configs/quickstart.yaml (on an npz of CIFAR-shaped rows) the reference workload of
`nnrun train`: 3072-512-512-10, He init, raw rows, momentum SGD (lr 0.01), batch 256, and no L2 penalty, as the
PyTorch competitor trains (quickstart's own l2 0.0001 added two passes over every weight matrix per step that
PyTorch's epoch did not make)."""


def nnrun_command() -> list[str]:
    """`nnrun` run with this interpreter (the console script beside it when installed, else `python -m nnrun`)."""
    script = Path(sys.executable).with_name("nnrun")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "nnrun"]


def log(message: str) -> None:
    """Progress line on stderr."""
    print(message, file=sys.stderr, flush=True)
