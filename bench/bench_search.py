"""Optuna search against random search, and ASHA pruning against the full search, on the bundled digits.

The base is configs/sweep_digits.yaml with 400 training images and a 30 % validation split (`SETTINGS`), so
that the best validation accuracy does not saturate and ties less often. For each seed (the sampler's: the
base config, its split and its training seed stay the same):

- `nnrun sweep configs/sweep_digits.yaml --search tpe --trials 40 --jobs 2 --space ...`;
- `nnrun sweep configs/sweep_digits.yaml --random 40 --jobs 2 --space ...` (nnrun's own random points over the
  same space);
- the TPE search again with `--prune asha`.

It reports the best validation accuracy each search found (and that run's test accuracy), and the epochs
the pruned search trained as a share of the full one's. Acceptance (issue 28): TPE at least as high as
random on every seed, and ASHA at most 50 % of the epochs. Each search runs in its own runs-dir, so nothing
is shared between them (`--keep DIR` keeps them there; default: a temporary folder).

Usage: python bench/bench_search.py [--seeds 0,1,2] [--trials 40] [--jobs 2] [--epochs 20] [--keep DIR]
                                    [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIG = "configs/sweep_digits.yaml"
SPACE = ["optim.lr=loguniform(1e-4,1)", "regularization.l2=loguniform(1e-6,1e-1)",
         "model.hidden=choice([32],[64],[128])"]
"""The search space: a learning rate over four decades (the upper ones diverge), L2 over five, three widths."""
SETTINGS = ["data.train_size=400", "data.val_size=0.3"]
"""A harder, finer-grained digits: 400 training images (the full 1,000 saturate at 143/144 of a 10 % validation
split, so every search ties), and 431 validation images."""


def sweep(runs_dir: Path, seed: int, trials: int, jobs: int, epochs: int, how: list[str]) -> dict[str, Any]:
    """Run one sweep as a subprocess; its --json report, the command line and the wall seconds."""
    cmd = [sys.executable, "-m", "nnrun", "sweep", CONFIG, "--seed", str(seed), "--jobs", str(jobs),
           "--set", f"train.epochs={epochs}", *(a for item in SETTINGS for a in ("--set", item)),
           "--runs-dir", str(runs_dir), "--quiet", "--json",
           *(a for item in SPACE for a in ("--space", item)), *how]
    started = time.time()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: some trial failed (a diverging learning rate): a result
        raise SystemExit(f"{shlex.join(cmd)} exited {done.returncode}:\n{done.stderr}")
    report = json.loads(done.stdout)
    report["_command"] = shlex.join(["nnrun", *cmd[3:]])
    report["_seconds"] = time.time() - started
    return report


def best_of(report: dict[str, Any]) -> dict[str, Any]:
    """The best completed run's val and test accuracy, the epochs all runs trained and the runs' outcomes."""
    runs = report["runs"]
    completed = [r for r in runs if r["status"] == "completed"]
    best = max(completed, key=lambda r: r["summary"]["val_accuracy"]) if completed else None
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {"val_accuracy": best["summary"]["val_accuracy"] if best else None,
            "val_loss": best["summary"]["val_loss"] if best else None,
            "test_accuracy": best["summary"]["test_accuracy"] if best else None,
            "params": best["params"] if best else None,
            "epochs": sum(int(r["summary"].get("epochs") or 0) for r in runs),
            "runs": len(runs), "statuses": statuses, "seconds": report["_seconds"], "command": report["_command"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="sampler seeds, comma-separated (default 0,1,2)")
    parser.add_argument("--trials", type=int, default=40, help="trials of each search (default 40)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--epochs", type=int, default=20, help="train.epochs of every run (default 20)")
    parser.add_argument("--keep", type=Path, help="keep the runs-dirs under this folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    root = args.keep or Path(tempfile.mkdtemp(prefix="nnrun-bench-search-"))
    searches = {"tpe": ["--search", "tpe", "--trials", str(args.trials)],
                "random": ["--random", str(args.trials)],
                "tpe+asha": ["--search", "tpe", "--trials", str(args.trials), "--prune", "asha"]}
    rows = []
    for seed in seeds:
        row: dict[str, Any] = {"seed": seed}
        for name, how in searches.items():
            print(f"seed {seed}: {name} ...", file=sys.stderr, flush=True)
            row[name] = best_of(sweep(root / f"{name}-{seed}", seed, args.trials, args.jobs, args.epochs, how))
        row["tpe_at_least_random"] = row["tpe"]["val_accuracy"] >= row["random"]["val_accuracy"]
        row["asha_epoch_share"] = row["tpe+asha"]["epochs"] / row["tpe"]["epochs"]
        rows.append(row)
        print(f"seed {seed}: best val accuracy tpe {row['tpe']['val_accuracy']:.4f}, random "
              f"{row['random']['val_accuracy']:.4f}, tpe+asha {row['tpe+asha']['val_accuracy']:.4f}; epochs tpe "
              f"{row['tpe']['epochs']}, tpe+asha {row['tpe+asha']['epochs']} "
              f"({100 * row['asha_epoch_share']:.0f} %)", file=sys.stderr, flush=True)
    print("\n| seed | TPE best val (test) | random best val (test) | TPE + ASHA best val (test) | epochs TPE | "
          "epochs TPE + ASHA | share | wall s TPE / random / ASHA |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [f"{r[k]['val_accuracy']:.4f} ({r[k]['test_accuracy']:.4f})" for k in searches]
        print(f"| {r['seed']} | {' | '.join(cells)} | {r['tpe']['epochs']} | {r['tpe+asha']['epochs']} | "
              f"{100 * r['asha_epoch_share']:.0f} % | "
              f"{' / '.join(format(r[k]['seconds'], '.0f') for k in searches)} |")
    ok_tpe = all(r["tpe_at_least_random"] for r in rows)
    ok_asha = all(r["asha_epoch_share"] <= 0.5 for r in rows)
    print(f"\nTPE at least as high as random on every seed: {'yes' if ok_tpe else 'no'}; ASHA at most 50 % of the "
          f"epochs on every seed: {'yes' if ok_asha else 'no'}")
    if args.json:
        args.json.write_text(json.dumps({"space": SPACE, "settings": SETTINGS, "config": CONFIG, "trials": args.trials,
                                         "jobs": args.jobs, "epochs": args.epochs, "rows": rows,
                                         "tpe_at_least_random": ok_tpe, "asha_at_most_half": ok_asha}, indent=1))


if __name__ == "__main__":
    main()
