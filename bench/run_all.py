"""Run nnrun's benchmark parts, print side-by-side tables and the targets, save the results as JSON.

Usage: python bench/run_all.py [PART ...] [--cifar10 FOLDER] [--repeats N] [--openblas-env MODE]
                               [--cpu-clock] [--update-readme] [--strict]

Parts (default: all but profile), each a script in bench/ run as its own process:
  epoch     one epoch of the reference MLP: nnrun vs PyTorch CPU, scikit-learn, NumPy, BLAS ceiling
  bn        the same with BatchNorm and dropout
  overhead  nnrun's trainer (progress, metrics, evaluation) over its bare step loop
  augment   what training-batch augmentation (flips, translations) adds to a bn-dropout epoch
  pca       PCA whitening fit on the CIFAR-10 train split vs scikit-learn (bench/bench_pca.py)
  load      CIFAR-10 load time, cold and warm cache
  memory    peak RSS of `nnrun train` on whitened CIFAR-10
  contention  nnrun train beside a busy process, and two trainings at once (thread policy)
  gpu       nnrun on an NVIDIA GPU vs PyTorch eager there, and the GEMM peak (skipped without a GPU)
  profile   where the time of nnrun's training step goes (not in the default set)
  cores     the thread table: nnrun's epoch at each --threads and its default policy, on 1, 2, 4, ... cores
            (CPU affinity), beside PyTorch on the same cores (not in the default set: minutes per core count)
  estimate  `nnrun study`'s time estimate against the study's wall time (and two notes claims with --cifar10)

OpenBLAS variables: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE pin OpenBLAS to an older kernel on some
machines. `--openblas-env unset` (default) runs every part with both removed, so NumPy uses the
kernel OpenBLAS picks for this CPU; `keep` runs with them as set; `both` runs every part twice.
Either way nnrun and its NumPy and PyTorch competitors share one setting within a part, and the
kernel each part ran (threadpoolctl) is recorded. Results go to bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import BENCH_DIR, OPENBLAS_VARS, blas_kernel, checks_table, cifar10_folder, environment, fmt_seconds

PARTS: dict[str, list[str]] = {
    "epoch": ["bench_epoch.py", "--variant", "plain"],
    "bn": ["bench_epoch.py", "--variant", "bn-dropout"],
    "overhead": ["bench_overhead.py"],
    "augment": ["bench_augment.py"],
    "pca": ["bench_pca.py"],
    "load": ["bench_load.py"],
    "memory": ["bench_memory.py"],
    "contention": ["bench_contention.py"],
    "gpu": ["bench_gpu.py"],
    "profile": ["profile_step.py"],
    "cores": ["bench_cores.py"],
    "estimate": ["bench_estimate.py"],
}
DEFAULT_PARTS = ("epoch", "bn", "overhead", "augment", "pca", "load", "memory", "contention", "gpu", "estimate")
TAKES_REPEATS = {"epoch", "bn", "overhead", "augment", "load", "profile", "pca", "contention", "gpu", "cores"}
TAKES_CIFAR = {"pca", "load", "memory", "gpu", "estimate"}
TAKES_CPU_CLOCK = {"epoch", "bn", "overhead", "augment", "profile"}
RESULTS = BENCH_DIR / "results"
README = BENCH_DIR / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def blas_settings(mode: str) -> list[tuple[str, dict[str, str]]]:
    """(label, environment) pairs to run every part under."""
    set_now = {v: os.environ[v] for v in OPENBLAS_VARS if v in os.environ}
    unset = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
    if not set_now:
        return [("OpenBLAS variables not set", dict(os.environ))]
    kept = " ".join(f"{k}={v}" for k, v in set_now.items())
    choices = {"unset": [("OpenBLAS variables unset", unset)], "keep": [(kept, dict(os.environ))],
               "both": [("OpenBLAS variables unset", unset), (kept, dict(os.environ))]}
    return choices[mode]


def run_part(name: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Run one part script; its tables stream to the terminal; return its JSON result."""
    script, *extra = PARTS[name]
    path = BENCH_DIR / script
    if not path.is_file():
        return {"part": name, "title": name, "rows": [], "checks": [], "skipped": f"bench/{script} does not exist",
                "notes": [f"skipped: bench/{script} does not exist"]}
    if name == "pca" and not args.cifar10:
        reason = "no CIFAR-10 copy: pass --cifar10 FOLDER or set NNRUN_TEST_CIFAR10"
        return {"part": name, "title": name, "rows": [], "checks": [], "skipped": reason, "notes": [],
                "wall_seconds": 0.0}
    with tempfile.TemporaryDirectory(prefix="nnrun-bench-") as tmp:
        out = Path(tmp) / "result.json"
        if name == "pca":  # its own command line: FOLDER --out PATH [--k ...] [--repeats N]
            cmd = [sys.executable, str(path), str(args.cifar10), "--k", "all", "--out", str(out)]
        else:
            cmd = [sys.executable, str(path), *extra, "--json", str(out)]
            if name in TAKES_CIFAR and args.cifar10:
                cmd += ["--cifar10", str(args.cifar10)]
        if name in TAKES_REPEATS and args.repeats is not None:
            cmd += ["--repeats", str(args.repeats)]
        if name in TAKES_CPU_CLOCK and args.cpu_clock:
            cmd += ["--cpu-clock"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=BENCH_DIR.parent)
        seconds = time.perf_counter() - start
        if out.is_file():
            result = json.loads(out.read_text())
            if name == "pca":
                result = pca_result(result)
        else:
            result = {"part": name, "title": name, "rows": [], "checks": [],
                      "notes": [f"bench/{script} exited {proc.returncode} without writing a result"]}
        # bench_pca.py exits 1 when a target is missed: that is a result, not a failure.
        if proc.returncode != 0 and not (name == "pca" and out.is_file()):
            result["failed"] = f"bench/{script} exited {proc.returncode}"
    result["wall_seconds"] = seconds
    return result


def pca_result(report: dict[str, Any]) -> dict[str, Any]:
    """bench_pca.py's report in the part format (rows per k and competitor, its checks)."""
    rows, checks = [], []
    env = report.get("environment", {})
    for res in report.get("results", []):
        best, peak, med = res["best_seconds"], res["peak_rss_mb"], res.get("median_seconds", {})
        for who in best:
            rows.append({"name": f"{who}, k={res['k']}", "seconds": best[who], "median": med.get(who),
                         "ratio": best["nnrun"] / best[who], "peak_rss_mib": peak.get(who)})
        for c in res.get("checks", []):
            unit = "x" if "ratio" in c["name"] else "MiB" if "RSS" in c["name"] else ""
            checks.append({**c, "name": f"PCA k={res['k']}: {c['name']}", "unit": unit})
    return {"part": "pca", "title": "PCA whitening fit on the CIFAR-10 training split (bench_pca.py)",
            "environment": {**environment(), "blas": [{"user_api": "blas", **b} for b in env.get("blas", [])]},
            "rows": rows, "checks": checks, "notes": ["'ratio' = nnrun's time / this row's time"]}


def summary_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown for bench/README.md: the figures of every part and the targets."""
    lines = []
    for run in runs:
        env = run["environment"]
        lines.append(f"Measured {env['date'][:10]} ({run['label']}; numpy BLAS: {run['kernel']}; "
                     f"{env['machine']['cpu']}, {env['machine']['cores']} cores; nnrun {env['git'] or ''}), with:")
        lines += ["", "```", run["command"], "```", ""]
        lines += ["| part | what | s (best) | ratio | GFLOP/s | of ceiling | peak RSS MiB |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for part in run["parts"]:
            if part.get("skipped"):
                lines.append(f"| {part['part']} | skipped: {part['skipped']} | | | | | |")
                continue
            for r in part["rows"]:
                cells = [part["part"], r.get("name", ""), fmt_seconds(r.get("seconds")),
                         f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "",
                         f"{r['gflops']:.0f}" if r.get("gflops") is not None else "",
                         f"{r['of_ceiling']:.0%}" if r.get("of_ceiling") is not None else "",
                         f"{r['peak_rss_mib']:.0f}" if r.get("peak_rss_mib") is not None else ""]
                lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "ratio: nnrun's time / this row's time (epoch, epoch-bn-dropout, pca); this row's time / "
                      "the bare step loop's (overhead), the epoch without augmentation's (augment).", "",
                  "| target | value | limit | met |", "| --- | --- | --- | --- |"]
        for part in run["parts"]:
            for c in part.get("checks", []):
                value = c["value"]
                shown = ("-" if value is None else f"{value:.0%}" if c["unit"] == "%" else
                         f"{value:.0f} MiB" if c["unit"] == "MiB" else f"{value:.2f}{c['unit']}")
                limit = (f"{c['limit']:.0%}" if c["unit"] == "%" else
                         f"{c['limit']:g}{c['unit'] if c['unit'] != 'MiB' else ' MiB'}")
                lines.append(f"| {c['name']} | {shown} | {c['op']} {limit} | {'yes' if c['ok'] else '**no**'} |")
        lines.append("")
    return lines


def update_readme(runs: list[dict[str, Any]]) -> None:
    """Replace the results section of bench/README.md (between its markers) with these figures."""
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{README} has no {START} ... {END} section to update")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(head + START + "\n" + "\n".join(summary_lines(runs)) + END + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    parser.add_argument("parts", nargs="*", metavar="PART", help=f"Parts to run: {', '.join(PARTS)}.")
    parser.add_argument("--cifar10", metavar="FOLDER", help="cifar-10-batches-py folder (default $NNRUN_TEST_CIFAR10).")
    parser.add_argument("--repeats", type=int, help="Timed runs per competitor (default: each part's own, 3).")
    parser.add_argument("--openblas-env", choices=("unset", "keep", "both"), default="unset",
                        help="Run with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE removed (default), as set, or both.")
    parser.add_argument("--cpu-clock", action="store_true",
                        help="Timing parts on one thread, timed by CPU time (ratios that hold up on a busy machine).")
    parser.add_argument("--update-readme", action="store_true", help="Write the figures into bench/README.md.")
    parser.add_argument("--no-save", action="store_true", help="Do not write bench/results/*.json.")
    parser.add_argument("--strict", action="store_true", help="Exit 1 when a target is missed.")
    args = parser.parse_args()
    parts = args.parts or list(DEFAULT_PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    folder = cifar10_folder(args.cifar10)
    args.cifar10 = folder
    command = "python bench/run_all.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    runs = []
    started = time.perf_counter()
    for label, env in blas_settings(args.openblas_env):
        console.rule(f"[bold]{label}")
        results = [run_part(name, args, env) for name in parts]
        child_env = next((r["environment"] for r in results if r.get("environment")), environment())
        runs.append({"label": label, "command": command.strip(), "environment": child_env,
                     "kernel": blas_kernel(child_env), "parts": results})
    total = time.perf_counter() - started
    for run in runs:
        checks = [c for part in run["parts"] for c in part.get("checks", [])]
        console.rule(f"[bold]summary: {run['label']}; numpy BLAS {run['kernel']}")
        for part in run["parts"]:
            state = ("[red]failed[/red] " + escape(part["failed"]) if part.get("failed") else
                     "skipped: " + escape(part["skipped"]) if part.get("skipped") else "ran")
            console.print(f"{part['part']:>10}: {state} ({part['wall_seconds']:.0f} s)", soft_wrap=True)
        if checks:
            console.print(checks_table(checks, "targets"))
    console.print(f"total {total:.0f} s")
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        record = {"command": command.strip(), "seconds": total, "runs": runs}
        path = RESULTS / f"bench-{stamp}.json"
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")
        (RESULTS / "latest.json").write_text(path.read_text())
        console.print(f"results: {path.relative_to(BENCH_DIR.parent)}")
    if args.update_readme:
        update_readme(runs)
        console.print(f"updated {README.relative_to(BENCH_DIR.parent)}")
    failed = any(part.get("failed") for run in runs for part in run["parts"])
    missed = any(not c["ok"] for run in runs for part in run["parts"] for c in part.get("checks", []))
    sys.exit(1 if failed or (args.strict and missed) else 0)


if __name__ == "__main__":
    main()
