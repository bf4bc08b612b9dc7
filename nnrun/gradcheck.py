"""`nnrun gradcheck`: the configured network's analytic gradients against centered differences.

The model of the config, in float64, on a small seeded batch of the configured dataset's real,
preprocessed training data, with the configured loss and penalties (`nnrun.nn.numeric` does the
checking; its docstring explains the error measure and the skipped kinks), on the configured
`train.device` (a GPU checks its own kernels, in float64 too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from nnrun.backend import device_module, device_rng, to_device
from nnrun.config import ExperimentConfig
from nnrun.errors import UserInputError
from nnrun.experiment import build_model, build_regularizer, prepare_data
from nnrun.nn.numeric import DEFAULT_H, DEFAULT_TOL, check_model_gradients
from nnrun.rng import stream
from nnrun.tables import DataTable, stderr_console


def gradcheck(cfg: ExperimentConfig, *, batch_size: int = 16, h: float = DEFAULT_H, tol: float = DEFAULT_TOL,
              max_entries: int | None = 200, progress: Callable[[str, int, int], None] | None = None
              ) -> dict[str, Any]:
    """Check the gradients of the network `cfg` (an `ExperimentConfig`) describes, in float64.

    Uses `batch_size` examples of the configured dataset's training split (seeded choice),
    preprocessed with statistics fitted on the training split, the configured loss and
    penalties. Returns `{"passed", "h", "tol", "batch_size", "max_entries", "params": [...]}`.
    `progress(parameter, done, total)` is called after each checked entry (`GradcheckProgress` shows it).
    """
    if batch_size < 2:
        raise UserInputError(f"--batch-size: needs at least 2 examples (BatchNorm statistics), got {batch_size}")
    if not h > 0 or not tol > 0:
        raise UserInputError(f"--h and --tol must be positive, got h={h}, tol={tol}")
    xp = device_module(cfg.train.device)
    prepared = prepare_data(cfg)
    data, loss_fn = prepared.data, prepared.loss
    rng = stream(cfg.seed, "gradcheck")
    n = min(batch_size, len(data.X_train))
    idx = np.sort(rng.choice(len(data.X_train), n, replace=False))
    X = to_device(data.X_train[idx].astype(np.float64), xp)
    y = to_device(data.y_train[idx], xp)
    model = build_model(cfg.model, data.n_features, loss_fn.output_dim(data.n_targets), stream(cfg.seed, "init"),
                        dropout_rng=stream(cfg.seed, "dropout")).astype(np.float64)
    if xp is not np:
        model.to(xp).set_dropout_rng(device_rng(xp, stream(cfg.seed, "dropout")))
    regularizer = build_regularizer(cfg.regularization, cfg.model)
    regularizer.project(model.params)
    checks = check_model_gradients(model, loss_fn, X, y, regularizer, h=h, tol=tol, max_entries=max_entries, rng=rng,
                                   progress=progress)
    return {"passed": all(c.passed for c in checks), "h": h, "tol": tol, "batch_size": n,
            "max_entries": max_entries, "params": [asdict(c) for c in checks]}


class GradcheckProgress:
    """A progress bar of the checked entries on stderr (the parameter being checked, count, time left); off a
    terminal it prints nothing. Use as a context manager and pass it as `gradcheck(progress=...)`."""

    def __init__(self, console: Console = stderr_console) -> None:
        self.progress = Progress(TextColumn("gradcheck {task.fields[param]}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=console, transient=True)
        self.task = self.progress.add_task("gradcheck", total=None, param="")

    def __call__(self, param: str, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total, param=param)

    def __enter__(self) -> GradcheckProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def gradcheck_table(result: dict[str, Any]) -> DataTable:
    """A table of a `gradcheck` result: one row per parameter, failures in red."""
    verdict = Text("passed", style="green") if result["passed"] else Text("FAILED", style="bold red")
    title = Text("gradient check: ") + verdict + Text(f" (h={result['h']:g}, tol={result['tol']:g}, "
                                                       f"batch {result['batch_size']}, float64)")
    table = DataTable(title, caption="skipped: entries whose centered difference straddles a kink (ReLU, |w| of L1, "
                                     "hinge and L1 losses)")
    table.add_column("parameter", "label", key=True)
    table.add_column("shape", "label")
    table.add_column("checked")
    table.add_column("skipped")
    table.add_column("max rel error", digits=3)
    table.add_column("max abs error", digits=3)
    table.add_column("", "label")
    for p in result["params"]:
        status = Text("ok", style="green") if p["passed"] else Text("exceeds tol", style="bold red")
        table.add_row(p["name"], "x".join(map(str, p["shape"])), p["checked"], p["skipped"],
                      p["max_rel_error"], p["max_abs_error"], status)
    return table
