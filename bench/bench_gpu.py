"""nnrun on an NVIDIA GPU (CuPy) against PyTorch (eager, and its whole step captured as a CUDA graph) and a
minimal CuPy loop on the same GPU, interleaved in this one process, plus the float32 GEMM peak; skipped
cleanly where there is no GPU.

Rows, each the best of `--repeats` interleaved rounds, data resident on the GPU for every competitor:
- the reference epoch (3072-512-512-10 ReLU MLP, batch 256, momentum SGD, softmax, 50,000 rows):
  nnrun's `fit` as configured by default (`train.cuda_graph` on: its step captured as a CUDA graph) and
  with `train.cuda_graph: false` (the uncaptured path), each `--fit-epochs` epochs per call with fit's
  per-epoch evaluation, timed as a whole and divided by the epochs (the path that ran, from the history's
  `step_path`, is shown); PyTorch eager (float32, TF32 off); PyTorch with forward, loss, backward and
  optimizer.step captured once in a `torch.cuda.CUDAGraph` (static batch buffers filled on the device from a
  device-resident permutation, the 80-row tail batch dropped); the minimal CuPy loop of the anchors;
- the same with BatchNorm and dropout (keep 0.5): nnrun (both paths), PyTorch eager and CUDA graph;
- `configs/cifar10_bn_dropout.yaml` with `train.device: gpu` and 20 epochs: with `--cifar10 FOLDER`
  (or $NNRUN_TEST_CIFAR10) the whole `nnrun train` command on the real data (its wall time, training time
  and test accuracy; with `--cpu-run` also on this machine's CPU, minutes, for the accuracy gap); without
  it, the training time on 50,000 CIFAR-shaped synthetic rows;
- float32 GEMM 8192^3 (TF32 off): the card's peak for this precision.

Targets (an H200, where PyTorch + CUDA graph took 49 ms and 58 ms): nnrun's reference epoch at most 50 ms,
its BatchNorm + dropout epoch at most 60 ms, each also as a ratio to PyTorch + CUDA graph measured here
(50/49 and 60/58); the 20-epoch run at most 2 s of training time and 10 s for the whole command, its test
accuracy within 0.5 points of the CPU run's (`--cpu-run`). The last lines printed are a plain summary.

Usage: python bench/bench_gpu.py [--repeats 5] [--samples N] [--fit-epochs 3] [--cifar10 FOLDER] [--cpu-run]
                                 [--json PATH]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from bench_epoch import N_VAL, reference_config, reference_dataset, torch_epoch, torch_model
from common import (
    LR,
    MOMENTUM,
    REPO,
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
TARGET_MS = {"plain": 50.0, "bn-dropout": 60.0}
"""nnrun's epoch targets in ms (an H200)."""
TORCH_GRAPH_MS = {"plain": 49.0, "bn-dropout": 58.0}
"""PyTorch + CUDA graph's epoch on the H200 the targets were set on: the targets as ratios to it."""
RUN_TRAINING_S, RUN_COMMAND_S = 2.0, 10.0
"""The 20-epoch cifar10_bn_dropout run: training seconds, whole-command seconds."""
VARIANT_LABEL = {"plain": "", "bn-dropout": ", BatchNorm + dropout"}


def row_name(kind: str, variant: str) -> str:
    """The row name of competitor `kind` (nnrun, nnrun-eager, torch, torch-graph, cupy) for `variant`."""
    names = {"nnrun": "nnrun GPU (fit, default)", "nnrun-eager": "nnrun GPU (fit, train.cuda_graph false)",
             "torch": "PyTorch eager GPU", "torch-graph": "PyTorch + CUDA graph GPU", "cupy": "minimal CuPy loop"}
    return names[kind] + VARIANT_LABEL[variant]


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


def has_cuda_graph_key() -> bool:
    """Whether this nnrun's config has `train.cuda_graph`."""
    from nnrun.config import TrainConfig

    return "cuda_graph" in TrainConfig.model_fields


def step_path_of(history) -> str:
    """Which step path a fit ran ("cuda graph", "uncaptured: REASON"), from its history; "?" when not recorded."""
    for source in (getattr(history, "step_path", None), getattr(history, "summary", None)):
        if isinstance(source, str) and source:
            return source
        if isinstance(source, dict) and source.get("step_path"):
            return str(source["step_path"])
    for row in reversed(getattr(history, "rows", None) or []):
        if isinstance(row, dict) and row.get("step_path"):
            return str(row["step_path"])
    return "?"


def train_variant(cfg, **train):
    """`cfg` with these `train.*` values, validated again."""
    from nnrun.config import validate_config

    raw = cfg.model_dump(mode="json")
    raw["train"].update(train)
    return validate_config(raw, source="bench")


class NnrunGpuEpoch:
    """`epochs` epochs of `nnrun.trainer.fit` on the GPU on a fresh model (training split already there, set-up
    not timed); returns the seconds per epoch. `cuda_graph` None keeps the config's default."""

    def __init__(self, cp, X, y, variant: str, epochs: int, cuda_graph: bool | None = None):
        self.cp, self.epochs = cp, epochs
        train = {"epochs": epochs} if cuda_graph is None else {"epochs": epochs, "cuda_graph": cuda_graph}
        self.cfg = train_variant(reference_config(variant), **train)
        self.data = reference_dataset(X, y)
        self.step_path = "?"
        self.epoch_seconds: list[float] = []

    def __call__(self) -> float:
        from nnrun.experiment import build_loss, build_model, train_setup
        from nnrun.rng import stream
        from nnrun.trainer import History, SilentReporter, fit

        cfg, cp = self.cfg, self.cp
        model = build_model(cfg.model, self.data.n_features, C, stream(cfg.seed, "init")).to(cp)
        loss_fn = build_loss(cfg.loss, self.data)
        cp.cuda.Device().synchronize()
        start = now()
        history = fit(model, loss_fn, self.data, train_setup(self.cfg), SilentReporter(), History())
        cp.cuda.Device().synchronize()
        seconds = now() - start
        self.step_path = step_path_of(history)
        self.epoch_seconds = [row["seconds"] for row in history.rows]
        return seconds / self.epochs


class TorchGpuEpoch:
    """One epoch of the workload in PyTorch eager on the GPU (float32, TF32 off), as its users write it."""

    def __init__(self, X, y, variant: str):
        import torch

        torch_float32_only(torch)
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


def torch_float32_only(torch) -> None:
    """Plain float32 products and convolutions in PyTorch (TF32 off), as nnrun computes."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


class TorchGraphEpoch:
    """One epoch of PyTorch with the whole training step (forward, loss, backward, optimizer.step) captured once
    in a `torch.cuda.CUDAGraph` and replayed per batch (float32, TF32 off).

    As PyTorch's CUDA-graph docs do: a few warm-up steps on a side stream, then the capture, with static input
    and label buffers; each batch is gathered into them on the device (`index_select(..., out=)`) from the
    epoch's device-resident permutation before `replay()`. The graph has one batch shape, so the epoch is the
    full batches (the tail of N % 256 rows is dropped, as `drop_last` does). The model is captured on the first
    call (the warm-up round) and keeps training over the calls; `capture_seconds` is that set-up.
    """

    def __init__(self, X, y, variant: str, warmup_steps: int = 3):
        import torch

        torch_float32_only(torch)
        torch.manual_seed(0)
        self.torch, self.variant, self.warmup_steps = torch, variant, warmup_steps
        self.X, self.y = torch.as_tensor(X, device="cuda"), torch.as_tensor(y, device="cuda")
        self.graph = None
        self.capture_seconds: float | None = None

    def capture(self) -> None:
        """Build the model and optimizer, warm up on a side stream, capture one step."""
        torch = self.torch
        start = now()
        self.model = torch_model(torch.nn, self.variant).cuda().train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.static_x = torch.empty((B, self.X.shape[1]), dtype=self.X.dtype, device="cuda")
        self.static_y = torch.empty((B,), dtype=self.y.dtype, device="cuda")
        first = torch.arange(B, device="cuda")
        torch.index_select(self.X, 0, first, out=self.static_x)
        torch.index_select(self.y, 0, first, out=self.static_y)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_steps):
                self.opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(self.model(self.static_x), self.static_y).backward()
                self.opt.step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.static_loss = torch.nn.functional.cross_entropy(self.model(self.static_x), self.static_y)
            self.static_loss.backward()
            self.opt.step()
        torch.cuda.synchronize()
        self.capture_seconds = now() - start

    def __call__(self) -> float:
        torch = self.torch
        if self.graph is None:
            self.capture()
        X, y, static_x, static_y, graph = self.X, self.y, self.static_x, self.static_y, self.graph
        torch.cuda.synchronize()
        start = now()
        perm = torch.randperm(len(X), device="cuda")
        for i in range(0, len(X) - B + 1, B):
            idx = perm[i:i + B]
            torch.index_select(X, 0, idx, out=static_x)
            torch.index_select(y, 0, idx, out=static_y)
            graph.replay()
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


def bn_dropout_run(cp, X, y) -> tuple[float, dict, str]:
    """`configs/cifar10_bn_dropout.yaml`, device gpu, 20 epochs, on the synthetic CIFAR-shaped rows: the training
    time (the sum of the epochs' `seconds`), the last row of metrics and the step path that ran."""
    from nnrun.config import load_config
    from nnrun.experiment import PreparedData, build_loss, model_for, train_setup
    from nnrun.preprocess import Preprocessor
    from nnrun.trainer import History, SilentReporter, fit

    cfg = load_config(BN_CONFIG, ["train.device=gpu", "train.epochs=20"])
    data = reference_dataset(X, y)
    prepared = PreparedData(data, Preprocessor(), build_loss(cfg.loss, data))
    model = model_for(cfg, prepared, cp)
    history = fit(model, prepared.loss, data, train_setup(cfg), SilentReporter(), History())
    return sum(row["seconds"] for row in history.rows), history.rows[-1], step_path_of(history)


def cifar_run(folder, device: str, out: Path, timeout: float) -> dict[str, Any]:
    """`nnrun train configs/cifar10_bn_dropout.yaml` for 20 epochs on the real CIFAR-10 copy in `folder`, as a
    command: its wall time, its summary, and the training time (the epochs' `seconds`)."""
    cmd = [sys.executable, "-m", "nnrun", "train", BN_CONFIG, "--device", device, "--out", str(out), "--json",
           "--quiet", "--set", f"data.root={folder}", "--set", "train.epochs=20"]
    log(f"[{PART}] {' '.join(cmd)}")
    start = now()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        rc, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        rc, err = None, f"timed out after {timeout:.0f} s"
    wall = now() - start
    try:
        summary = json.loads((out / "summary.json").read_text())
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        summary, rows = {}, []
    result = {"rc": rc, "command_seconds": wall, "training_seconds": sum(row["seconds"] for row in rows) or None,
              "test_accuracy": summary.get("test_accuracy"), "step_path": str(summary.get("step_path", "?")),
              "status": summary.get("status")}
    if rc != 0:
        result["error"] = (err or "").strip()[-500:]
        log(f"[{PART}] {device} run failed (exit {rc}): {result['error']}")
    return result


def pct(value) -> str:
    return "-" if value is None else f"{value:.2%}"


def summary_lines(device_name: str, repeats: int, rows: list[dict], checks: list[dict], extra: list[str]) -> list[str]:
    """The plain-text summary printed last: ms per epoch against the target and PyTorch + CUDA graph."""
    lines = [f"summary: {device_name}; ms per epoch, best of {repeats}; /target = ms / target ms; "
             "/graph = this row / PyTorch + CUDA graph (same variant)",
             f"{'row':<62} {'ms':>8} {'target':>7} {'/target':>8} {'/graph':>7}  step path"]
    for r in rows:
        if r.get("seconds") is None or "variant" not in r:  # the peak and the 20-epoch run: in `extra`
            continue
        ms = r["seconds"] * 1000
        target = r.get("target_ms")
        cells = [f"{r['name']:<62}", f"{ms:>8.1f}", f"{target:>7.0f}" if target else f"{'-':>7}",
                 f"{ms / target:>7.2f}x" if target else f"{'-':>8}",
                 f"{r['ratio']:>6.2f}x" if r.get("ratio") else f"{'-':>7}"]
        lines.append(" ".join(cells) + ("  " + r["step_path"] if r.get("step_path") else ""))
    lines += extra
    missed = [c["name"] for c in checks if not c["ok"]]
    lines.append(f"targets: {len(checks) - len(missed)} of {len(checks)} met"
                 + (f"; MISSED: {'; '.join(missed)}" if missed else ""))
    return lines


def main() -> None:
    parser = timing_parser(__doc__.split("\n\n")[0])
    parser.set_defaults(repeats=5)
    parser.add_argument("--cifar10", metavar="FOLDER", help="The real CIFAR-10 folder (default: $NNRUN_TEST_CIFAR10).")
    parser.add_argument("--fit-epochs", type=int, default=3,
                        help="Epochs of each timed nnrun fit (its time is divided by them; default 3).")
    parser.add_argument("--cpu-run", action="store_true",
                        help="With the real data, also run the 20-epoch config on this machine's CPU (minutes) "
                             "for the accuracy gap.")
    args = parser.parse_args()
    if args.fit_epochs < 1:
        parser.error("--fit-epochs must be >= 1")
    title = f"GPU: one epoch, 3072-512-512-10 ReLU MLP, batch 256, momentum SGD, {args.samples:,} samples, float32"
    cp, reason = gpu_or_reason()
    if cp is None:
        write_result(skip_result(PART, title, reason), args.json)
        print(f"summary: skipped ({reason})")
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
    graph_key = has_cuda_graph_key()
    notes = []
    competitors: dict[str, Any] = {}
    variants: dict[str, str] = {}
    for variant in ("plain", "bn-dropout"):
        group = {row_name("nnrun", variant): NnrunGpuEpoch(cp, X_gpu, y_gpu, variant, args.fit_epochs)}
        if graph_key:
            group[row_name("nnrun-eager", variant)] = NnrunGpuEpoch(cp, X_gpu, y_gpu, variant, args.fit_epochs,
                                                                   cuda_graph=False)
        if have_torch:
            group[row_name("torch", variant)] = TorchGpuEpoch(X, y, variant)
            group[row_name("torch-graph", variant)] = TorchGraphEpoch(X, y, variant)
        if variant == "plain":
            group[row_name("cupy", variant)] = CupyEpoch(cp, X, y)
        competitors.update(group)
        variants.update(dict.fromkeys(group, variant))
    if not graph_key:
        notes.append("this nnrun has no train.cuda_graph key: the train.cuda_graph false rows are missing")
    peak = GemmPeak(cp)
    competitors[PEAK] = peak
    for name, fn in competitors.items():  # warm-up: kernel compilation, cuBLAS handles, memory pools, captures
        log(f"[{PART}] warm-up: {name}")
        fn()
    times = rounds(competitors, args.repeats, progress=lambda m: log(f"[{PART}] {m}"))
    peak_tflops = peak.flops / min(times.pop(PEAK)) / 1e12
    best = {name: min(ts) for name, ts in times.items()}
    flops = epoch_flops(args.samples)
    rows = []
    for name, ts in times.items():
        variant, fn = variants[name], competitors[name]
        graph = best.get(row_name("torch-graph", variant))
        row = {"name": name, "variant": variant, **summarize(ts), "tflops": flops / min(ts) / 1e12,
               "ratio": min(ts) / graph if graph else None}
        if isinstance(fn, NnrunGpuEpoch):
            row.update(target_ms=TARGET_MS[variant], step_path=fn.step_path, epoch_seconds=fn.epoch_seconds)
        rows.append(row)
    rows.append({"name": PEAK, "seconds": None, "tflops": peak_tflops})
    checks = []
    for variant in ("plain", "bn-dropout"):
        nnrun_s = best[row_name("nnrun", variant)]
        label = "reference epoch" + VARIANT_LABEL[variant]
        checks.append(check(f"nnrun GPU {label}, ms", nnrun_s * 1000, TARGET_MS[variant], "<=", "ms"))
        graph = best.get(row_name("torch-graph", variant))
        if graph:
            checks.append(check(f"nnrun GPU {label} / PyTorch + CUDA graph's", nnrun_s / graph,
                                round(TARGET_MS[variant] / TORCH_GRAPH_MS[variant], 3), "<=", "x"))
    for name, fn in competitors.items():
        if isinstance(fn, TorchGraphEpoch) and fn.capture_seconds is not None:
            notes.append(f"{name}: capture (model, warm-up steps, graph) {fn.capture_seconds:.3f} s, not timed; "
                         f"{args.samples // B} full batches per epoch ({args.samples % B} tail rows dropped)")
    extra = [f"float32 GEMM 8192^3 peak: {peak_tflops:.1f} TFLOP/s"]
    folder = cifar10_folder(args.cifar10)
    if folder is not None:
        devices = ("gpu", "cpu") if args.cpu_run else ("gpu",)
        runs = {}
        with tempfile.TemporaryDirectory(prefix="nnrun-gpu-bench-") as tmp:
            for device in devices:
                runs[device] = cifar_run(folder, device, Path(tmp) / device, 600 if device == "gpu" else 7200)
        gpu = runs["gpu"]
        for device, run in runs.items():
            rows.append({"name": f"{BN_CONFIG}, 20 epochs, CIFAR-10, {device} (training time)",
                         "seconds": None if run["training_seconds"] is None else run["training_seconds"], "runs": 1})
            notes.append(f"{BN_CONFIG} on {device}: exit {run['rc']}, whole command {run['command_seconds']:.1f} s, "
                         f"test_accuracy {pct(run['test_accuracy'])}, step path {run['step_path']}")
            extra.append(f"{BN_CONFIG}, 20 epochs, real data, {device}: training "
                         f"{run['training_seconds'] or float('nan'):.2f} s, command {run['command_seconds']:.1f} s, "
                         f"test {pct(run['test_accuracy'])} (exit {run['rc']}; {run['step_path']})")
        checks.append(check(f"{BN_CONFIG}, 20 epochs on the GPU: training seconds", gpu["training_seconds"],
                            RUN_TRAINING_S, "<=", "s"))
        checks.append(check(f"{BN_CONFIG}, 20 epochs on the GPU: whole command seconds",
                            gpu["command_seconds"] if gpu["rc"] == 0 else None, RUN_COMMAND_S, "<=", "s"))
        if "cpu" in runs:
            accs = [runs[d]["test_accuracy"] for d in ("gpu", "cpu")]
            gap = abs(accs[0] - accs[1]) * 100 if None not in accs else None
            checks.append(check(f"{BN_CONFIG}, 20 epochs: |GPU - CPU| test accuracy, points", gap, 0.5, "<="))
        else:
            notes.append("the CPU run of the 20-epoch config is off (--cpu-run): no accuracy gap measured here")
    else:
        log(f"[{PART}] {BN_CONFIG}, 20 epochs on the GPU, synthetic rows")
        run_seconds, last, path = bn_dropout_run(cp, X_gpu, y_gpu)
        rows.append({"name": f"{BN_CONFIG}, train.device gpu, 20 epochs, synthetic rows (training time)",
                     "seconds": run_seconds, "runs": 1, "step_path": path})
        notes.append(f"no CIFAR-10 copy (--cifar10): the 20-epoch run used synthetic rows (last val_accuracy "
                     f"{last['val_accuracy']:.4f}, chance 0.1); its command time and accuracy are not measured")
        extra.append(f"{BN_CONFIG}, 20 epochs, synthetic rows: training {run_seconds:.2f} s (target "
                     f"{RUN_TRAINING_S:.0f} s; {path})")
        checks.append(check(f"{BN_CONFIG}, 20 epochs on the GPU (synthetic rows): training seconds", run_seconds,
                            RUN_TRAINING_S, "<=", "s"))
    versions = f"CuPy {cp.__version__}" + (f", PyTorch {torch.__version__}" if have_torch else "")
    notes += [f"device: {device_name}; {versions}",
              f"{flops / 1e9:.0f} GFLOP per epoch; nnrun's time is a {args.fit_epochs}-epoch fit divided by "
              f"{args.fit_epochs}, with fit's per-epoch evaluation ({N_VAL} val rows and the "
              "train.eval_train_size subset) and its step capture; the other rows only train"]
    if not have_torch:
        notes.append("PyTorch with CUDA is not available: its rows and the ratio targets are missing")
    write_result(part_result(PART, title, rows, checks, notes), args.json)
    print("\n".join(summary_lines(device_name, args.repeats, rows, checks, extra)), flush=True)


if __name__ == "__main__":
    main()
