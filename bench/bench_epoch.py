"""One training epoch of the reference workload: nnrun's trainer against PyTorch CPU, scikit-learn,
a minimal NumPy loop and the BLAS ceiling, all measured in this one process and interleaved.

Variants: `plain` (3072-512-512-10 ReLU MLP, momentum SGD, softmax) and `bn-dropout` (the same
with BatchNorm after each hidden Linear layer and dropout with keep probability 0.5 after each
hidden ReLU). nnrun runs through `nnrun.trainer.fit` with a validated `ExperimentConfig` and a
`Dataset` of random data of CIFAR-10's shape (50,000 training rows, 1,000 validation rows), one
epoch, progress reporting off; its time includes the per-epoch evaluation `fit` does (the
`train.eval_train_size` subset and the validation split). The competitors only train.

Usage: python bench/bench_epoch.py [--variant plain|bn-dropout] [--repeats 3] [--samples N] [--cpu-clock]
                                   [--json PATH]

`--cpu-clock` runs every competitor on one thread and times it by the process's CPU clock: a
figure that holds up on a busy machine (see `common.use_cpu_clock`).
"""

from __future__ import annotations

import warnings

import numpy as np
from common import (
    LR,
    MOMENTUM,
    B,
    C,
    D,
    GemmEpoch,
    GemmSquare,
    H,
    check,
    clock_note,
    epoch_flops,
    log,
    now,
    parse_timing_args,
    part_result,
    reference_data,
    rounds,
    skip_result,
    summarize,
    threads,
    timing_parser,
    write_result,
)

VARIANTS = ("plain", "bn-dropout")
KEEP = 0.5
"""Dropout keep probability of the bn-dropout variant (PyTorch's p = 1 - KEEP)."""
N_VAL = 1000
PEAK = "float32 GEMM 4096^3 (peak)"


def reference_config(variant: str):
    """The validated nnrun config of the workload (one epoch, no early stopping or restore)."""
    from nnrun.config import validate_config

    model = {"hidden": [H, H], "activation": "relu", "init": "he"}
    if variant == "bn-dropout":
        model.update({"batchnorm": True, "dropout": KEEP})
    raw = {"name": f"bench-{variant}", "seed": 0,
           "data": {"dataset": "cifar10", "val_size": N_VAL},
           "preprocess": {"center": "none"},
           "model": model,
           "loss": {"name": "softmax"},
           "optim": {"name": "momentum", "lr": LR, "momentum": MOMENTUM},
           "train": {"epochs": 1, "batch_size": B, "restore_best": False}}
    return validate_config(raw, source="bench")


def missing_keys(variant: str) -> list[str]:
    """Config keys the variant needs that this nnrun does not have."""
    from nnrun.config import ModelConfig

    needed = ("batchnorm", "dropout") if variant == "bn-dropout" else ()
    return [f"model.{k}" for k in needed if k not in ModelConfig.model_fields]


def reference_dataset(X: np.ndarray, y: np.ndarray):
    """An nnrun `Dataset` over the benchmark arrays (no copies of X), plus small val/test splits."""
    from nnrun.datasets import Dataset

    rng = np.random.default_rng(3)
    X_val = rng.standard_normal((N_VAL, X.shape[1]), dtype=np.float32)
    y_val = rng.integers(0, C, N_VAL)
    return Dataset(name="bench", X_train=X, y_train=y, X_val=X_val, y_val=y_val, X_test=X_val[:10],
                   y_test=y_val[:10], class_names=[str(i) for i in range(C)], image_shape=(3, 32, 32))


class NnrunEpoch:
    """One epoch of `nnrun.trainer.fit` on a freshly built model (set-up not timed)."""

    def __init__(self, X, y, variant: str, reporter_factory=None):
        self.cfg = reference_config(variant)
        self.data = reference_dataset(X, y)
        self.reporter_factory = reporter_factory

    def build(self):
        from nnrun.experiment import build_loss, build_model
        from nnrun.rng import stream

        cfg = self.cfg
        model = build_model(cfg.model, self.data.n_features, C, stream(cfg.seed, "init"))
        return model, build_loss(cfg.loss, self.data)

    def build_step_loop(self):
        """(model, loss, optimizer, lr) for a hand-written step loop, set up as `fit` sets them up."""
        from nnrun.experiment import build_optimizer, build_schedule
        from nnrun.rng import stream
        from nnrun.trainer import set_up_kernels

        cfg = self.cfg
        model, loss_fn = self.build()
        model.set_dropout_rng(stream(cfg.seed, "dropout"))
        set_up_kernels(model, self.data.X_train, cfg.train.batch_size)  # the compiled kernels, as fit sets them up
        return model, loss_fn, build_optimizer(cfg.optim), build_schedule(cfg.optim)(0, cfg.train.epochs)

    def __call__(self) -> float:
        from nnrun.experiment import train_setup
        from nnrun.trainer import History, SilentReporter, fit

        model, loss_fn = self.build()
        reporter = self.reporter_factory() if self.reporter_factory else SilentReporter()
        with np.errstate(over="ignore", invalid="ignore"):
            start = now()
            fit(model, loss_fn, self.data, train_setup(self.cfg), reporter, History())
            seconds = now() - start
        close = getattr(reporter, "close", None)
        if close is not None:
            close()
        return seconds


class NumpyEpoch:
    """A minimal float32 NumPy training loop of the workload, written for speed and nothing else."""

    def __init__(self, X, y, variant: str, seed: int = 0):
        self.X, self.y, self.bn = X, y, variant == "bn-dropout"
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> float:
        X, y, rng, bn = self.X, self.y, self.rng, self.bn
        f32 = np.float32
        sizes = [(D, H), (H, H), (H, C)]
        W = [(rng.standard_normal(s, dtype=f32) * f32(np.sqrt(2.0 / s[0]))) for s in sizes]
        b = [np.zeros(s[1], f32) for s in sizes]
        gamma = [np.ones(H, f32), np.ones(H, f32)]
        beta = [np.zeros(H, f32), np.zeros(H, f32)]
        params = W + b + (gamma + beta if bn else [])
        vel = [np.zeros_like(p) for p in params]
        lr, mu, eps = f32(LR), f32(MOMENTUM), f32(1e-5)
        start = now()
        order = rng.permutation(len(X))
        for i in range(0, len(X), B):
            idx = order[i:i + B]
            n = len(idx)
            a = X[idx]
            cache = []
            xhat = inv = mask = None
            for k in range(2):
                z = a @ W[k]
                z += b[k]
                if bn:
                    z -= z.mean(0)
                    inv = 1 / np.sqrt(np.einsum("ij,ij->j", z, z) / f32(n) + eps)
                    z *= inv
                    xhat = z.copy()
                    z *= gamma[k]
                    z += beta[k]
                np.maximum(z, 0, out=z)
                if bn:
                    mask = (rng.random(z.shape, dtype=f32) < KEEP) * f32(1 / KEEP)
                    h = z * mask
                else:
                    h = z
                cache.append((a, z, xhat, inv, mask))
                a = h
            s = a @ W[2]
            s += b[2]
            s -= s.max(1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(1, keepdims=True)
            s[np.arange(n), y[idx]] -= 1
            s /= f32(n)
            grads_W = [None, None, a.T @ s]
            grads_b = [None, None, s.sum(0)]
            grads_g, grads_be = [None, None], [None, None]
            d = s @ W[2].T
            for k in (1, 0):
                a_in, z, xhat, inv, mask = cache[k]
                if bn:
                    d *= mask
                d *= z > 0
                if bn:
                    grads_be[k] = d.sum(0)
                    grads_g[k] = np.einsum("ij,ij->j", d, xhat)
                    d *= gamma[k]
                    d -= d.mean(0)
                    d -= xhat * (grads_g[k] * gamma[k] / f32(n))
                    d *= inv
                grads_W[k] = a_in.T @ d
                grads_b[k] = d.sum(0)
                if k:
                    d = d @ W[k].T
            grads = grads_W + grads_b + (grads_g + grads_be if bn else [])
            for p, v, g in zip(params, vel, grads, strict=True):
                v *= mu
                g *= lr
                v -= g
                p += v
        return now() - start


def torch_epoch(torch, model, opt, X, y) -> None:
    """One epoch of minibatch steps of `model` with `opt` over tensors X, y (on their device), shuffled."""
    perm = torch.randperm(len(X), device=X.device)
    for i in range(0, len(X), B):
        idx = perm[i:i + B]
        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def torch_model(nn, variant: str):
    """The workload's network in PyTorch (`nn` is `torch.nn`): plain, or with BatchNorm and dropout."""
    if variant == "bn-dropout":
        block = [nn.Linear(D, H), nn.BatchNorm1d(H), nn.ReLU(), nn.Dropout(1 - KEEP),
                 nn.Linear(H, H), nn.BatchNorm1d(H), nn.ReLU(), nn.Dropout(1 - KEEP), nn.Linear(H, C)]
    else:
        block = [nn.Linear(D, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(), nn.Linear(H, C)]
    return nn.Sequential(*block)


class TorchEpoch:
    """One epoch of the workload in PyTorch CPU (eager, float32), as its users write it."""

    def __init__(self, X, y, variant: str):
        import torch

        torch.set_num_threads(threads())
        torch.manual_seed(0)
        self.torch, self.variant = torch, variant
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)

    def __call__(self) -> float:
        torch = self.torch
        model = torch_model(torch.nn, self.variant)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        start = now()
        torch_epoch(torch, model, opt, self.X, self.y)
        return now() - start


class SklearnEpoch:
    """One epoch of scikit-learn's MLPClassifier (sgd, momentum, no nesterov), float32 input."""

    def __init__(self, X, y):
        self.X, self.y = X, y

    def __call__(self) -> float:
        from sklearn.neural_network import MLPClassifier

        clf = MLPClassifier(hidden_layer_sizes=(H, H), solver="sgd", batch_size=B, max_iter=1, momentum=MOMENTUM,
                            learning_rate_init=LR, nesterovs_momentum=False, shuffle=True, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = now()
            clf.fit(self.X, self.y)
            return now() - start


def have_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = timing_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=VARIANTS, default="plain")
    parser.add_argument("--no-sklearn", action="store_true", help="Leave scikit-learn out (plain variant).")
    parser.add_argument("--no-torch", action="store_true", help="Leave PyTorch out.")
    args = parse_timing_args(parser)
    variant = args.variant
    part = "epoch" if variant == "plain" else "epoch-bn-dropout"
    title = (f"One epoch, 3072-512-512-10 ReLU MLP, batch 256, momentum SGD, {args.samples:,} samples, float32"
             + (", BatchNorm + dropout (keep 0.5)" if variant == "bn-dropout" else "")
             + clock_note(args))
    missing = missing_keys(variant)
    if missing:
        write_result(skip_result(part, title, f"this nnrun has no config key {', '.join(missing)}"), args.json)
        return
    notes = []
    n = args.samples
    log(f"[{part}] generating {n} x {D} float32 samples")
    X, y = reference_data(n)
    competitors = {"nnrun (fit, progress off)": NnrunEpoch(X, y, variant)}
    if not args.no_torch:
        if have_torch():
            competitors["PyTorch CPU (eager)"] = TorchEpoch(X, y, variant)
        else:
            notes.append("PyTorch is not installed: its row is missing (pip install torch)")
    competitors["minimal NumPy loop"] = NumpyEpoch(X, y, variant)
    if variant == "plain" and not args.no_sklearn:
        competitors["scikit-learn MLPClassifier"] = SklearnEpoch(X, y)
    competitors["BLAS products alone"] = GemmEpoch(n)
    square = GemmSquare()
    competitors[PEAK] = lambda: min(square() for _ in range(2))
    times = rounds(competitors, args.repeats, progress=lambda m: log(f"[{part}] {m}"))
    peak = square.flops / min(times.pop(PEAK)) / 1e9
    flops = epoch_flops(n)
    best_rate = max(peak, flops / min(times["BLAS products alone"]) / 1e9)
    nnrun_s = min(times["nnrun (fit, progress off)"])
    rows = []
    for name, ts in times.items():
        s = summarize(ts)
        rows.append({"name": name, **s, "ratio": nnrun_s / s["seconds"], "gflops": flops / s["seconds"] / 1e9,
                     "of_ceiling": flops / s["seconds"] / 1e9 / best_rate})
    rows.append({"name": PEAK, "seconds": None, "gflops": peak, "of_ceiling": peak / best_rate})
    notes.append(f"{flops / 1e9:.0f} GFLOP per epoch; ceiling = best float32 GEMM rate measured here "
                 f"({best_rate:.0f} GFLOP/s); 'ratio' = nnrun's time / this row's time")
    if args.cpu_clock:
        notes.append("CPU clock: one thread everywhere, times are the process's CPU seconds")
    notes.append(f"nnrun's time includes fit's per-epoch evaluation ({N_VAL} val rows and the "
                 "train.eval_train_size subset); the other rows only train")
    torch_name = "PyTorch CPU (eager)"
    checks = []
    if variant == "plain":
        products = min(times["BLAS products alone"])
        checks.append(check("nnrun epoch / the epoch's matrix products alone", nnrun_s / products, 1.07, "<=", "x"))
        if torch_name in times:
            checks.append(check("nnrun epoch time / PyTorch CPU's", nnrun_s / min(times[torch_name]), 0.85, "<=", "x"))
    elif torch_name in times:
        checks.append(check("nnrun epoch time / PyTorch CPU's (BatchNorm + dropout)",
                            nnrun_s / min(times[torch_name]), 0.80, "<=", "x"))
    write_result(part_result(part, title, rows, checks, notes), args.json)


if __name__ == "__main__":
    main()
