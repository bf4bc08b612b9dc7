"""nnrun on an NVIDIA GPU (CuPy) against PyTorch eager and a minimal CuPy loop on the same GPU, interleaved in
this one process, plus the float32 GEMM peak; skipped cleanly where there is no GPU.

Rows, each the best of `--repeats` interleaved rounds, data resident on the GPU for every competitor:
- the reference epoch (3072-512-512-10 ReLU MLP, batch 256, momentum SGD, softmax, 50,000 rows):
  nnrun's `fit` (one epoch with its per-epoch evaluation, as in bench_epoch.py), PyTorch eager
  (float32, TF32 off), the minimal CuPy loop of the anchors;
- the same with BatchNorm and dropout (keep 0.5): nnrun and PyTorch eager;
- `configs/cifar10_bn_dropout.yaml` with `train.device: gpu` and 20 epochs: with `--cifar10 FOLDER`
  (or $NNRUN_TEST_CIFAR10) on the real training split, the GPU's training time and test accuracy
  against the same config on this machine's CPU; without it, the training time on 50,000
  CIFAR-shaped synthetic rows (no accuracy to compare);
- float32 GEMM 8192^3 (TF32 off): the card's peak for this precision.

Targets: nnrun's epoch at most 0.7x PyTorch eager's (plain), 0.8x (BatchNorm + dropout); the 20-epoch
run under 15 s of training time, its test accuracy within 0.5 points of the CPU run's.

Usage: python bench/bench_gpu.py [--repeats 5] [--samples N] [--cifar10 FOLDER] [--json PATH]
"""

from __future__ import annotations

import numpy as np
from bench_epoch import N_VAL, reference_config, reference_dataset, torch_epoch, torch_model
from common import (
    LR,
    MOMENTUM,
    B,
    C,
    D,
    H,
    check,
    cifar10_folder,
    epoch_flops,
    log,
    now,
    part_result,
    reference_data,
    rounds,
    skip_result,
    summarize,
    timing_parser,
    write_result,
)

PART = "gpu"
PEAK = "float32 GEMM 8192^3 (peak)"
BN_CONFIG = "configs/cifar10_bn_dropout.yaml"


def gpu_or_reason():
    """(cupy, None) when CuPy sees a GPU, else (None, why not)."""
    try:
        import cupy
    except ImportError:
        return None, "CuPy is not installed (pip install 'nnrun[gpu]')"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "CuPy sees no GPU"
    except Exception as e:  # CuPy's CUDA errors when there is no driver
        return None, f"CuPy sees no GPU ({e})"
    return cupy, None


class NnrunGpuEpoch:
    """One epoch of `nnrun.trainer.fit` on the GPU, the training split already there (set-up not timed)."""

    def __init__(self, cp, X, y, variant: str):
        self.cp, self.cfg = cp, reference_config(variant)
        self.data = reference_dataset(X, y)

    def __call__(self) -> float:
        from nnrun.experiment import build_loss, build_model, train_setup
        from nnrun.rng import stream
        from nnrun.trainer import History, SilentReporter, fit

        cfg, cp = self.cfg, self.cp
        model = build_model(cfg.model, self.data.n_features, C, stream(cfg.seed, "init")).to(cp)
        loss_fn = build_loss(cfg.loss, self.data)
        cp.cuda.Device().synchronize()
        start = now()
        fit(model, loss_fn, self.data, train_setup(self.cfg), SilentReporter(), History())
        cp.cuda.Device().synchronize()
        return now() - start


class TorchGpuEpoch:
    """One epoch of the workload in PyTorch eager on the GPU (float32, TF32 off), as its users write it."""

    def __init__(self, X, y, variant: str):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.manual_seed(0)
        self.torch, self.variant = torch, variant
        self.X, self.y = torch.as_tensor(X, device="cuda"), torch.as_tensor(y, device="cuda")

    def __call__(self) -> float:
        torch = self.torch
        model = torch_model(torch.nn, self.variant).cuda()
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        torch.cuda.synchronize()
        start = now()
        torch_epoch(torch, model, opt, self.X, self.y)
        torch.cuda.synchronize()
        return now() - start


class CupyEpoch:
    """The minimal CuPy port of the NumPy loop (the anchors' `cupy_epoch`), plain variant."""

    def __init__(self, cp, X, y):
        self.cp, self.X, self.y = cp, cp.asarray(X), cp.asarray(y)

    def __call__(self) -> float:
        cp, X, y = self.cp, self.X, self.y
        rng = cp.random.default_rng(0)
        sizes = ((D, H), (H, H), (H, C))
        Ws = [rng.standard_normal(s, dtype=cp.float32) * np.float32(np.sqrt(2.0 / s[0])) for s in sizes]
        bs = [cp.zeros(s[1], cp.float32) for s in sizes]
        vW, vb = [cp.zeros_like(w) for w in Ws], [cp.zeros_like(b) for b in bs]
        cp.cuda.Device().synchronize()
        start = now()
        perm = cp.random.permutation(len(X))
        for i in range(0, len(X), B):
            idx = perm[i:i + B]
            x, yy, n = X[idx], y[idx], len(idx)
            h1 = cp.maximum(x @ Ws[0] + bs[0], 0)
            h2 = cp.maximum(h1 @ Ws[1] + bs[1], 0)
            s = h2 @ Ws[2] + bs[2]
            s -= s.max(1, keepdims=True)
            p = cp.exp(s)
            p /= p.sum(1, keepdims=True)
            p[cp.arange(n), yy] -= 1
            p /= n
            g2, gb2, dh2 = h2.T @ p, p.sum(0), p @ Ws[2].T
            dh2 *= h2 > 0
            g1, gb1, dh1 = h1.T @ dh2, dh2.sum(0), dh2 @ Ws[1].T
            dh1 *= h1 > 0
            g0, gb0 = x.T @ dh1, dh1.sum(0)
            for k, (gw, gb) in enumerate(((g0, gb0), (g1, gb1), (g2, gb2))):
                vW[k] *= MOMENTUM
                vW[k] -= LR * gw
                Ws[k] += vW[k]
                vb[k] *= MOMENTUM
                vb[k] -= LR * gb
                bs[k] += vb[k]
        cp.cuda.Device().synchronize()
        return now() - start


class GemmPeak:
    """Seconds of one float32 (n, n) @ (n, n) product on the GPU into a preallocated output."""

    def __init__(self, cp, n: int = 8192):
        self.cp, self.flops = cp, 2 * n ** 3
        rng = cp.random.default_rng(1)
        self.a = rng.standard_normal((n, n), dtype=cp.float32)
        self.b = rng.standard_normal((n, n), dtype=cp.float32)
        self.out = cp.empty((n, n), dtype=cp.float32)

    def __call__(self) -> float:
        cp = self.cp
        cp.matmul(self.a, self.b, out=self.out)
        cp.cuda.Device().synchronize()
        start = now()
        for _ in range(3):
            cp.matmul(self.a, self.b, out=self.out)
        cp.cuda.Device().synchronize()
        return (now() - start) / 3


def bn_dropout_run(cp, X, y) -> tuple[float, dict]:
    """`configs/cifar10_bn_dropout.yaml`, device gpu, 20 epochs, on the synthetic CIFAR-shaped rows: the training
    time (the sum of the epochs' `seconds`) and the last row of metrics."""
    from nnrun.config import load_config
    from nnrun.experiment import PreparedData, build_loss, model_for, train_setup
    from nnrun.preprocess import Preprocessor
    from nnrun.trainer import History, SilentReporter, fit

    cfg = load_config(BN_CONFIG, ["train.device=gpu", "train.epochs=20"])
    data = reference_dataset(X, y)
    prepared = PreparedData(data, Preprocessor(), build_loss(cfg.loss, data))
    model = model_for(cfg, prepared, cp)
    history = fit(model, prepared.loss, data, train_setup(cfg), SilentReporter(), History())
    return sum(row["seconds"] for row in history.rows), history.rows[-1]


def cifar_runs(folder) -> dict[str, dict]:
    """`configs/cifar10_bn_dropout.yaml`, 20 epochs, on the real CIFAR-10 copy in `folder`, on the GPU and on the
    CPU (nnrun's own thread policy): each run's summary and its training time (the epochs' `seconds`)."""
    import json
    import tempfile
    from pathlib import Path

    from nnrun.config import load_config
    from nnrun.train import train_new

    results = {}
    with tempfile.TemporaryDirectory(prefix="nnrun-gpu-bench-") as tmp:
        for device in ("gpu", "cpu"):
            log(f"[{PART}] {BN_CONFIG}, 20 epochs on the real training split, {device}")
            cfg = load_config(BN_CONFIG, [f"data.root={folder}", "train.epochs=20", f"train.device={device}"])
            summary = train_new(cfg, out=Path(tmp) / device)
            rows = [json.loads(line) for line in (Path(tmp) / device / "metrics.jsonl").read_text().splitlines()]
            results[device] = {**summary, "training_seconds": sum(row["seconds"] for row in rows)}
    return results


def main() -> None:
    parser = timing_parser(__doc__.split("\n\n")[0])
    parser.set_defaults(repeats=5)
    parser.add_argument("--cifar10", metavar="FOLDER", help="The real CIFAR-10 folder (default: $NNRUN_TEST_CIFAR10).")
    args = parser.parse_args()
    title = f"GPU: one epoch, 3072-512-512-10 ReLU MLP, batch 256, momentum SGD, {args.samples:,} samples, float32"
    cp, reason = gpu_or_reason()
    if cp is None:
        write_result(skip_result(PART, title, reason), args.json)
        return
    try:
        import torch

        have_torch = torch.cuda.is_available()
    except ImportError:
        have_torch = False
    device_name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    log(f"[{PART}] {device_name}; generating {args.samples} x {D} float32 samples")
    X, y = reference_data(args.samples)
    X_gpu, y_gpu = cp.asarray(X), cp.asarray(y)
    competitors = {
        "nnrun GPU (fit, progress off)": NnrunGpuEpoch(cp, X_gpu, y_gpu, "plain"),
        "minimal CuPy loop": CupyEpoch(cp, X, y),
        "nnrun GPU, BatchNorm + dropout": NnrunGpuEpoch(cp, X_gpu, y_gpu, "bn-dropout"),
    }
    if have_torch:
        competitors["PyTorch eager GPU"] = TorchGpuEpoch(X, y, "plain")
        competitors["PyTorch eager GPU, BatchNorm + dropout"] = TorchGpuEpoch(X, y, "bn-dropout")
    peak = GemmPeak(cp)
    competitors[PEAK] = peak
    for fn in competitors.values():  # warm-up: kernel compilation, cuBLAS handles, the memory pool
        fn()
    times = rounds(competitors, args.repeats, progress=lambda m: log(f"[{PART}] {m}"))
    peak_tflops = peak.flops / min(times.pop(PEAK)) / 1e12
    flops = epoch_flops(args.samples)
    rows = []
    for name, ts in times.items():
        s = summarize(ts)
        rows.append({"name": name, **s, "tflops": flops / s["seconds"] / 1e12})
    rows.append({"name": PEAK, "seconds": None, "tflops": peak_tflops})
    folder = cifar10_folder(args.cifar10)
    notes = []
    if folder is not None:
        runs = cifar_runs(folder)
        run_seconds = runs["gpu"]["training_seconds"]
        for device in ("gpu", "cpu"):
            rows.append({"name": f"{BN_CONFIG}, 20 epochs, CIFAR-10, {device} (training time)",
                         "seconds": runs[device]["training_seconds"], "runs": 1})
            notes.append(f"{BN_CONFIG} on {device}: test_accuracy {runs[device]['test_accuracy']:.4f}")
        gap = abs(runs["gpu"]["test_accuracy"] - runs["cpu"]["test_accuracy"]) * 100
    else:
        log(f"[{PART}] {BN_CONFIG}, 20 epochs on the GPU, synthetic rows")
        run_seconds, last = bn_dropout_run(cp, X_gpu, y_gpu)
        rows.append({"name": f"{BN_CONFIG}, train.device gpu, 20 epochs, synthetic rows (training time)",
                     "seconds": run_seconds, "runs": 1})
        notes.append(f"no CIFAR-10 copy (--cifar10): the 20-epoch run used synthetic rows (last val_accuracy "
                     f"{last['val_accuracy']:.4f}, chance 0.1); its accuracy against the CPU's is not measured")
        gap = None
    best = {name: min(ts) for name, ts in times.items()}
    checks = []
    if have_torch:
        checks.append(check("nnrun GPU epoch / PyTorch eager's", best["nnrun GPU (fit, progress off)"]
                            / best["PyTorch eager GPU"], 0.7, "<=", "x"))
        checks.append(check("nnrun GPU epoch / PyTorch eager's (BatchNorm + dropout)",
                            best["nnrun GPU, BatchNorm + dropout"] / best["PyTorch eager GPU, BatchNorm + dropout"],
                            0.8, "<=", "x"))
    checks.append(check(f"{BN_CONFIG}, 20 epochs on the GPU: training seconds", run_seconds, 15.0, "<=", " s"))
    if gap is not None:
        checks.append(check(f"{BN_CONFIG}, 20 epochs: |GPU - CPU| test accuracy, points", gap, 0.5, "<="))
    versions = f"CuPy {cp.__version__}" + (f", PyTorch {torch.__version__}" if have_torch else "")
    notes += [f"device: {device_name}; {versions}",
              f"{flops / 1e9:.0f} GFLOP per epoch; nnrun's time includes fit's per-epoch evaluation ({N_VAL} val "
              "rows and the train.eval_train_size subset); the other rows only train"]
    if not have_torch:
        notes.append("PyTorch with CUDA is not available: its rows and the ratio targets are missing")
    write_result(part_result(PART, title, rows, checks, notes), args.json)


if __name__ == "__main__":
    main()
