"""CIFAR-10 load time through nnrun: cold (from the python batches, with an empty NNRUN_CACHE_DIR)
and warm (from nnrun's cache), against the plain `pickle.load` a script would do.

Each figure is `nnrun.experiment.load_data` for the cifar10 config (split, validation carved,
float32 conversion of every split included). "Cold" means nnrun's cache is empty; the operating
system's file cache is warm after the first read, so the figure is the parsing, not the disk.

Usage: python bench/bench_load.py [--cifar10 FOLDER] [--repeats 3] [--json PATH]
FOLDER is a `cifar-10-batches-py` folder (default: $NNRUN_TEST_CIFAR10); the part skips without it.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import check, cifar10_folder, log, part_parser, part_result, rounds, skip_result, summarize, write_result

CACHE_ENV = "NNRUN_CACHE_DIR"


def data_config(folder: Path):
    """The validated config of a cifar10 run rooted at `folder`."""
    from nnrun.config import validate_config

    return validate_config({"data": {"dataset": "cifar10", "root": str(folder), "val_size": 1000}}, "bench")


class NnrunLoad:
    """`load_data` with NNRUN_CACHE_DIR pointing at a cache folder: empty each time (cold) or filled (warm)."""

    def __init__(self, folder: Path, cold: bool, scratch: Path):
        self.cfg, self.cold, self.scratch = data_config(folder), cold, scratch
        self.count = 0
        self.warm_dir = scratch / "warm"

    def __call__(self) -> float:
        from nnrun.experiment import load_data

        if self.cold:
            self.count += 1
            cache = self.scratch / f"cold-{self.count}"
        else:
            cache = self.warm_dir
            if not cache.exists():  # fill the cache once, untimed
                os.environ[CACHE_ENV] = str(cache)
                load_data(self.cfg)
        os.environ[CACHE_ENV] = str(cache)
        start = time.perf_counter()
        data = load_data(self.cfg)
        seconds = time.perf_counter() - start
        assert data.X_train.shape[1] == 3072
        del data
        if self.cold:
            shutil.rmtree(cache, ignore_errors=True)
        return seconds


class PickleLoad:
    """What a script does without nnrun: unpickle the six batches, concatenate, convert to float32."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __call__(self) -> float:
        start = time.perf_counter()
        parts = []
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            with open(self.folder / name, "rb") as f:
                parts.append(pickle.load(f, encoding="bytes"))
        X = np.concatenate([p[b"data"] for p in parts[:5]]).astype(np.float32)
        X_test = parts[5][b"data"].astype(np.float32)
        seconds = time.perf_counter() - start
        del X, X_test
        return seconds


def main() -> None:
    parser = part_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--cifar10", metavar="FOLDER", help="cifar-10-batches-py folder (default $NNRUN_TEST_CIFAR10).")
    args = parser.parse_args()
    part, title = "load", "CIFAR-10 load (60,000 images to float32 splits)"
    folder = cifar10_folder(args.cifar10)
    if folder is None:
        write_result(skip_result(part, title, "no CIFAR-10 copy: pass --cifar10 FOLDER or set NNRUN_TEST_CIFAR10"),
                     args.json)
        return
    scratch = Path(tempfile.mkdtemp(prefix="nnrun-bench-load-"))
    try:
        competitors = {"nnrun cold (empty cache, from the batches)": NnrunLoad(folder, True, scratch),
                       "nnrun warm (from the cache)": NnrunLoad(folder, False, scratch),
                       "plain pickle.load + float32": PickleLoad(folder)}
        times = rounds(competitors, args.repeats, progress=lambda m: log(f"[{part}] {m}"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = [{"name": name, **summarize(ts)} for name, ts in times.items()]
    checks = [check("warm CIFAR-10 load", min(times["nnrun warm (from the cache)"]), 1.0, "<=", "s")]
    notes = [f"data: {folder}; 'cold' empties nnrun's cache, the OS file cache stays warm"]
    write_result(part_result(part, title, rows, checks, notes), args.json)


if __name__ == "__main__":
    main()
