"""What `nnrun train` shows in the terminal: the phases of preparing the data as they run (`PhaseLines`),
the run header (the run, then the setup choices under study), a live per-epoch table with a batch
progress bar, and the final line and metrics table.

The epoch table marks the best epoch (the one model selection keeps: the best validation score
so far while training, the summary's `best_epoch` at the end), and its headers say what the
training columns measure: `train_loss` is the mean of the epoch's batch losses in training mode
(dropout on, BatchNorm batch statistics, weights changing during the epoch), while the final
table evaluates every split in evaluation mode with the weights the run ends with (the best epoch's
when they were restored, else the last epoch's), so the two train losses differ. Everything goes
to the stderr console of `nnrun.tables`, so stdout stays free for `--json`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from nnrun.tables import DataTable, fmt, stderr_console

REDRAW_SECONDS = 0.1
"""Shortest time between two redraws of the batch progress bar."""
EPOCH_HEADERS = {
    "train_loss": "train_loss (batch mean)",
    "reg_loss": "reg_loss (batch mean)",
}
"""Headers of the epoch table's columns that need saying what they measure (others: the metric's key)."""
BEST_MARK = "◀ best"
"""What marks the best epoch's row."""


PHASE_LINE_SECONDS = 1.0
"""A phase that took at least this long leaves a line with its time."""


class PhaseLines:
    """A `nnrun.experiment.Phase` for the terminal: while a phase runs, a spinner with its name and the time so
    far (on a terminal), then, when it took a second or more, one line with its time (anywhere)."""

    def __init__(self, console: Console = stderr_console) -> None:
        self.console = console

    @contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.console.is_terminal:
            progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                console=self.console, transient=True)
            progress.add_task(label, total=None)
            with progress:
                yield
        else:
            yield
        seconds = time.perf_counter() - start
        if seconds >= PHASE_LINE_SECONDS:
            self.console.print(f"{label}: {seconds:.1f} s", markup=False, highlight=False, soft_wrap=True)


def run_header(info: dict[str, Any]) -> DataTable:
    """The run (name, folder, data, sizes, parameters) and, below, the setup choices under study."""
    table = DataTable("run", show_header=False)
    table.add_column("", "label", style="bold", key=True)
    table.add_column("", "text", movable=False)
    plain = {k: v for k, v in info.items() if not isinstance(v, dict)}
    for i, (key, value) in enumerate(plain.items()):
        table.add_row(key, fmt(value), end_section=i == len(plain) - 1)
    for key, value in info.get("choices", {}).items():
        table.add_row(key, value)
    return table


class RichReporter:
    """Shows training live: the epoch table so far and a progress bar over the current epoch's batches.

    A `nnrun.trainer.Reporter`; `close()` leaves the terminal clean when a run stops early. `start`
    reads `info["choices"]` (shown in the header) and `info["selection"]` (`metric`,
    `higher_is_better`: how the best epoch is chosen) besides the values it shows.
    """

    def __init__(self, console: Console = stderr_console) -> None:
        self.console = console
        self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=console)
        self.rows: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.selection: dict[str, Any] = {}
        self.best_epoch: int | None = None
        self.pending, self.last_draw = 0, 0.0
        self.live: Live | None = None
        self.task = None

    def start(self, info: dict[str, Any]) -> None:
        self.selection = info.get("selection") or {}
        self.console.print(run_header({k: v for k, v in info.items() if k != "selection"}))
        self.live = Live(Group(_Deferred(self.epoch_table), self.progress), console=self.console,
                         refresh_per_second=4)
        self.live.start()

    def epoch_start(self, epoch: int, n_batches: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("", total=n_batches, epoch=epoch, loss="-")

    def batch_end(self, loss: float) -> None:
        # Redraw at most every REDRAW_SECONDS: a rich update per batch costs more than a small step.
        self.pending += 1
        now = time.monotonic()
        if now - self.last_draw >= REDRAW_SECONDS:
            self.progress.update(self.task, advance=self.pending, loss=f"{loss:.4f}")
            self.pending, self.last_draw = 0, now

    def epoch_end(self, row: dict[str, Any]) -> None:
        self.progress.update(self.task, advance=self.pending)
        self.pending = 0
        if not self.keys:
            self.keys = list(row)
        self.rows.append(row)
        self.best_epoch = best_so_far(self.rows, **self.selection) if self.selection else None

    def epoch_table(self) -> DataTable:
        """The epochs so far, the best one marked."""
        table = DataTable("epochs", caption=epoch_caption(self.keys))
        for key in self.keys:
            table.add_column(EPOCH_HEADERS.get(key, key), "value" if key == "lr" else "number",
                             digits=3 if key == "seconds" else 4, key=key == "epoch")
        table.add_column("", "label", style="bold green")
        for row in self.rows:
            best = row.get("epoch") == self.best_epoch
            table.add_row(*(row.get(key) for key in self.keys), BEST_MARK if best else "",
                          style="bold" if best else None)
        return table

    def end(self, summary: dict[str, Any]) -> None:
        self.best_epoch = summary.get("best_epoch", self.best_epoch)
        self.close()
        self.console.print(run_line(summary))
        self.console.print(summary_table(summary))

    def close(self) -> None:
        """Stop the live display (also on failure, so the terminal is left clean)."""
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        if self.live is not None:
            self.live.update(self.epoch_table() if self.keys else Text(""), refresh=True)
            self.live.stop()
            if not self.console.is_terminal:
                self.console.line()
            self.live = None


class _Deferred:
    """A renderable built when drawn (the live epoch table follows the rows as they come)."""

    def __init__(self, build: Any) -> None:
        self.build = build

    def __rich_console__(self, console: Console, options: Any) -> Any:
        yield self.build()


def best_so_far(rows: list[dict[str, Any]], *, metric: str, higher_is_better: bool) -> int | None:
    """The epoch with the best `metric` (ties: lower val_loss first), as model selection picks it
    (`nnrun.trainer.validation_score`); by val_loss alone when the rows lack the metric."""
    def score(row: dict[str, Any]) -> tuple[float, ...]:
        value = row.get(metric)
        loss = -row.get("val_loss", float("inf"))
        if value is None:
            return (loss,)
        return (value if higher_is_better else -value, loss)

    best = None
    for row in rows:  # the first of equal scores wins, as in the training loop
        if best is None or score(row) > score(best):
            best = row
    return best.get("epoch") if best is not None else None


def epoch_caption(keys: list[str]) -> str:
    """What the epoch table's training columns measure."""
    parts = ["train_loss: mean data loss of the epoch's batches in training mode, while the weights change"]
    if "reg_loss" in keys:
        parts.append("reg_loss: the penalties, likewise")
    if any(k.startswith("train_") and k != "train_loss" for k in keys):
        parts.append("other train_ columns: evaluation mode on a fixed subset of training examples")
    parts.append(f"{BEST_MARK}: the epoch model selection keeps")
    return "; ".join(parts)


def run_line(summary: dict[str, Any]) -> str:
    """One line: status, epochs, time, and which epoch's weights the final metrics use."""
    line = (f"{summary.get('name', 'run')}: {summary.get('status')}, {summary.get('epochs')} epochs "
            f"in {summary.get('seconds', 0):.1f} s")
    if summary.get("stopped_early"):
        line += ", stopped early (patience)"
    if summary.get("restored_best") and summary.get("best_epoch") != summary.get("epochs"):
        line += f"; final metrics use the best epoch's weights (epoch {summary.get('best_epoch')})"
    if summary.get("step_path"):
        line += f"; GPU step: {summary['step_path']}"
    return line


def summary_table(summary: dict[str, Any]) -> DataTable:
    """Final metrics as a table with one row per split (train, val, test).

    With many metrics (per-attribute accuracies) the table turns: one row per metric.
    """
    splits = ("train", "val", "test")
    metrics = sorted({k.split("_", 1)[1] for k in summary if k.split("_", 1)[0] in splits and "_" in k
                      and not k.startswith(("n_",))} - {"seconds"})
    restored = summary.get("restored_best") and summary.get("best_epoch") != summary.get("epochs")
    epoch = summary.get("best_epoch") if restored else summary.get("epochs")
    which = "the best epoch's, restored" if restored else "the last epoch's"
    table = DataTable(f"final metrics, evaluation mode (epoch {epoch} weights)",
                      caption=f"every split evaluated in evaluation mode with the weights of epoch {epoch} "
                              f"({which}): the train loss here is not the epoch table's batch mean")
    if len(metrics) > 6:
        table.add_column("metric", "label", key=True)
        for split in splits:
            table.add_column(split)
        for m in metrics:
            table.add_row(m, *(summary.get(f"{split}_{m}") for split in splits))
        return table
    table.add_column("split", "label", key=True)
    for m in metrics:
        table.add_column(m)
    for split in splits:
        table.add_row(split, *(summary.get(f"{split}_{m}") for m in metrics))
    return table
