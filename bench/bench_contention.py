"""nnrun on a shared machine: one busy competitor, and two trainings started at once.

A competitor is a separate process that keeps one core busy (a Python loop), the ordinary state
of a laptop or a shared server. Every training is `nnrun train` as a user runs it (default thread
policy, its choice recorded from the run header), timed by the per-epoch seconds of metrics.jsonl:

- quickstart: configs/quickstart.yaml with the competitor against the idle machine (target <= 1.3x);
- CIFAR-sized epoch: the reference MLP (3072-512-512-10, batch 256, momentum SGD) on an npz of
  random CIFAR-shaped rows, with the competitor, against the same run alone with `--threads 1`
  (target <= 1.15x: a loaded machine costs no more than giving up the second core);
- two at once: two of those trainings started together against the same two one after the other,
  wall time of the whole (target <= 1.1x).

Usage: python bench/bench_contention.py [--rows 20000] [--repeats 2] [--json PATH]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REFERENCE_TRAIN_ARGS, REPO, check, log, nnrun_command, part_parser, part_result, write_result

QUICKSTART = REPO / "configs" / "quickstart.yaml"


def start_competitor() -> subprocess.Popen:
    """A process that keeps one core busy until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def train(args: list[str], out: Path) -> subprocess.Popen:
    return subprocess.Popen([*nnrun_command(), "train", *args, "--out", str(out), "--overwrite", "--json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def epoch_seconds(out: Path) -> float:
    """The mean per-epoch training seconds of a finished run (metrics.jsonl)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return float(np.mean([r["seconds"] for r in rows]))


def threads_used(stderr: str) -> str:
    """The run header's thread line (`threads  1 (...)`), for the record."""
    for line in stderr.splitlines():
        if line.strip().startswith("threads"):
            return " ".join(line.split()[1:]).strip("│ ")
    return "?"


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"nnrun train failed: {err[-500:]}")
    return err


def best_of(repeats: int, make: callable) -> tuple[float, str]:
    """The lowest of `repeats` measurements of `make()` -> (seconds, note)."""
    results = [make() for _ in range(repeats)]
    return min(results, key=lambda r: r[0])


def main() -> None:
    parser = part_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="Rows of the CIFAR-sized data (default 20000).")
    parser.set_defaults(repeats=2)  # measurements per case; the best counts
    args = parser.parse_args()
    part, title = "contention", "nnrun train beside other work (default thread policy)"
    scratch = Path(tempfile.mkdtemp(prefix="nnrun-bench-contention-"))
    rng = np.random.default_rng(0)
    data = scratch / "cifar-sized.npz"
    # Standard-normal rows, used as they are, as bench_cores.py's: raw 0..255 values, never centred, made the
    # reference run diverge within its first batches at some row counts (--rows 5000: a NaN loss in batch 10).
    np.savez(data, X=rng.standard_normal((args.rows + 1100, 3072), dtype=np.float32),
             y=rng.integers(0, 10, args.rows + 1100))
    cifar = [str(QUICKSTART), "--set", "data.dataset=npz", "--set", f"data.path={data}", *REFERENCE_TRAIN_ARGS,
             "--set", "train.epochs=2", "--set", "train.eval_train_size=1000"]
    quick = [str(QUICKSTART), "--set", "train.epochs=20"]
    rows, notes = [], []

    def run_case(train_args: list[str], competitor: bool, name: str) -> tuple[float, str]:
        comp = start_competitor() if competitor else None
        try:
            time.sleep(0.5 if competitor else 0.0)
            err = finish(train(train_args, scratch / name))
        finally:
            if comp is not None:
                comp.kill()
                comp.wait()
        return epoch_seconds(scratch / name), threads_used(err)

    log(f"[{part}] quickstart idle / with one busy competitor")
    quick_idle = best_of(args.repeats, lambda: run_case(quick, False, "q-idle"))
    quick_busy = best_of(args.repeats, lambda: run_case(quick, True, "q-busy"))
    log(f"[{part}] CIFAR-sized epoch: one thread alone / default policy with a competitor")
    one_thread = best_of(args.repeats, lambda: run_case([*cifar, "--threads", "1"], False, "c-one"))
    cifar_busy = best_of(args.repeats, lambda: run_case(cifar, True, "c-busy"))
    cifar_idle = best_of(args.repeats, lambda: run_case(cifar, False, "c-idle"))
    log(f"[{part}] two CIFAR-sized trainings one after the other / at once")

    def sequential() -> tuple[float, str]:
        start = time.perf_counter()
        finish(train(cifar, scratch / "s1"))
        finish(train(cifar, scratch / "s2"))
        return time.perf_counter() - start, ""

    def together() -> tuple[float, str]:
        start = time.perf_counter()
        procs = [train(cifar, scratch / f"t{i}") for i in (1, 2)]
        used = [threads_used(finish(p)) for p in procs]
        return time.perf_counter() - start, "; ".join(used)

    seq = best_of(args.repeats, sequential)
    both = best_of(args.repeats, together)
    rows += [
        {"name": f"quickstart, idle ({quick_idle[1]})", "seconds": quick_idle[0]},
        {"name": f"quickstart, one busy competitor ({quick_busy[1]})", "seconds": quick_busy[0],
         "ratio": quick_busy[0] / quick_idle[0]},
        {"name": "CIFAR-sized epoch, --threads 1, idle", "seconds": one_thread[0]},
        {"name": f"CIFAR-sized epoch, idle ({cifar_idle[1]})", "seconds": cifar_idle[0],
         "ratio": cifar_idle[0] / one_thread[0]},
        {"name": f"CIFAR-sized epoch, one busy competitor ({cifar_busy[1]})", "seconds": cifar_busy[0],
         "ratio": cifar_busy[0] / one_thread[0]},
        {"name": "two CIFAR-sized trainings, one after the other (wall)", "seconds": seq[0]},
        {"name": f"two CIFAR-sized trainings at once (wall; {both[1]})", "seconds": both[0],
         "ratio": both[0] / seq[0]},
    ]
    checks = [
        check("quickstart epoch with a busy competitor / idle", quick_busy[0] / quick_idle[0], 1.3, "<=", "x"),
        check("CIFAR-sized epoch with a busy competitor / one thread idle", cifar_busy[0] / one_thread[0], 1.15,
              "<=", "x"),
        check("two trainings at once / one after the other", both[0] / seq[0], 1.1, "<=", "x"),
    ]
    notes.append(f"cores: {os.cpu_count()}; CIFAR-sized data: {args.rows} rows of 3072 standard-normal values; "
                 "epoch seconds from metrics.jsonl (training only), 'two trainings' is wall time")
    notes.append("'ratio' = this row's time / the row above it that it is compared with")
    write_result(part_result(part, title, rows, checks, notes), args.json)


if __name__ == "__main__":
    main()
