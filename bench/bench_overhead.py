"""The overhead of nnrun's trainer over its bare step loop, on the reference workload.

- bare step loop: forward, loss, backward, optimizer update over the same shuffled batches,
  written against nnrun's own model, loss and optimizer objects (nothing else);
- `fit`, progress off: nnrun's trainer with the silent reporter (adds the per-batch bookkeeping,
  the penalty hook, the per-epoch evaluation and the weight snapshot);
- `fit`, progress on: the same with the rich progress bar and epoch table, drawn to a terminal
  that discards its output (so the drawing is done, nothing is shown);
- evaluation alone: the per-epoch evaluation `fit` runs (train subset and validation split).

Usage: python bench/bench_overhead.py [--repeats 3] [--samples N] [--cpu-clock] [--json PATH]
"""

from __future__ import annotations

import os

import numpy as np
from bench_epoch import NnrunEpoch
from common import (
    C,
    check,
    clock_note,
    epoch_flops,
    log,
    now,
    parse_timing_args,
    part_result,
    reference_data,
    rounds,
    summarize,
    timing_parser,
    write_result,
)


class BareLoop(NnrunEpoch):
    """Forward, loss, backward and update over one epoch of shuffled batches, nothing else (the batch gather
    as `fit` has it)."""

    def __call__(self) -> float:
        from nnrun.parallel import gather_rows
        from nnrun.rng import stream

        cfg, data = self.cfg, self.data
        model, loss_fn, optimizer, lr = self.build_step_loop()
        X, y, batch = data.X_train, data.y_train, cfg.train.batch_size
        buffer = np.empty((batch, X.shape[1]), dtype=X.dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            start = now()
            order = stream(cfg.seed, "shuffle").permutation(len(X))
            for i in range(0, len(X), batch):
                idx = order[i:i + batch]
                scores = model.forward(gather_rows(X, idx, buffer if len(idx) == batch else None), train=True)
                _, dscores = loss_fn.loss_and_grad(scores, y[idx])
                model.backward(dscores)
                optimizer.step(model.params, lr)
            return now() - start


class EvaluationOnly(NnrunEpoch):
    """The evaluation `fit` runs after each epoch: the train subset and the validation split."""

    def __call__(self) -> float:
        from nnrun.rng import stream
        from nnrun.trainer import evaluate

        cfg, data = self.cfg, self.data
        model, loss_fn = self.build()
        n_eval = min(cfg.train.eval_train_size, len(data.X_train))
        eval_idx = np.sort(stream(cfg.seed, "eval_subset").choice(len(data.X_train), n_eval, replace=False))
        start = now()
        X_eval, y_eval = data.X_train[eval_idx], data.y_train[eval_idx]
        evaluate(model, loss_fn, X_eval, y_eval, cfg.train.eval_batch_size)
        evaluate(model, loss_fn, data.X_val, data.y_val, cfg.train.eval_batch_size)
        return now() - start


def rich_reporter_factory():
    """A `RichReporter` drawing to a terminal console whose output is discarded."""
    from rich.console import Console

    from nnrun.progress import RichReporter

    sink = open(os.devnull, "w")  # kept open for the reporter's lifetime
    reporter = RichReporter(Console(file=sink, force_terminal=True, width=120))
    reporter.start({"name": "bench"})  # what run_experiment does before fit (untimed here)
    return reporter


def main() -> None:
    parser = timing_parser(__doc__.split("\n\n")[0])
    args = parse_timing_args(parser)
    part = "overhead"
    title = (f"nnrun trainer overhead over its bare step loop (reference workload, {args.samples:,} samples)"
             + clock_note(args))
    log(f"[{part}] generating {args.samples} x 3072 float32 samples")
    X, y = reference_data(args.samples)
    competitors = {
        "bare step loop (nnrun objects)": BareLoop(X, y, "plain"),
        "fit, progress off": NnrunEpoch(X, y, "plain"),
        "fit, progress on (rich)": NnrunEpoch(X, y, "plain", reporter_factory=rich_reporter_factory),
        "evaluation alone (per epoch)": EvaluationOnly(X, y, "plain"),
    }
    times = rounds(competitors, args.repeats, progress=lambda m: log(f"[{part}] {m}"))
    bare = min(times["bare step loop (nnrun objects)"])
    flops = epoch_flops(args.samples)
    rows = []
    for name, ts in times.items():
        s = summarize(ts)
        row = {"name": name, **s, "ratio": s["seconds"] / bare}
        if name != "evaluation alone (per epoch)":
            row["gflops"] = flops / s["seconds"] / 1e9
        rows.append(row)
    off = min(times["fit, progress off"]) / bare - 1
    on = min(times["fit, progress on (rich)"]) / bare - 1
    checks = [check("trainer overhead over the bare loop, progress off", off, 0.10, "<=", "%"),
              check("trainer overhead over the bare loop, progress on", on, 0.10, "<=", "%")]
    notes = ["'ratio' = this row's time / the bare step loop's time; overhead = ratio - 1",
             f"the model has {C} outputs; evaluation covers train.eval_train_size training rows and 1,000 val rows"]
    write_result(part_result(part, title, rows, checks, notes), args.json)


if __name__ == "__main__":
    main()
