"""How every command renders values and tables in the terminal, and values for CSV.

One formatter for table cells (`fmt`: floats to a fixed number of significant digits, lists as
JSON, None as "-"), one for percentages (`pct`), one for CSV cells (`csv_cell`, full precision),
and `print_table`, which prints a rich table at its natural width when the output is not a
terminal. Human output goes to stderr (`stderr_console`), so stdout stays free for `--json`.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

stderr_console = Console(stderr=True)
"""The console of human output (tables, progress, messages)."""

METRIC_COLUMNS = ("val_accuracy", "val_loss", "train_accuracy", "test_accuracy", "epochs", "seconds")
"""Summary values the run and sweep tables show by default, when runs have them."""


def fmt(value: Any, digits: int = 4) -> str:
    """A value for a table cell: floats to `digits` significant digits (exponent form from 1e5 up),
    lists and dicts as JSON, None as "-", anything else as text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:.{max(digits - 1, 1)}e}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def pct(fraction: float | None, decimals: int = 1) -> str:
    """A fraction as a percentage, `0.9651` -> `96.5 %`; None as "-"."""
    return "-" if fraction is None else f"{100 * fraction:.{decimals}f} %"


def csv_cell(value: Any) -> str:
    """A value as text for CSV: numbers in full precision, lists and dicts as JSON, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def plural(n: int, noun: str) -> str:
    """`1 run`, `2 runs`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def key_value_table(title: str, values: dict[str, Any]) -> Table:
    """A two-column table of `values`."""
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in values.items():
        table.add_row(key, fmt(value))
    return table


def print_table(table: Table, console: Console = stderr_console) -> None:
    """Print `table`; off a terminal (logs, pipes) at its natural width rather than rich's default 80 columns."""
    if not console.is_terminal:
        natural = Measurement.get(console, console.options.update_width(1000), table).maximum
        if natural > console.width:
            console = Console(file=console.file, width=natural, no_color=console.no_color)
    console.print(table)
