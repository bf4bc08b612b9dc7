"""Benchmark: fitting PCA whitening on the full CIFAR-10 training split, nnrun against scikit-learn.

    python bench/bench_pca.py [CIFAR_FOLDER] [--k all,144] [--repeats 3] [--threads N]
                              [--out bench/results/pca.json]

CIFAR_FOLDER is a `cifar-10-batches-py` folder (default: $NNRUN_TEST_CIFAR10). Workload: all
50,000 x 3072 training images as float32 (0..255). Competitors, for each k:
- nnrun: `fit_preprocessor(PreprocessConfig(pca=k, whiten=True))` (k = all: `pca: null`, every component);
- scikit-learn: `PCA(n_components=k, whiten=True, svd_solver="covariance_eigh").fit(X)`.

Each measurement runs in a fresh worker process (the data are loaded there, then only the fit
is timed), so its peak RSS (`ru_maxrss`, data included) belongs to that one fit. The two
competitors alternate, `--repeats` rounds, and the best time of each is compared; both use the
machine's default BLAS threads (or `--threads N`). Targets: nnrun's best time <= 0.8 x scikit-learn's, and nnrun's
peak RSS < 2.5 GB. Results go to bench/results/pca.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:  # run as `python bench/bench_pca.py` from anywhere
    sys.path.insert(0, str(REPO))

CIFAR10_ENV = "NNRUN_TEST_CIFAR10"
RATIO_LIMIT = 0.8
PEAK_LIMIT_MB = 2500.0
COMPETITORS = ("nnrun", "sklearn")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(which: str, k: int | None, folder: Path) -> dict:
    """Load the training split, time one fit, report seconds, peak RSS and the top eigenvalues (ddof 0)."""
    import numpy as np

    from nnrun.datasets.cifar10 import read_cifar10_cached

    X_u8, _, _, _ = read_cifar10_cached(folder)
    X = X_u8.astype(np.float32)
    del X_u8
    n = len(X)
    data_mb = rss_mb()
    if which == "nnrun":
        from nnrun.preprocess import PreprocessSettings, fit_preprocessor

        cfg = PreprocessSettings(center="per_feature", pca=k, whiten=True)
        start = time.perf_counter()
        pre = fit_preprocessor(cfg, X)
        seconds = time.perf_counter() - start
        top = pre.eigenvalues[:5]
        n_out = pre.n_output
    else:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=k, whiten=True, svd_solver="covariance_eigh")
        start = time.perf_counter()
        pca.fit(X)
        seconds = time.perf_counter() - start
        top = pca.explained_variance_[:5] * (n - 1) / n
        n_out = int(pca.n_components_)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_rss_mb": peak_mb, "data_rss_mb": data_mb, "n": n,
            "n_components": n_out, "top_eigenvalues": [float(v) for v in top]}


def run_worker(which: str, k: int | None, folder: Path, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, str(folder), "--worker", which, "--k", "all" if k is None else str(k)]
    env = dict(os.environ)
    if threads is not None:  # set before the process starts, so every BLAS library (numpy's, scipy's) obeys
        env.update({name: str(threads) for name in THREAD_VARS})
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"worker {which} (k={k}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def environment() -> dict:
    import numpy as np
    import scipy
    import sklearn
    from threadpoolctl import threadpool_info

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "blas": [{k: info.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
                     for info in threadpool_info()]}


def parse_ks(text: str) -> list[int | None]:
    return [None if part.strip() == "all" else int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=os.environ.get(CIFAR10_ENV),
                        help=f"cifar-10-batches-py folder (default ${CIFAR10_ENV})")
    parser.add_argument("--k", default="all,144", help="components kept: comma-separated, 'all' = every one")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the best time of each competitor counts")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "pca.json", help="JSON results file")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads of both competitors (default: the machine's default)")
    parser.add_argument("--worker", choices=COMPETITORS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.folder or not (Path(args.folder) / "data_batch_1").is_file():
        parser.error(f"give a cifar-10-batches-py folder as argument or in ${CIFAR10_ENV}")
    folder = Path(args.folder)
    if args.worker:
        (k,) = parse_ks(args.k)
        print(json.dumps(worker(args.worker, k, folder)))
        return 0

    from nnrun.io import write_json

    env = environment()
    results = []
    ok = True
    for k in parse_ks(args.k):
        runs: dict[str, list[dict]] = {name: [] for name in COMPETITORS}
        for r in range(args.repeats):
            order = COMPETITORS if r % 2 == 0 else COMPETITORS[::-1]
            for which in order:
                m = run_worker(which, k, folder, args.threads)
                runs[which].append(m)
                print(f"k={'all' if k is None else k} round {r + 1}/{args.repeats}: {which:8s} "
                      f"{m['seconds']:7.2f} s  peak RSS {m['peak_rss_mb']:7.0f} MB", file=sys.stderr)
        best = {name: min(m["seconds"] for m in ms) for name, ms in runs.items()}
        peak = {name: max(m["peak_rss_mb"] for m in ms) for name, ms in runs.items()}
        ratio = best["nnrun"] / best["sklearn"]
        top_ours, top_ref = runs["nnrun"][0]["top_eigenvalues"], runs["sklearn"][0]["top_eigenvalues"]
        agreement = max(abs(a - b) / abs(b) for a, b in zip(top_ours, top_ref, strict=True))
        checks = [
            {"name": "time ratio nnrun / sklearn", "value": ratio, "limit": RATIO_LIMIT, "op": "<=",
             "ok": ratio <= RATIO_LIMIT},
            {"name": "nnrun peak RSS (MB)", "value": peak["nnrun"], "limit": PEAK_LIMIT_MB, "op": "<",
             "ok": peak["nnrun"] < PEAK_LIMIT_MB},
        ]
        ok = ok and all(c["ok"] for c in checks)
        results.append({"k": "all" if k is None else k, "n_components": runs["nnrun"][0]["n_components"],
                        "best_seconds": best, "peak_rss_mb": peak,
                        "median_seconds": {name: sorted(m["seconds"] for m in ms)[len(ms) // 2]
                                           for name, ms in runs.items()},
                        "memory_ratio": peak["nnrun"] / peak["sklearn"],
                        "top5_eigenvalue_max_rel_diff": agreement, "checks": checks, "runs": runs})
        print(f"k={'all' if k is None else k}: nnrun {best['nnrun']:.2f} s, sklearn {best['sklearn']:.2f} s, "
              f"time ratio {ratio:.3f} (limit {RATIO_LIMIT}); peak RSS nnrun {peak['nnrun']:.0f} MB, "
              f"sklearn {peak['sklearn']:.0f} MB, memory ratio {peak['nnrun'] / peak['sklearn']:.3f}; "
              f"top-5 eigenvalues agree to {agreement:.1e}")
    report = {"benchmark": "pca_whitening_fit", "data": str(folder), "n_train": 50000, "n_features": 3072,
              "repeats": args.repeats, "threads": args.threads or "default", "environment": env,
              "results": results, "ok": ok}
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
