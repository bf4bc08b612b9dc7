"""What `nnrun train` shows in the terminal: the run header, a live per-epoch table with a batch
progress bar, and the final line and metrics table.

Everything goes to the stderr console of `nnrun.tables`, so stdout stays free for `--json`.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from nnrun.tables import fmt, key_value_table, stderr_console

REDRAW_SECONDS = 0.1
"""Shortest time between two redraws of the batch progress bar."""


class RichReporter:
    """Shows training live: the epoch table so far and a progress bar over the current epoch's batches.

    A `nnrun.trainer.Reporter`; `close()` leaves the terminal clean when a run stops early.
    """

    def __init__(self, console: Console = stderr_console) -> None:
        self.console = console
        self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=console)
        self.table: Table | None = None
        self.keys: list[str] = []
        self.pending, self.last_draw = 0, 0.0
        self.live: Live | None = None
        self.task = None

    def start(self, info: dict[str, Any]) -> None:
        self.console.print(key_value_table("run", info))
        self.table = Table(title="epochs")
        self.live = Live(Group(self.table, self.progress), console=self.console, refresh_per_second=4)
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
        if not self.table.columns:
            self.keys = list(row)
            for key in self.keys:
                self.table.add_column(key.replace("_", "\n"), justify="right")
        self.table.add_row(*(fmt(row.get(key, "")) for key in self.keys))

    def end(self, summary: dict[str, Any]) -> None:
        self.close()
        self.console.print(run_line(summary))
        self.console.print(summary_table(summary))

    def close(self) -> None:
        """Stop the live display (also on failure, so the terminal is left clean)."""
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        if self.live is not None:
            self.live.update(self.table, refresh=True)
            self.live.stop()
            if not self.console.is_terminal:
                self.console.line()
            self.live = None


def run_line(summary: dict[str, Any]) -> str:
    """One line: status, epochs, time, and which epoch's weights the final metrics use."""
    line = (f"{summary.get('name', 'run')}: {summary.get('status')}, {summary.get('epochs')} epochs "
            f"in {summary.get('seconds', 0):.1f} s")
    if summary.get("stopped_early"):
        line += ", stopped early (patience)"
    if summary.get("restored_best") and summary.get("best_epoch") != summary.get("epochs"):
        line += f"; final metrics use the best epoch's weights (epoch {summary.get('best_epoch')})"
    return line


def summary_table(summary: dict[str, Any]) -> Table:
    """Final metrics as a table with one row per split (train, val, test).

    With many metrics (per-attribute accuracies) the table turns: one row per metric.
    """
    splits = ("train", "val", "test")
    metrics = sorted({k.split("_", 1)[1] for k in summary if k.split("_", 1)[0] in splits and "_" in k
                      and not k.startswith(("n_",))} - {"seconds"})
    table = Table(title="final metrics")
    if len(metrics) > 6:
        table.add_column("metric")
        for split in splits:
            table.add_column(split, justify="right")
        for m in metrics:
            table.add_row(m, *(fmt(summary.get(f"{split}_{m}", "")) for split in splits))
        return table
    table.add_column("split")
    for m in metrics:
        table.add_column(m, justify="right")
    for split in splits:
        table.add_row(split, *(fmt(summary.get(f"{split}_{m}", "")) for m in metrics))
    return table
