"""Several runs on one device: the runs per hour of a 16-point CIFAR-10 sweep at several --jobs values.

Each run has the shape of the notes study's quick budget (studies/notes.yaml: `base` plus the
`quick` budget's `set`): a 3072-100-10 ReLU MLP, momentum SGD, batches of 128, 4,000 training
images (data.train_size), 1,000 validation images, the 10,000 test images, 5 epochs. The grid is
optim.lr in {0.03, 0.01, 0.003, 0.001} x seed in {0, 1, 2, 3}. For every --jobs value the whole
sweep runs as `python -m nnrun sweep CONFIG --grid ... --device DEVICE --jobs N --runs-dir FRESH
--json` in its own fresh runs folder; its wall clock (process start to exit, imports and worker
start-up included) gives runs per hour = completed runs / wall hours. One untimed one-epoch run
first fills the CIFAR-10 cache (and CuPy's kernel cache on a GPU).

Usage:
  python bench/gpu_sweep.py --data-root /path/to/cifar-10-batches-py               # GPU, --jobs 1,2,4,8
  python bench/gpu_sweep.py --cpu --data-root /path/to/cifar-10-batches-py         # CPU, --jobs 1,2
  python bench/gpu_sweep.py --dry-run --data-root ...   # plan each sweep (nnrun sweep --dry-run), run nothing
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
STUDY = REPO / "studies" / "notes.yaml"
BUDGET = "quick"
GRID = ("optim.lr=0.03,0.01,0.003,0.001", "seed=0,1,2,3")
POINTS = 16
GPU_JOBS = (1, 2, 4, 8)
CPU_JOBS = (1, 2)


def log(message: str) -> None:
    """Progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def notes_config() -> dict[str, Any]:
    """The notes study's base config with its quick budget's `set` applied (dotted keys)."""
    study = yaml.safe_load(STUDY.read_text())
    config = json.loads(json.dumps(study["base"]))  # a deep copy
    for key, value in study["budgets"][BUDGET].get("set", {}).items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    config["name"] = "sweep-notes"
    return config


def parse_jobs(text: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8] (each at least 1)."""
    try:
        jobs = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--jobs takes comma-separated integers, got {text!r}") from None
    if not jobs or min(jobs) < 1:
        raise argparse.ArgumentTypeError(f"--jobs takes integers >= 1, got {text!r}")
    return jobs


def nnrun_command(python: str) -> list[str]:
    """How to call nnrun: the module, so a checkout that is only on PYTHONPATH works too."""
    return [python, "-m", "nnrun"]


def sweep_command(args: argparse.Namespace, config: Path, runs_dir: Path, jobs: int) -> list[str]:
    """The `nnrun sweep` command line of one measured sweep."""
    cmd = [*nnrun_command(args.python), "sweep", str(config)]
    for grid in GRID:
        cmd += ["--grid", grid]
    cmd += ["--device", args.device, "--jobs", str(jobs), "--runs-dir", str(runs_dir), "--json"]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.data_root:
        cmd += ["--set", f"data.root={args.data_root}"]
    if args.dry_run:
        cmd.append("--dry-run")
    return cmd


def open_log(path: str | None):
    """The log to append the commands' stderr to: `path`, else a temporary file (so errors can still be quoted)."""
    if path:
        return open(path, "a")
    return tempfile.NamedTemporaryFile("a+", prefix="nnrun-bench-", suffix=".log")


def stderr_tail(log_file, position: int, lines: int = 2) -> str:
    """The last `lines` non-empty lines written to `log_file` after `position` (a command's stderr), joined."""
    try:
        log_file.flush()
        with open(log_file.name, errors="replace") as f:
            f.seek(position)
            text = f.read()
    except (OSError, ValueError, AttributeError):
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("====")]
    return " | ".join(kept[-lines:])[-500:]


def run_limited(cmd: list[str], timeout: float, log_file) -> tuple[int | None, float, str, bool, str]:
    """Run `cmd` in its own process group with `timeout` seconds; on timeout SIGTERM the group (a sweep saves
    its runs as interrupted), then SIGKILL after 15 s. stderr goes to `log_file` (an open file). Returns (exit
    code, wall seconds, stdout, timed out, the last lines of stderr)."""
    log_file.flush()
    try:
        position = log_file.tell()
    except (OSError, ValueError):
        position = 0
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True, cwd=REPO,
                                start_new_session=True)
    except OSError as e:
        return None, 0.0, "", False, f"could not start: {e}"
    timed_out = False
    out = ""
    try:
        out, _ = proc.communicate(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        timed_out = True
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                out, _ = proc.communicate(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
    return proc.returncode, time.perf_counter() - start, out or "", timed_out, stderr_tail(log_file, position)


def read_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """summary.json of every run directory directly under `runs_dir` (those that wrote one)."""
    summaries = []
    for path in sorted(runs_dir.glob("*/summary.json")):
        try:
            summaries.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return summaries


def measure(args: argparse.Namespace, config: Path, work: Path, jobs: int, timeout: float, log_file) -> dict[str, Any]:
    """One sweep at `jobs`: its wall clock, completed and failed runs, runs per hour, how the steps ran."""
    runs_dir = work / f"jobs{jobs}"
    cmd = sweep_command(args, config, runs_dir, jobs)
    log_file.write(f"\n==== --jobs {jobs}: {' '.join(cmd)}\n")
    log_file.flush()
    rc, wall, out, timed_out, err = run_limited(cmd, timeout, log_file)
    row: dict[str, Any] = {"jobs": jobs, "rc": rc, "wall_s": round(wall, 2), "timed_out": timed_out}
    if args.dry_run:
        try:
            row["planned"] = len(json.loads(out).get("runs", []))
        except (ValueError, AttributeError):
            row["planned"] = None
        row["status"] = "ok" if rc == 0 and row["planned"] == POINTS else f"failed: {err}"
        return row
    summaries = read_runs(runs_dir)
    completed = [s for s in summaries if s.get("status") == "completed"]
    row.update(completed=len(completed), failed=POINTS - len(completed),
               runs_per_hour=round(len(completed) / wall * 3600, 1) if wall > 0 and completed else 0.0)
    accuracies = [s["test_accuracy"] for s in completed if isinstance(s.get("test_accuracy"), (int, float))]
    row["mean_test_accuracy"] = round(sum(accuracies) / len(accuracies), 4) if accuracies else None
    paths = sorted({str(s.get("step_path", "?")) for s in completed})
    row["step_path"] = "; ".join(paths) if paths else "?"
    row["status"] = ("timed out" if timed_out else "ok" if len(completed) == POINTS and rc == 0
                     else f"exit {rc}")
    if rc != 0 and not completed:
        row["error"] = err
    return row


def warm_up(args: argparse.Namespace, config: Path, work: Path, timeout: float, log_file) -> dict[str, Any]:
    """One one-epoch run, untimed in the table: fills the CIFAR-10 cache (and CuPy's kernel cache)."""
    cmd = [*nnrun_command(args.python), "train", str(config), "--device", args.device, "--out", str(work / "warm-up"),
           "--set", "train.epochs=1", "--json", "--quiet"]
    if args.data_root:
        cmd += ["--set", f"data.root={args.data_root}"]
    log_file.write(f"\n==== warm-up: {' '.join(cmd)}\n")
    log_file.flush()
    rc, wall, out, timed_out, err = run_limited(cmd, timeout, log_file)
    log_file.write(out[-2000:] + "\n")
    return {"rc": rc, "wall_s": round(wall, 2), "timed_out": timed_out, **({"error": err} if rc != 0 else {})}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The plain-text table printed last: one line per --jobs value."""
    lines = [f"sweep ({result['device']}, {POINTS} points, {result['shape']}): "
             f"warm-up {result['warm_up'].get('wall_s', '-')} s (rc {result['warm_up'].get('rc', '-')})"]
    base = next((r["runs_per_hour"] for r in result["rows"] if r.get("runs_per_hour")), None)
    lines.append(f"{'jobs':>4} {'wall s':>8} {'done':>5} {'runs/h':>8} {'vs first':>8} {'test acc':>8}  "
                 "status; step path")
    for r in result["rows"]:
        if "planned" in r:
            lines.append(f"{r['jobs']:>4} {r['wall_s']:>8.1f} {'-':>5} {'-':>8} {'-':>8} {'-':>8}  dry run: "
                         f"{r['planned']} points planned, {r['status']}")
            continue
        if r.get("status") == "skipped":
            lines.append(f"{r['jobs']:>4} {'-':>8} {'-':>5} {'-':>8} {'-':>8} {'-':>8}  skipped: {r.get('reason')}")
            continue
        rph = r.get("runs_per_hour") or 0.0
        gain = f"{rph / base:.2f}x" if base and rph else "-"
        acc = f"{r['mean_test_accuracy']:.3f}" if r.get("mean_test_accuracy") is not None else "-"
        lines.append(f"{r['jobs']:>4} {r['wall_s']:>8.1f} {r.get('completed', 0):>5} {rph:>8.0f} {gain:>8} {acc:>8}  "
                     f"{r['status']}; {r.get('step_path', '?')}" + (f"; {r['error']}" if r.get("error") else ""))
    best = max(result["rows"], key=lambda r: r.get("runs_per_hour") or 0.0, default=None)
    if best and best.get("runs_per_hour"):
        lines.append(f"best: {best['runs_per_hour']:.0f} runs/hour at --jobs {best['jobs']} on {result['device']}")
    return lines


def run(args: argparse.Namespace, log_file=None) -> dict[str, Any]:
    """Measure every --jobs value in order within `args.budget` seconds; returns the result object. The commands
    and their stderr go to `log_file` (an open file), else to `args.log`."""
    if log_file is None:
        with open_log(args.log) as log_file:
            return run(args, log_file)
    deadline = time.perf_counter() + args.budget
    config_dict = notes_config()
    shape = (f"3072-{'-'.join(str(h) for h in config_dict['model']['hidden'])}-10, "
             f"{config_dict['data'].get('train_size', 'all')} train images, {config_dict['train']['epochs']} epochs")
    result: dict[str, Any] = {"part": "gpu-sweep", "device": args.device, "points": POINTS, "grid": list(GRID),
                              "shape": shape, "config": config_dict, "data_root": args.data_root,
                              "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                              else os.cpu_count(), "warm_up": {}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="nnrun-sweep-bench-") as tmp:
        work = Path(tmp)
        config = work / "notes_quick.yaml"
        config.write_text(yaml.safe_dump(config_dict, sort_keys=False))
        if not args.dry_run and not args.no_warm_up:
            log(f"[sweep] warm-up run on {args.device}")
            try:
                result["warm_up"] = warm_up(args, config, work, min(args.timeout, args.budget), log_file)
            except Exception as e:
                result["warm_up"] = {"error": f"{type(e).__name__}: {e}"}
        for jobs in args.jobs:
            left = deadline - time.perf_counter()
            if left < 10:
                result["rows"].append({"jobs": jobs, "status": "skipped", "reason": "out of the time budget"})
                continue
            log(f"[sweep] {POINTS} runs on {args.device} with --jobs {jobs}")
            try:
                row = measure(args, config, work, jobs, min(args.timeout, left), log_file)
            except Exception as e:  # record it and go on with the next --jobs value
                row = {"jobs": jobs, "status": "failed", "wall_s": 0.0, "error": f"{type(e).__name__}: {e}"}
            log(f"[sweep] --jobs {jobs}: {row.get('status')} in {row['wall_s']} s, "
                f"{row.get('runs_per_hour', '-')} runs/hour")
            result["rows"].append(row)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="The same sweep on the CPU (--device cpu, --jobs 1,2).")
    parser.add_argument("--jobs", type=parse_jobs, default=None,
                        help="Comma-separated --jobs values (default 1,2,4,8 on the GPU, 1,2 with --cpu).")
    parser.add_argument("--threads", type=int, default=None, help="--threads for every sweep (default: nnrun's).")
    parser.add_argument("--data-root", default=os.environ.get("NNRUN_TEST_CIFAR10"),
                        help="data.root: the folder holding cifar-10-batches-py, or that folder "
                             "(default: $NNRUN_TEST_CIFAR10).")
    parser.add_argument("--timeout", type=float, default=150.0, help="Seconds one sweep may take (default 150).")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="Seconds for everything; --jobs values left when it runs out are skipped (default 600).")
    parser.add_argument("--no-warm-up", action="store_true", help="Skip the untimed one-epoch run first.")
    parser.add_argument("--dry-run", action="store_true", help="Plan each sweep (nnrun sweep --dry-run); run nothing.")
    parser.add_argument("--python", default=sys.executable, help="The Python that runs nnrun (default: this one).")
    parser.add_argument("--log", metavar="PATH", help="Append the commands and their stderr to PATH.")
    parser.add_argument("--json", metavar="PATH", help="Also write the result as JSON to PATH.")
    args = parser.parse_args(argv)
    args.device = "cpu" if args.cpu else "gpu"
    if args.jobs is None:
        args.jobs = list(CPU_JOBS if args.cpu else GPU_JOBS)
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print("\n".join(summary_lines(result)), flush=True)
    ok = all(r.get("status") == "ok" for r in result["rows"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
