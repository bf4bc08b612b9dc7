"""How close `nnrun study`'s time estimate comes to the time the study then takes.

A study of CIFAR-shaped work (3072 inputs, one hidden layer of 100 ReLU units, 10 classes; random rows of an npz,
so no download): three claims, two of them with a learning rate chosen on the validation split, two seeds each.
It runs as a user runs it, `nnrun study FILE --out DIR`, once with `--jobs 1` and every core's BLAS threads,
and once with one job per core and one thread each. Each session's estimate and wall seconds are read from
the output's sessions.json. With `--cifar10 FOLDER` it also runs two claims of studies/notes.yaml at the quick
budget on real CIFAR-10 (its data load is part of the estimate).

Target: estimate / actual between 0.67 and 1.5 for every setting (a plan's bound, `max_minutes`, refuses a
study on the estimate, so one several times too long stops a study that would fit).

Usage: python bench/bench_estimate.py [--rows 12000] [--cifar10 FOLDER] [--json PATH]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import yaml
from common import REPO, check, cifar10_folder, log, nnrun_command, part_parser, part_result, write_result

LIMITS = (0.67, 1.5)
"""The estimate over the actual wall time must lie between these."""
MIN_ROWS = 3000
"""The synthetic npz's fewest rows: its 1,000 validation and 1,000 test rows and a training split."""
NOTES_CLAIMS = "mean_subtraction,uniform_init"
"""The claims of studies/notes.yaml run at the quick budget with --cifar10."""


def synthetic_study(data: Path) -> dict:
    """The study file (as a dict) over the npz at `data`."""
    return {
        "name": "estimate", "title": "Estimate check", "analysis": "paired",
        "base": {"name": "estimate", "seed": 0, "data": {"dataset": "npz", "path": str(data), "val_size": 1000,
                                                           "test_size": 1000},
                 "preprocess": {"center": "per_feature", "scale": "std"},
                 "model": {"hidden": [100], "activation": "relu", "init": "he"},
                 "loss": {"name": "softmax"}, "optim": {"name": "momentum", "lr": 0.01, "momentum": 0.9},
                 "train": {"epochs": 4, "batch_size": 128}},
        "default_budget": "check",
        "budgets": {"check": {"description": "the bench's", "seeds": 2}},
        "claims": [
            {"id": "init", "statement": "He trains as well as Xavier.", "metric": "test_accuracy",
             "arms": {"he": {}, "xavier": {"model.init": "xavier"}},
             "expect": [{"a": "he", "relation": "about_equal", "b": "xavier", "margin": 0.05}]},
            {"id": "l2", "statement": "L2 chosen on val helps.", "metric": "test_accuracy",
             "arms": {"none": {}, "l2": {"select": {"regularization.l2": [0.0001, 0.001, 0.01]}}},
             "expect": [{"a": "l2", "relation": "at_least", "b": "none", "margin": 0.02}]},
            {"id": "loss", "statement": "The SVM loss is about as good as softmax.", "metric": "test_accuracy",
             "select": {"optim.lr": [0.01, 0.003]},
             "arms": {"softmax": {}, "svm": {"loss.name": "svm"}},
             "expect": [{"a": "svm", "relation": "about_equal", "b": "softmax", "margin": 0.05}]},
        ]}


def run_study(args: list[str], out: Path) -> tuple[float, float, int]:
    """(estimate seconds, wall seconds, runs trained) of `nnrun study ARGS --out OUT`."""
    proc = subprocess.Popen([*nnrun_command(), "study", *args, "--out", str(out), "--quiet"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate()
    except BaseException:  # stopped (Ctrl-C, SIGTERM): the study stops its runs, then the scratch folder goes
        proc.terminate()
        proc.wait()
        raise
    if proc.returncode != 0:  # 0: finished (whatever its verdicts); 1: interrupted or a run failed; 2: bad input
        raise SystemExit(f"nnrun study {' '.join(args)} exited {proc.returncode}: {stderr[-800:]}")
    session = json.loads((out / "sessions.json").read_text())[-1]
    return session["estimate_seconds"], session["wall_seconds"], session["trained"]


def stop(signum: int, frame: object) -> None:
    """SIGTERM ends the part as Ctrl-C does: its study stopped, its scratch folder removed."""
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    parser = part_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=12_000, help="Rows of the synthetic npz (default 12000).")
    parser.add_argument("--cifar10", help="A CIFAR-10 python-batches folder (or its parent; default "
                                          "$NNRUN_TEST_CIFAR10): also time two notes claims on it.")
    args = parser.parse_args()
    if args.rows < MIN_ROWS:
        parser.error(f"--rows must be at least {MIN_ROWS} (1,000 validation, 1,000 test and training rows), "
                     f"got {args.rows}")
    folder = cifar10_folder(args.cifar10)
    if args.cifar10 and folder is None:
        parser.error(f"--cifar10 {args.cifar10}: no data_batch_1 there or in its cifar-10-batches-py folder")
    cores = len(os.sched_getaffinity(0))
    scratch = Path(tempfile.mkdtemp(prefix="nnrun-bench-estimate-"))
    try:
        rows, checks = measure(scratch, args.rows, cores, folder)
    except KeyboardInterrupt:
        log("[estimate] stopped: no result")
        raise SystemExit(1) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    notes = ["'seconds' = the study's wall time (sessions.json); 'ratio' = its estimate / that wall time",
             f"the synthetic study: {args.rows:,} random CIFAR-shaped rows, 3072-100-10, 4 epochs, 2 seeds"]
    if folder is None:
        notes.append("no CIFAR-10 copy (--cifar10 or $NNRUN_TEST_CIFAR10): the notes claims were not timed")
    write_result(part_result("estimate", f"nnrun study's estimate against its wall time, {cores} cores", rows,
                             checks, notes), args.json)


def measure(scratch: Path, n_rows: int, cores: int, folder: Path | None) -> tuple[list[dict], list[dict]]:
    """(table rows, checks) of every setting, its studies written and run under `scratch`."""
    rng = np.random.default_rng(0)
    data = scratch / "cifar-shaped.npz"
    np.savez(data, X=rng.standard_normal((n_rows, 3072), dtype=np.float32), y=rng.integers(0, 10, n_rows))
    study = scratch / "estimate.yaml"
    study.write_text(yaml.safe_dump(synthetic_study(data), sort_keys=False))
    settings = {f"--jobs 1 --threads {cores}": [str(study), "--jobs", "1", "--threads", str(cores)],
                f"--jobs {cores} --threads 1": [str(study), "--jobs", str(cores), "--threads", "1"]}
    if folder is not None:
        settings[f"notes quick ({NOTES_CLAIMS}), --jobs {cores} --threads 1"] = [
            str(REPO / "studies" / "notes.yaml"), "--budget", "quick", "--only", NOTES_CLAIMS,
            "--jobs", str(cores), "--threads", "1", "--set", f"data.root={folder}"]
    rows, checks = [], []
    for index, (name, study_args) in enumerate(settings.items()):
        log(f"[estimate] {name}")
        estimate, wall, trained = run_study(study_args, scratch / f"out{index}")
        ratio = estimate / wall
        rows.append({"name": f"{name}: {trained} runs, estimated {estimate:.0f} s", "seconds": wall, "ratio": ratio})
        checks.append(check(f"{name}: estimate / actual at least", ratio, LIMITS[0], ">="))
        checks.append(check(f"{name}: estimate / actual at most", ratio, LIMITS[1], "<="))
    return rows, checks

if __name__ == "__main__":
    main()
