"""The GPU checks on the real CIFAR-10 copy, each a whole `nnrun` command with its own timeout, in one time budget.

Items, in this order (the longest last, so that the others' figures are in even if time runs out):
1. warm-up: `cifar10_bn_dropout.yaml` for one epoch on 2,560 images (fills nnrun's CIFAR-10 cache and
   CuPy's kernel cache, so the next command's wall time is that of a warm machine);
2. `configs/cifar10_bn_dropout.yaml`, 20 epochs: training time (<= 2 s), whole command (<= 10 s), test accuracy;
3. `configs/cifar10_best.yaml`: test accuracy (>= 63 %, its 2-core three-seed mean is 65.4 %);
4. the sweep of bench/gpu_sweep.py: runs per hour of a 16-point notes-study sweep at --jobs 1, 2, 4, 8;
5. `configs/cifar10_long.yaml`, its 100 epochs: test accuracy (checkpoints every 10 epochs instead of every
   epoch: the same training, less disk traffic), training time (<= 180 s). Stopped by its timeout, it saves
   its state and its summary says how far it got.

Not in the default list: `long-s1` and `long-s2`, the same run with seeds 1 and 2. With `long` they make the
recipe's three-seed figure (`--items long,long-s1,long-s2`, `bash bench/gpu_check.sh recipes`): the summary
then gives the mean and std of the test accuracy over the seeds that finished (target: mean >= 65 %, each
run's training within 3 minutes).

Every `nnrun train` runs as `python -m nnrun train CONFIG --device gpu --set data.root=FOLDER --out DIR
--json` (runs under a temporary folder). The commands' output goes to `--log`; one JSON object to `--json`;
the last lines printed are a plain summary table. A failed or timed-out item is recorded and the next
one runs.

Usage: python bench/gpu_real.py --data FOLDER [--budget 300] [--log PATH] [--json PATH] [--device gpu]
       python bench/gpu_real.py --data FOLDER --dry-run    # list the commands, run nothing
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_sweep  # noqa: E402  (bench/ is not a package)

REPO = Path(__file__).resolve().parent.parent
BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
           "batches.meta")
ITEMS = ("warm-up", "bn_dropout", "best", "sweep", "long", "long-s1", "long-s2")
DEFAULT_ITEMS = ("warm-up", "bn_dropout", "best", "sweep", "long")
LONG_SEEDS = ("long", "long-s1", "long-s2")
"""The items of `configs/cifar10_long.yaml`'s three-seed figure (seeds 0, 1, 2)."""


def item_specs(device: str) -> dict[str, dict[str, Any]]:
    """Config, extra --set values, timeout (s) and targets of each `nnrun train` item."""
    return {
        "warm-up": {"config": "configs/cifar10_bn_dropout.yaml", "set": ["train.epochs=1", "data.train_size=2560"],
                    "timeout": 90, "targets": {}},
        "bn_dropout": {"config": "configs/cifar10_bn_dropout.yaml", "set": ["train.epochs=20"], "timeout": 90,
                       "targets": {"training_s": ("<=", 2.0), "wall_s": ("<=", 10.0)}},
        "best": {"config": "configs/cifar10_best.yaml", "set": ["train.checkpoint_every=10"], "timeout": 300,
                 "targets": {"test_accuracy": (">=", 0.63)}},
        **{name: {"config": "configs/cifar10_long.yaml", "set": ["train.checkpoint_every=10", f"seed={seed}"],
                  "timeout": 420, "targets": {"training_s": ("<=", 180.0)}}
           for seed, name in enumerate(LONG_SEEDS)},
    }


def missing_batches(folder: Path) -> list[str]:
    """The CIFAR-10 files not (yet) in `folder`."""
    return [name for name in BATCHES if not (folder / name).is_file()]


def train_command(python: str, device: str, data: str, spec: dict[str, Any], out: Path) -> list[str]:
    """The `nnrun train` command line of an item."""
    cmd = [python, "-m", "nnrun", "train", spec["config"], "--device", device, "--out", str(out), "--json",
           "--set", f"data.root={data}"]
    for value in spec["set"]:
        cmd += ["--set", value]
    return cmd


def read_run(out: Path) -> dict[str, Any]:
    """What a run directory says: status, epochs done, training seconds, accuracies, step path."""
    info: dict[str, Any] = {}
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    try:
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        rows = []
    info["run_status"] = summary.get("status")
    if summary.get("reason"):
        info["reason"] = str(summary["reason"])[:300]
    info["epochs_done"] = len(rows)
    info["training_s"] = round(sum(row.get("seconds", 0.0) for row in rows), 3) if rows else summary.get("seconds")
    for key in ("test_accuracy", "val_accuracy", "best_epoch", "step_path", "seconds_per_epoch"):
        if summary.get(key) is not None:
            info[key] = summary[key]
    if rows and "val_accuracy" not in info:
        info["val_accuracy"] = rows[-1].get("val_accuracy")
    return info


def met(value: Any, op: str, limit: float) -> bool:
    return isinstance(value, (int, float)) and (value <= limit if op == "<=" else value >= limit)


def run_train_item(name: str, args: argparse.Namespace, tmp: Path, timeout: float, log_file) -> dict[str, Any]:
    """Run one `nnrun train` item and read its run directory."""
    spec = item_specs(args.device)[name]
    out = tmp / name
    cmd = train_command(args.python, args.device, args.data, spec, out)
    result: dict[str, Any] = {"item": name, "command": " ".join(cmd), "timeout_s": round(timeout)}
    log_file.write(f"\n==== {name}: {' '.join(cmd)} (timeout {timeout:.0f} s)\n")
    log_file.flush()
    if args.dry_run:  # the config and overrides checked by `nnrun validate`, nothing trained
        check = [args.python, "-m", "nnrun", "validate", spec["config"], "--set", f"train.device={args.device}",
                 "--set", f"data.root={args.data}", *[a for value in spec["set"] for a in ("--set", value)]]
        rc, _, _, _, err = gpu_sweep.run_limited(check, 60, log_file)
        return {**result, "rc": rc, "status": "dry run" if rc == 0 else "invalid",
                **({"reason": f"nnrun validate exit {rc}: {err}"} if rc != 0 else {})}
    rc, wall, stdout, timed_out, err = gpu_sweep.run_limited(cmd, timeout, log_file)
    log_file.write(stdout[-4000:] + f"\n==== {name}: exit {rc}, {wall:.1f} s{' (timed out)' if timed_out else ''}\n")
    log_file.flush()
    result.update(rc=rc, wall_s=round(wall, 2), timed_out=timed_out, **read_run(out))
    if rc != 0 and not result.get("reason"):
        result["reason"] = err
    checks = {key: rc == 0 and met(result.get(key), op, limit) for key, (op, limit) in spec["targets"].items()}
    result["targets"] = {key: f"{op} {limit}" for key, (op, limit) in spec["targets"].items()}
    result["targets_met"] = checks
    result["status"] = "timed out" if timed_out else "ok" if rc == 0 else f"exit {rc}"
    return result


def run_sweep_item(args: argparse.Namespace, budget: float, log_file) -> dict[str, Any]:
    """The notes-study sweep of bench/gpu_sweep.py at --jobs 1, 2, 4, 8, within `budget` seconds."""
    sweep_args = argparse.Namespace(device=args.device, jobs=list(gpu_sweep.GPU_JOBS), threads=None,
                                    data_root=args.data, timeout=min(60.0, budget), budget=budget,
                                    no_warm_up=True, dry_run=args.dry_run, python=args.python, log=None)
    start = time.perf_counter()
    log_file.write(f"\n==== sweep: bench/gpu_sweep.py, --jobs {sweep_args.jobs}, budget {budget:.0f} s\n")
    log_file.flush()
    result = gpu_sweep.run(sweep_args, log_file=log_file)
    ok = all(r.get("status") == "ok" for r in result["rows"])
    return {"item": "sweep", "status": "ok" if ok else "failed", "wall_s": round(time.perf_counter() - start, 2),
            "sweep": result}


def fmt(value: Any, kind: str) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:.2%}" if kind == "acc" else f"{value:.1f}" if kind == "s" else str(value)


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The plain table printed last."""
    lines = [f"real-data summary ({result['device']}, data {result['data']}; budget {result['budget_s']:.0f} s, "
             f"used {result.get('used_s', 0):.0f} s)"]
    if result.get("error"):
        lines.append(f"error: {result['error']}")
    lines.append(f"{'item':<11} {'status':<10} {'wall s':>7} {'train s':>8} {'epochs':>6} {'test acc':>8}  "
                 "targets; step path")
    for item in result["items"]:
        if item["item"] == "sweep":
            continue
        targets = ", ".join(f"{k} {v} {'ok' if item.get('targets_met', {}).get(k) else 'MISSED'}"
                            for k, v in item.get("targets", {}).items())
        val = item.get("val_accuracy")
        progress = (f"val {val:.2%} after {item.get('epochs_done')} epochs"
                    if item.get("test_accuracy") is None and isinstance(val, (int, float)) else "")
        extra = "; ".join(x for x in (targets, str(item.get("step_path", "")), progress,
                                      str(item.get("reason", ""))) if x)
        lines.append(f"{item['item']:<11} {item['status']:<10} {fmt(item.get('wall_s'), 's'):>7} "
                     f"{fmt(item.get('training_s'), 's'):>8} {fmt(item.get('epochs_done'), 'n'):>6} "
                     f"{fmt(item.get('test_accuracy'), 'acc'):>8}  {extra}")
    accuracies = [item["test_accuracy"] for item in result["items"]
                  if item["item"] in LONG_SEEDS and isinstance(item.get("test_accuracy"), (int, float))]
    if len(accuracies) > 1:
        mean, std = float(np.mean(accuracies)), float(np.std(accuracies, ddof=1))
        lines.append(f"cifar10_long over {len(accuracies)} seeds: test {mean:.2%} +- {std:.2%} (target mean >= 65 %: "
                     f"{'ok' if mean >= 0.65 else 'MISSED'})")
    for item in result["items"]:
        if item["item"] == "sweep":
            lines += gpu_sweep.summary_lines(item["sweep"])
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("NNRUN_TEST_CIFAR10"),
                        help="The cifar-10-batches-py folder (default: $NNRUN_TEST_CIFAR10).")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu", help="Where the runs compute.")
    parser.add_argument("--budget", type=float, default=300.0, help="Seconds for all the items (default 300).")
    parser.add_argument("--items", default=",".join(DEFAULT_ITEMS),
                        help=f"Comma-separated items of {', '.join(ITEMS)} (default {','.join(DEFAULT_ITEMS)}).")
    parser.add_argument("--python", default=sys.executable, help="The Python that runs nnrun (default: this one).")
    parser.add_argument("--dry-run", action="store_true", help="List the commands; run nothing.")
    parser.add_argument("--log", metavar="PATH", help="Append the commands' output to PATH.")
    parser.add_argument("--json", metavar="PATH", help="Write the result as JSON to PATH.")
    args = parser.parse_args(argv)
    items = [item for item in args.items.split(",") if item]
    unknown = [item for item in items if item not in ITEMS]
    if unknown:
        parser.error(f"unknown item(s) {', '.join(unknown)}; choose from {', '.join(ITEMS)}")
    started = time.perf_counter()
    deadline = started + args.budget
    result: dict[str, Any] = {"part": "gpu-real", "device": args.device, "data": args.data, "budget_s": args.budget,
                              "items": []}
    missing = missing_batches(Path(args.data)) if args.data else list(BATCHES)
    if not args.data:
        result["error"] = "no CIFAR-10 folder: pass --data or set NNRUN_TEST_CIFAR10"
    elif missing:
        result["error"] = f"{args.data} lacks {', '.join(missing)}"
    if result.get("error") and not args.dry_run:
        items = []
    with tempfile.TemporaryDirectory(prefix="nnrun-gpu-real-") as tmp, \
            gpu_sweep.open_log(args.log) as log_file:
        for name in items:
            left = deadline - time.perf_counter()
            if left < 15 and not args.dry_run:
                result["items"].append({"item": name, "status": "skipped", "reason": "out of the time budget"})
                continue
            print(f"[real] {name} (up to {left:.0f} s left)", file=sys.stderr, flush=True)
            try:
                if name == "sweep":
                    # Leave the long run at least half of what is left after the sweep's share.
                    item = run_sweep_item(args, min(130.0, max(left - 60.0, left / 2)), log_file)
                else:
                    timeout = min(item_specs(args.device)[name]["timeout"], left)
                    item = run_train_item(name, args, Path(tmp), timeout, log_file)
            except Exception as e:  # record it and go on with the next item
                item = {"item": name, "status": "failed", "reason": f"{type(e).__name__}: {e}"}
            print(f"[real] {name}: {item['status']} in {item.get('wall_s', '-')} s", file=sys.stderr, flush=True)
            result["items"].append(item)
            if args.json:  # after every item, so a cut-off session still has the figures so far
                result["used_s"] = time.perf_counter() - started
                Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    result["used_s"] = time.perf_counter() - started
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print("\n".join(summary_lines(result)), flush=True)
    ok = not result.get("error") and all(item["status"] in ("ok", "dry run") for item in result["items"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
