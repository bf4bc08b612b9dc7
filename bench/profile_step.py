"""Where the time of nnrun's training step goes: every layer's forward and backward, the loss, the
optimizer update and the batch gather, timed over one epoch of the reference workload, next to
the time the same matrix products take alone (the BLAS floor of each Linear layer).

Usage: python bench/profile_step.py [--variant plain|bn-dropout] [--repeats 2] [--cpu-clock] [--json PATH]

`--cpu-clock` runs BLAS on one thread and times with the process's CPU clock instead of the wall
clock: the shares then hold up on a busy machine (where wall times of multi-threaded BLAS calls
swing with the load), at the price of not showing the threads' own overheads.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from bench_epoch import VARIANTS, NnrunEpoch
from common import B, log, now, parse_timing_args, part_result, reference_data, timing_parser


def timed_call(totals: dict[str, float], key: str, fn):
    """`fn` wrapped so that each call adds its seconds to `totals[key]`."""
    def wrapper(*args, **kwargs):
        start = now()
        out = fn(*args, **kwargs)
        totals[key] += now() - start
        return out
    return wrapper


class ProfiledLoop(NnrunEpoch):
    """The bare step loop with every piece timed; returns the seconds per piece for one epoch."""

    def profile(self) -> dict[str, float]:
        from nnrun.rng import stream

        cfg, data = self.cfg, self.data
        model, loss_fn, optimizer, lr = self.build_step_loop()
        totals: dict[str, float] = defaultdict(float)
        for i, layer in enumerate(model.layers):
            name = f"{i}:{type(layer).__name__}"
            layer.forward = timed_call(totals, f"forward {name}", layer.forward)
            layer.backward = timed_call(totals, f"backward {name}", layer.backward)
        loss_and_grad = timed_call(totals, "loss_and_grad (softmax)", loss_fn.loss_and_grad)
        step = timed_call(totals, f"optimizer.step ({cfg.optim.name})", optimizer.step)
        X, y, batch = data.X_train, data.y_train, cfg.train.batch_size
        with np.errstate(over="ignore", invalid="ignore"):
            start = now()
            order = stream(cfg.seed, "shuffle").permutation(len(X))
            for i in range(0, len(X), batch):
                idx = order[i:i + batch]
                t = now()
                xb, yb = X[idx], y[idx]
                totals["batch gather X[idx], y[idx]"] += now() - t
                scores = model.forward(xb, train=True)
                _, dscores = loss_and_grad(scores, yb)
                model.backward(dscores)
                step(model.params, lr)
            totals["whole epoch"] = now() - start
        return dict(totals)


def gemm_floor(model_layers, n: int, batch: int) -> dict[str, float]:
    """Seconds per epoch of each Linear layer's products alone: forward, dW and (except layer 0) dX."""
    from nnrun.nn.layers import Linear

    rng = np.random.default_rng(0)
    floors = {}
    linears = [(i, layer) for i, layer in enumerate(model_layers) if isinstance(layer, Linear)]
    for pos, (i, layer) in enumerate(linears):
        W = layer.W.value
        x = rng.standard_normal((batch, W.shape[0]), dtype=np.float32)
        d = rng.standard_normal((batch, W.shape[1]), dtype=np.float32)
        out, dW, dx = np.empty((batch, W.shape[1]), np.float32), np.empty_like(W), np.empty_like(x)
        steps = -(-n // batch)
        fwd = bwd = 0.0
        for _ in range(steps):
            t = now()
            np.matmul(x, W, out=out)
            t2 = now()
            np.matmul(x.T, d, out=dW)
            if pos > 0:
                np.matmul(d, W.T, out=dx)
            t3 = now()
            fwd += t2 - t
            bwd += t3 - t2
        floors[f"forward {i}:Linear"] = fwd
        floors[f"backward {i}:Linear"] = bwd
    return floors


def main() -> None:
    parser = timing_parser(__doc__.split("\n\n")[0])
    parser.set_defaults(repeats=2)
    parser.add_argument("--variant", choices=VARIANTS, default="plain")
    args = parse_timing_args(parser)
    X, y = reference_data(args.samples)
    loop = ProfiledLoop(X, y, args.variant)
    runs = []
    for r in range(args.repeats):
        runs.append(loop.profile())
        log(f"[profile] run {r + 1}/{args.repeats}: epoch {runs[-1]['whole epoch']:.3f} s")
    best = {k: min(run[k] for run in runs) for k in runs[0]}
    model, _ = loop.build()
    floors = [gemm_floor(model.layers, args.samples, B) for _ in range(args.repeats)]
    floor = {k: min(f[k] for f in floors) for k in floors[0]}
    epoch = best.pop("whole epoch")
    rows = [{"name": k, "seconds": v, "share": v / epoch, "blas_floor": floor.get(k)}
            for k, v in sorted(best.items(), key=lambda kv: -kv[1])]
    accounted = sum(best.values())
    rest = epoch - accounted
    rows.append({"name": "loop itself (unaccounted)", "seconds": rest, "share": rest / epoch})
    rows.append({"name": "whole epoch (bare step loop)", "seconds": epoch, "share": 1.0,
                 "blas_floor": sum(floor.values())})
    from rich.console import Console
    from rich.table import Table

    how = "1 BLAS thread, CPU clock" if args.cpu_clock else "wall clock"
    table = Table(title=f"nnrun training step, {args.variant}, one epoch of {args.samples:,} samples (best of "
                        f"{args.repeats}, {how})", title_justify="left")
    for col in ("piece", "ms / epoch", "share", "products alone ms", "excess ms"):
        table.add_column(col, justify="left" if col == "piece" else "right")
    for r in rows:
        fl = r.get("blas_floor")
        table.add_row(r["name"], f"{r['seconds'] * 1e3:.0f}", f"{r['share']:.1%}",
                      "" if fl is None else f"{fl * 1e3:.0f}", "" if fl is None else f"{(r['seconds'] - fl) * 1e3:.0f}")
    Console().print(table)
    result = part_result("profile", f"nnrun step profile ({args.variant})",
                         [{"name": r["name"], "seconds": r["seconds"]} for r in rows],
                         notes=["per-piece times; 'products alone' = the layer's matrix products in isolation"])
    result["profile"] = rows
    if args.json:
        import json
        from pathlib import Path

        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
