"""The thread table: nnrun's epoch at every fixed `--threads` and under its default policy, on 1, 2, 4, ... cores.

For each core count c (the process's CPU affinity cut to its first c CPUs, as `taskset -c 0-(c-1)` does, so
the thread policy and PyTorch both see c cores), every competitor runs as its own process, one epoch each:

- `nnrun train` of the reference workload (3072-512-512-10, batch 256, momentum SGD, softmax) on an npz of
  CIFAR-shaped rows with `--threads T` for each T in 1..c (powers of two and c), and without `--threads`
  (the default policy: the run header's choice is recorded), all with the default element-wise work (the numba
  kernels on one thread, `NNRUN_NUMBA=1`); and under the default policy with NumPy's element-wise code instead
  (`NNRUN_NUMBA=0`) and with the kernels split over the run's threads (`NNRUN_NUMBA=parallel`);
- the epoch's matrix products alone with c BLAS threads (bench/common.py's GemmEpoch), the floor of any epoch;
- PyTorch CPU eager with `torch.set_num_threads(c)` on the same rows (when PyTorch is installed).

Each epoch's seconds are the training time nnrun writes to metrics.jsonl (PyTorch: the epoch loop alone);
rounds are interleaved and the best of `--repeats` counts. Checks, per core count: the default policy at most
1.05x the best fixed `--threads` (5 % for noise); at 2 and 16 cores, nnrun's default epoch against PyTorch's
(at most 0.80x and 1.0x) and the products' share of it (at least 93 % and 60 %).

A round measures the core counts with targets first (16, then 2), then the others from the most cores down.
With `--json` the file is rewritten after each core count of each round, so a stopped run (Ctrl-C, or the
SIGTERM of `timeout` on a lent machine) leaves the table of every core count measured so far; it then prints
that table, removes its scratch data and exits 1.

Usage: python bench/bench_cores.py [--cores 1,2,4,8,16] [--rows 50000] [--variant plain|bn-dropout]
                                   [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import REFERENCE_TRAIN_ARGS, REPO, check, log, nnrun_command, part_result, save_result, write_result

from nnrun import cpu_kernels

QUICKSTART = REPO / "configs" / "quickstart.yaml"
ELEMENTWISE = {"NumPy": "0", "parallel numba": "parallel"}
"""The other element-wise settings timed under the default policy, by `NNRUN_NUMBA` value."""
REFERENCE = [*REFERENCE_TRAIN_ARGS, "--set", "train.epochs=1", "--set", "train.eval_train_size=1000"]
BN_DROPOUT = ["--set", "model.batchnorm=true", "--set", "model.dropout=0.5"]
EPOCH_TARGETS = {2: (0.80, 0.93), 16: (1.0, 0.60)}
"""Core count -> (nnrun's epoch / PyTorch's at most, the matrix products' share of nnrun's epoch at least)."""
POLICY_SLACK = 1.05
"""The default policy may be this much slower than the best fixed thread count (run-to-run noise)."""


def core_counts(spec: str | None, available: int) -> list[int]:
    """The core counts to measure: those of `spec` (comma-separated) that this machine has, else 1, 2, 4, ...
    up to the available cores (and that count itself)."""
    if spec:
        wanted = sorted({int(c) for c in spec.split(",") if c.strip()})
        return [c for c in wanted if 1 <= c <= available]
    counts = [c for c in (1, 2, 4, 8, 16, 32, 64) if c <= available]
    return sorted({*counts, available})


def measuring_order(counts: list[int]) -> list[int]:
    """`counts` in the order a round measures them: the core counts with epoch targets (16, then 2) first, then the
    rest from the most cores down, so that a run stopped early (a timeout) has the figures that decide first."""
    return sorted(counts, key=lambda c: (c not in EPOCH_TARGETS, -c))


def thread_counts(cores: int) -> list[int]:
    """The fixed `--threads` values tried on `cores` cores: powers of two below it, 3 and `cores` itself."""
    return sorted({t for t in (1, 2, 3, 4, 8, 16, 32, 64) if t < cores} | {cores})


def pinned(cores: int) -> callable:
    """A `preexec_fn` that cuts the child's CPU affinity to the first `cores` CPUs it may use."""
    allowed = sorted(os.sched_getaffinity(0))[:cores]

    def apply() -> None:
        os.sched_setaffinity(0, allowed)

    return apply


def nnrun_epoch(cores: int, train_args: list[str], out: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    """(training seconds of the epoch, the run header's thread choice) of one `nnrun train` on `cores` cores, with
    `env` added to the environment."""
    proc = subprocess.run([*nnrun_command(), "train", *train_args, "--out", str(out), "--overwrite"], cwd=REPO,
                          capture_output=True, text=True, preexec_fn=pinned(cores), env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"nnrun train failed on {cores} cores: {proc.stderr[-800:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    choice = "?"
    for line in proc.stdout.splitlines() + proc.stderr.splitlines():
        match = re.search(r"threads\s+(\d+ \(.*?\))", line)
        if match:
            choice = match.group(1).strip()
            break
    return float(rows[0]["seconds"]), choice


def products_epoch(cores: int, rows: int) -> float:
    """Seconds of the reference epoch's matrix products alone (bench/common.py's GemmEpoch) with `cores` BLAS
    threads on `cores` cores: the floor under any implementation's epoch."""
    code = ("import sys\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from threadpoolctl import threadpool_limits\n"
            "from common import GemmEpoch\n"
            "with threadpool_limits(int(sys.argv[2])):\n"
            "    epoch = GemmEpoch(n=int(sys.argv[3])); epoch(); print(min(epoch() for _ in range(2)))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(cores), str(rows)],
                          capture_output=True, text=True, preexec_fn=pinned(cores))
    if proc.returncode != 0:
        raise SystemExit(f"the products-alone epoch failed on {cores} cores: {proc.stderr[-800:]}")
    return float(proc.stdout.split()[-1])


def torch_epoch(cores: int, data: Path, variant: str) -> float | None:
    """Seconds of one PyTorch CPU epoch with `cores` threads on `cores` cores (None without PyTorch)."""
    code = ("import sys, numpy as np\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "import torch\n"
            "from bench_epoch import TorchEpoch\n"
            "torch.set_num_threads(int(sys.argv[3]))\n"
            "z = np.load(sys.argv[2]); X, y = z['X'][:-1100], z['y'][:-1100]\n"
            "epoch = TorchEpoch(X, y, sys.argv[4]); torch.set_num_threads(int(sys.argv[3]))\n"
            "print(epoch())\n")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(data), str(cores), variant],
                          capture_output=True, text=True, preexec_fn=pinned(cores))
    if proc.returncode != 0:
        if "No module named 'torch'" in proc.stderr:
            return None
        raise SystemExit(f"the PyTorch epoch failed on {cores} cores: {proc.stderr[-800:]}")
    return float(proc.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", help="Core counts, comma-separated (default: 1, 2, 4, ... up to this machine's).")
    parser.add_argument("--rows", type=int, default=50_000, help="Training rows (default 50000).")
    parser.add_argument("--variant", choices=("plain", "bn-dropout"), default="plain")
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved rounds; the best counts (default 3).")
    parser.add_argument("--no-torch", action="store_true", help="Leave PyTorch out.")
    parser.add_argument("--json", help="Write the result as JSON here.")
    args = parser.parse_args()
    available = len(os.sched_getaffinity(0))
    try:
        counts = core_counts(args.cores, available)
    except ValueError:
        parser.error(f"--cores takes core counts separated by commas (1,2,16), got {args.cores!r}")
    if not counts:
        parser.error(f"--cores {args.cores}: this machine has {available} cores")
    part = "cores" if args.variant == "plain" else "cores-bn-dropout"
    title = (f"One epoch per thread setting and core count, 3072-512-512-10, batch 256, {args.rows:,} rows"
             + (", BatchNorm + dropout" if args.variant == "bn-dropout" else ""))
    scratch = Path(tempfile.mkdtemp(prefix="nnrun-bench-cores-"))
    best: dict[tuple[int, str], float] = {}
    choices: dict[int, str] = {}
    done: list[int] = []
    rounds, stopped = 0, False
    signal.signal(signal.SIGTERM, stop)
    try:
        data = scratch / "cifar-sized.npz"
        log(f"[{part}] writing {args.rows} CIFAR-shaped rows")
        # Standard-normal rows, used as they are (no centring or scaling), as bench_epoch.py's workload: raw 0..255
        # integers without centring made the reference run diverge in its tenth batch, so nothing was timed.
        rng = np.random.default_rng(0)
        np.savez(data, X=rng.standard_normal((args.rows + 1100, 3072), dtype=np.float32),
                 y=rng.integers(0, 10, args.rows + 1100))
        train_args = [str(QUICKSTART), "--set", "data.dataset=npz", "--set", f"data.path={data}", *REFERENCE,
                      *(BN_DROPOUT if args.variant == "bn-dropout" else [])]
        for round_ in range(args.repeats):
            for cores in measuring_order(counts):
                measure(cores, round_, part, train_args, scratch, data, args, best, choices)
                if cores not in done:
                    done.append(cores)
                if args.json:  # what is measured so far, so that a stopped run (a timeout, Ctrl-C) still leaves it
                    save_result(summary(part, title, done, (rounds, args.repeats), best, choices, available),
                               args.json)
            rounds += 1
    except KeyboardInterrupt:
        log(f"[{part}] stopped after {rounds} complete round(s); the table has the core counts measured so far")
        if not done:
            raise SystemExit(1) from None
        stopped = True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_result(summary(part, title, done, (rounds, args.repeats), best, choices, available), args.json)
    if stopped:
        raise SystemExit(1)


def stop(signum: int, frame: object) -> None:
    """SIGTERM (`timeout`'s) stops the part as Ctrl-C does: the running epoch's process is killed, the table of
    what was measured is printed and written, and the scratch data is removed."""
    raise KeyboardInterrupt


def measure(cores: int, round_: int, part: str, train_args: list[str], scratch: Path, data: Path,
            args: argparse.Namespace, best: dict[tuple[int, str], float], choices: dict[int, str]) -> None:
    """One round on `cores` cores: every thread setting's epoch, the products alone and PyTorch's epoch, each kept
    in `best` when it is the fastest so far (the default policy's thread choice in `choices`)."""
    settings = [*(str(t) for t in thread_counts(cores)), "default", *ELEMENTWISE]
    for setting in settings:
        extra = ["--threads", setting] if setting.isdigit() else []
        env = {cpu_kernels.ENV: ELEMENTWISE.get(setting, "1")}
        log(f"[{part}] round {round_ + 1}: {cores} cores, threads {setting}")
        folder = scratch / f"c{cores}-t{setting.replace(' ', '-')}"
        seconds, choice = nnrun_epoch(cores, [*train_args, *extra], folder, env)
        best[(cores, setting)] = min(seconds, best.get((cores, setting), float("inf")))
        if setting == "default":
            choices[cores] = choice
    seconds = products_epoch(cores, args.rows)
    best[(cores, "products")] = min(seconds, best.get((cores, "products"), float("inf")))
    if not args.no_torch:
        seconds = torch_epoch(cores, data, args.variant)
        if seconds is not None:
            best[(cores, "torch")] = min(seconds, best.get((cores, "torch"), float("inf")))


def summary(part: str, title: str, counts: list[int], rounds: tuple[int, int], best: dict[tuple[int, str], float],
            choices: dict[int, str], available: int) -> dict:
    """The part's result over the core counts `counts` measured so far; `rounds` is (rounds finished, rounds
    planned): each row is the best of the rounds that reached it."""
    rows, checks = [], []
    for cores in sorted(counts):
        fixed = {t: best[(cores, str(t))] for t in thread_counts(cores)}
        best_t = min(fixed, key=fixed.get)
        default = best[(cores, "default")]
        torch = best.get((cores, "torch"))
        for t, seconds in fixed.items():
            rows.append({"name": f"{cores} cores, --threads {t}", "seconds": seconds,
                         "ratio": seconds / torch if torch else None})
        rows.append({"name": f"{cores} cores, default policy ({choices.get(cores, '?')})", "seconds": default,
                     "ratio": default / torch if torch else None})
        for setting, value in ELEMENTWISE.items():
            seconds = best[(cores, setting)]
            rows.append({"name": f"{cores} cores, default policy, {setting} element-wise work ({cpu_kernels.ENV}="
                                 f"{value})", "seconds": seconds, "ratio": seconds / torch if torch else None})
        products = best[(cores, "products")]
        rows.append({"name": f"{cores} cores, the epoch's matrix products alone ({products / default:.0%} of the "
                             "default epoch)", "seconds": products, "ratio": products / torch if torch else None})
        if torch:
            rows.append({"name": f"{cores} cores, PyTorch CPU ({cores} threads)", "seconds": torch})
        checks.append(check(f"{cores} cores: default policy / best fixed --threads ({best_t})",
                            default / fixed[best_t], POLICY_SLACK, "<=", "x"))
        if cores in EPOCH_TARGETS:
            to_torch, share = EPOCH_TARGETS[cores]
            if torch:
                checks.append(check(f"{cores} cores: nnrun's default epoch / PyTorch's", default / torch, to_torch,
                                    "<=", "x"))
            checks.append(check(f"{cores} cores: the products' share of nnrun's default epoch",
                                products / default, share, ">=", "%"))
    notes = [f"machine: {available} cores available; each core count pins every process to the first CPUs of "
             "this process's affinity; epoch seconds from metrics.jsonl (nnrun) and the epoch loop (PyTorch)",
             "'ratio' = the row's time / PyTorch's on the same cores",
             f"rounds finished: {rounds[0]} of {rounds[1]}; each row is the best of the rounds that reached it"]
    return part_result(part, title, rows, checks, notes)


if __name__ == "__main__":
    main()
