"""Peak memory (max RSS) of `nnrun train` on the full CIFAR-10 copy with PCA whitening, one epoch.

`nnrun train configs/cifar10.yaml` runs as a child process with a warm data cache (filled first,
untimed); its own peak resident set size comes from `os.wait4`, so nothing else the benchmark
does is counted. The whitening keys are passed as `--set` overrides (by default
`preprocess.pca=3072` and `preprocess.whiten=true`; change them with `--whiten KEY=VALUE`).

Usage: python bench/bench_memory.py [--cifar10 FOLDER] [--whiten KEY=VALUE ...] [--json PATH]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    REPO,
    check,
    cifar10_folder,
    log,
    nnrun_command,
    part_parser,
    part_result,
    skip_result,
    write_result,
)

DEFAULT_WHITEN = ("preprocess.pca=3072", "preprocess.whiten=true")
CONFIG = REPO / "configs" / "cifar10.yaml"


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[int, float, float, str, str]:
    """Run `cmd`; return (exit code, seconds, its own peak RSS in MiB, stdout, stderr)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, seconds, usage.ru_maxrss / 1024, out.read(), err.read()


def main() -> None:
    parser = part_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--cifar10", metavar="FOLDER", help="cifar-10-batches-py folder (default $NNRUN_TEST_CIFAR10).")
    parser.add_argument("--whiten", metavar="KEY=VALUE", action="append",
                        help=f"Override that turns whitening on (repeatable; default: {' '.join(DEFAULT_WHITEN)}).")
    args = parser.parse_args()
    part, title = "memory", "Peak memory of `nnrun train` on full CIFAR-10 with PCA whitening, 1 epoch"
    folder = cifar10_folder(args.cifar10)
    if folder is None:
        write_result(skip_result(part, title, "no CIFAR-10 copy: pass --cifar10 FOLDER or set NNRUN_TEST_CIFAR10"),
                     args.json)
        return
    whiten = tuple(args.whiten or DEFAULT_WHITEN)
    overrides = [f"data.root={folder}", "train.epochs=1", "optim.lr=0.01", *whiten]
    sets = [x for o in overrides for x in ("--set", o)]
    scratch = Path(tempfile.mkdtemp(prefix="nnrun-bench-memory-"))
    env = {**os.environ, "NNRUN_CACHE_DIR": str(scratch / "cache")}
    try:
        check_cmd = [*nnrun_command(), "validate", str(CONFIG), *sets]
        valid = subprocess.run(check_cmd, capture_output=True, text=True, env=env, cwd=REPO)
        if valid.returncode != 0:
            said = valid.stderr.strip().splitlines()[-1] if valid.stderr.strip() else f"exit {valid.returncode}"
            reason = f"the config does not accept the whitening overrides {' '.join(whiten)} ({said})"
            write_result(skip_result(part, title, reason), args.json)
            return
        log(f"[{part}] filling the data cache (untimed)")
        prime = [sys.executable, "-c", "import sys; from pathlib import Path; "
                 "from nnrun.datasets.cifar10 import read_cifar10_cached; read_cifar10_cached(Path(sys.argv[1]))",
                 str(folder)]
        subprocess.run(prime, check=True, env=env, cwd=REPO)
        cmd = [*nnrun_command(), "train", str(CONFIG), *sets, "--out", str(scratch / "run"), "--json", "--quiet"]
        log(f"[{part}] {' '.join(cmd)}")
        code, seconds, peak, stdout, stderr = run_measured(cmd, env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    notes = [f"command: nnrun train configs/cifar10.yaml {' '.join(sets)} --json --quiet"]
    summary = {}
    if code == 0:
        summary = json.loads(stdout.strip().splitlines()[-1])
    else:
        notes.append(f"nnrun train exited {code}: {stderr.strip()[-400:]}")
    row = {"name": "nnrun train, whitened CIFAR-10, 1 epoch", "seconds": seconds, "peak_rss_mib": peak}
    if summary:
        notes.append(f"test accuracy after 1 epoch {summary.get('test_accuracy', float('nan')):.3f}; "
                     f"training epoch {summary.get('seconds_per_epoch', float('nan')):.1f} s")
    checks = [check("peak RSS of nnrun train (whitened CIFAR-10)", peak if code == 0 else None, 2048, "<=", "MiB")]
    write_result(part_result(part, title, [row], checks, notes), args.json)


if __name__ == "__main__":
    main()
