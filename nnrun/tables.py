"""How every command renders values and tables in the terminal, and values for CSV.

Values: `fmt` (one value for a cell: floats to a few significant digits, lists as JSON, None as
"-"), `pct` (a fraction as a percentage), `csv_cell` (full precision for CSV), `csv_field` (`csv_cell` safe to
open in a spreadsheet), `printable` (control characters as escapes), `plural`.

Tables: every command builds its tables as a `DataTable`, which renders itself at the width it
is given (a terminal, a log file, a fixed-width test console) by one policy:

- numbers are never cut or wrapped: a `number` column (measured values: losses, accuracies,
  seconds) prints every value with the same number of decimals, chosen so that its largest value
  has `digits` significant digits and its smallest nonzero one at least two (scientific notation,
  `digits` significant digits, when the column spans more decades than that allows); a `value`
  column (settings as the user gave them: 0.001, 1e-05) prints each value in its shortest form;
  `label` columns (names, statuses) are never cut either;
- long `text` columns (paths, reasons, tags) fold between words (after `_ . - / =` and spaces; a
  text column is at least as wide as its longest word, up to `TEXT_WORD_WIDTH`); when the table
  still does not fit, a movable text column moves below the table, one line per row that has
  text, named by the row's key columns;
- headers wrap (at `_`, `.`, `-`, `/`, `=` and spaces) rather than truncate, and a header word is never folded in
  the layout (a column is at least as wide as its header's longest word);
- text (headers and `text` cells) never breaks inside a number (`0.0050`, `-0.007`, `1e-05`, `3/5`,
  `96.5 %`): a `text` column is at least as wide as the longest word holding one;
- a table too wide even so is split into blocks of columns, each repeating the key columns.

Off a terminal (pipes, logs) `print_table` renders at the table's natural width, unless the
`COLUMNS` environment variable sets one. Human output goes to stderr (`stderr_console`) so that
stdout stays free for `--json`; listings meant for pipes (`nnrun runs`) go to `stdout_console`.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

stderr_console = Console(stderr=True)
"""The console of human output (tables, progress, messages)."""
stdout_console = Console()
"""The console of listings a user pipes or redirects (`nnrun runs`, `nnrun diff`)."""

METRIC_COLUMNS = ("val_accuracy", "val_loss", "train_accuracy", "test_accuracy", "epochs", "seconds")
"""Summary values the sweep results table, and the CSV and JSON of `nnrun runs`, show by default."""

KINDS = ("number", "value", "label", "text")
"""Column kinds of a `DataTable` (module docstring)."""
TEXT_MIN_WIDTH = 12
"""Narrowest a folding text column gets before it moves below the table."""
TEXT_WORD_WIDTH = 24
"""A text column is at least as wide as its longest word up to this many cells (longer words fold)."""
HEADER_BREAK = re.compile(r".+?(?:[_./=\-]+|\s+|$)")
"""A header word and the separator after it: headers and text wrap after `_`, `.`, `-`, `/`, `=` and spaces."""
NUMBER_RE = re.compile(r"(?<![\w.])[-+±]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:/\d+)?(?: ?%)?(?![\w.])")
"""A number in text (`0.0050`, `+0.0123`, `1e-05`, `3/5`, `96.5 %`), which wrapping never breaks."""


# ---- values -------------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 4) -> str:
    """A value for a table cell: floats to `digits` significant digits (exponent form from 1e5 up),
    lists and dicts as JSON, None as "-", anything else as text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
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


CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""Characters a terminal or a spreadsheet acts on rather than shows: C0 and C1 controls (the escape that starts
a colour or hyperlink sequence, tab, carriage return, bell) and the bidirectional overrides."""
FORMULA_STARTS = ("=", "+", "-", "@")
"""First characters that make a spreadsheet read a CSV field as a formula (tab and carriage return, the others
OWASP lists, are control characters: removed)."""


def printable(text: str) -> str:
    """`text` with its control characters (`CONTROL_CHARACTERS`) shown as escapes (`\\x1b`), so that a name from
    a file (a tampered run's class names) prints as itself and never drives the terminal."""
    return CONTROL_CHARACTERS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def csv_field(value: Any) -> str:
    """`csv_cell` made safe to open in a spreadsheet: control characters removed, and text that would start
    with `= + - @` (a formula) prefixed with `'` unless it is a number (`-0.5` stays a number)."""
    text = csv_cell(value)
    if not isinstance(value, str):
        return text
    cleaned = CONTROL_CHARACTERS.sub("", text)
    if cleaned.startswith(FORMULA_STARTS):
        try:
            float(cleaned)
        except ValueError:
            return "'" + cleaned
    return cleaned


def plural(n: int, noun: str) -> str:
    """`1 run`, `2 runs`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def is_number(value: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def column_format(values: Sequence[Any], digits: int = 4) -> list[str]:
    """The cells of one `number` column: every float with one number of decimals (module docstring).

    Integers print whole, None as "-", text as given; `digits` is the significant digits of the
    column's largest float.
    """
    floats = [abs(v) for v in values if isinstance(v, float) and math.isfinite(v)]
    nonzero = [v for v in floats if v > 0]
    scientific, decimals = False, 0
    if nonzero:
        hi, lo = max(nonzero), min(nonzero)
        for_hi = digits - 1 - math.floor(math.log10(hi))
        for_lo = 1 - math.floor(math.log10(lo))
        decimals = max(for_hi, for_lo, 0)
        scientific = hi >= 10 ** (digits + 2) or decimals > max(for_hi, 0) + 3 or decimals > 8
    elif floats:
        decimals = 1

    def one(v: Any) -> str:
        if isinstance(v, float) and math.isfinite(v):
            return f"{v:.{digits - 1}e}" if scientific else f"{v:.{decimals}f}"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return fmt(v)
        return str(v)

    return [one(v) for v in values]


def value_format(value: Any) -> str:
    """A setting as the user gave it: the shortest form of a float (up to 6 significant digits)."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return fmt(value)


# ---- table layout -------------------------------------------------------------------------------

@dataclass
class Column:
    """One column of a `DataTable`: its header, kind (`KINDS`), significant digits of a number
    column, whether it names its rows (`key`: repeated in every block of a split table), whether a
    text column may move below the table (`movable`), and a style."""

    header: str
    kind: str = "number"
    digits: int = 4
    key: bool = False
    movable: bool = True
    style: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def justify(self) -> str:
        return "right" if self.kind in ("number", "value") else "left"


@dataclass
class _Row:
    cells: list[Any]
    end_section: bool = False
    style: str | None = None


def text_words(text: str) -> list[str]:
    """`text` cut where it may wrap: after `_ . - / =` and spaces, never inside a number (`NUMBER_RE`)."""
    numbers = [m.span() for m in NUMBER_RE.finditer(text)]
    words: list[str] = []
    end = 0
    for word in HEADER_BREAK.findall(text):
        start, end = end, end + len(word)
        if words and any(a < start < b for a, b in numbers):
            words[-1] += word
        else:
            words.append(word)
    return words


def wrap_header(header: str, width: int) -> str:
    """`header` (or a text cell) in lines of at most `width` cells, broken after `_ . - / =` and spaces, never
    inside a number; a word longer than `width` is folded (the layout gives no column less than its words)."""
    lines: list[str] = []
    line = ""
    for word in text_words(header):
        if cell_len((line + word).rstrip()) <= width:
            line += word
            continue
        if line.strip():
            lines.append(line.rstrip())
        line = word
        while cell_len(line.rstrip()) > width:
            lines.append(line[:width])
            line = line[width:]
    if line.strip() or not lines:
        lines.append(line.rstrip())
    return "\n".join(lines)


def _longest_word(header: str) -> int:
    return max((cell_len(w.rstrip()) for w in text_words(header)), default=0)


def _longest_number_word(text: str) -> int:
    """The longest unbreakable word of `text` that holds a number (0 when none does)."""
    return max((cell_len(w.rstrip()) for w in text_words(text) if NUMBER_RE.search(w)), default=0)


@dataclass
class _Layout:
    """Formatted cells of every column, and each column's natural and smallest width."""

    columns: list[Column]
    cells: list[list[Any]]           # cells[row][column]: str or Text
    natural: list[int] = field(default_factory=list)
    smallest: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for j, column in enumerate(self.columns):
            widths = [cell_len(c.plain if isinstance(c, Text) else c) for c in (row[j] for row in self.cells)]
            content = max(widths, default=0)
            header = max((cell_len(line) for line in column.header.split("\n")), default=0)
            self.natural.append(max(content, header, 1))
            if column.kind == "text":
                texts = [c.plain if isinstance(c, Text) else c for c in (row[j] for row in self.cells)]
                rigid = max(min(content, TEXT_MIN_WIDTH), max((_longest_number_word(t) for t in texts), default=0),
                            min(max((_longest_word(t) for t in texts), default=0), TEXT_WORD_WIDTH))
            else:
                rigid = content
            self.smallest.append(max(rigid, _longest_word(column.header), 1))

    def pick(self, indices: list[int]) -> _Layout:
        return _Layout([self.columns[j] for j in indices], [[row[j] for j in indices] for row in self.cells])


def _header_lines(header: str, width: int) -> int:
    return wrap_header(header, width).count("\n") + 1


def _next_header_step(header: str, width: int, natural: int) -> int:
    """The narrowest width above `width` (at most `natural`) at which `header` takes fewer lines."""
    lines = _header_lines(header, width)
    for w in range(width + 1, natural + 1):
        if _header_lines(header, w) < lines:
            return w
    return natural


def _styled_table(**options: Any) -> Table:
    """A rich table in the style of every table: a heavy rule under the header, two spaces between columns."""
    return Table(box=box.SIMPLE_HEAVY, show_edge=False, pad_edge=False, collapse_padding=True, **options)


@functools.lru_cache(maxsize=64)
def _overhead(n_columns: int) -> int:
    """Cells the table style adds to its columns' widths (dividers and padding), measured on rich itself."""
    table = _styled_table()
    for _ in range(n_columns):
        table.add_column(width=1)
    console = Console(width=10_000, file=io.StringIO())
    return Measurement.get(console, console.options, table).maximum - n_columns


def _fit(layout: _Layout, width: int) -> list[int] | None:
    """Column widths that fit `width` (natural widths when they do), or None when even the smallest do not."""
    room = width - _overhead(len(layout.columns))
    if sum(layout.natural) <= room:
        return list(layout.natural)
    if sum(layout.smallest) > room:
        return None
    widths = list(layout.smallest)
    spare = room - sum(widths)
    # First unwrap the headers of the rigid columns, the cheapest line first; then widen the text columns.
    rigid = [j for j, c in enumerate(layout.columns) if c.kind != "text"]
    while True:
        steps = [(_next_header_step(layout.columns[j].header, widths[j], layout.natural[j]) - widths[j], j)
                 for j in rigid if widths[j] < layout.natural[j]]
        steps = [(cost, j) for cost, j in steps if cost <= spare]
        if not steps:
            break
        cost, j = min(steps)
        widths[j] += cost
        spare -= cost
    texts = [j for j, c in enumerate(layout.columns) if c.kind == "text"]
    while spare > 0 and any(widths[j] < layout.natural[j] for j in texts):
        for j in texts:
            if spare > 0 and widths[j] < layout.natural[j]:
                widths[j] += 1
                spare -= 1
    return widths


class DataTable:
    """A table that lays itself out for the width it is rendered at (the module's policy).

    Add columns with `add_column(header, kind=...)` and rows of raw values with `add_row`: numbers
    (formatted per column), None ("-"), text, or rich `Text` (kept as styled). Rendering yields one
    rich table (or several blocks of columns), followed by the text moved below it.
    """

    def __init__(self, title: str | Text | None = None, *, caption: str | None = None, show_header: bool = True,
                 columns: Iterable[Column] = ()) -> None:
        self.title = title
        self.caption = caption
        self.show_header = show_header
        self.columns: list[Column] = list(columns)
        self.rows: list[_Row] = []

    def add_column(self, header: str, kind: str = "number", **options: Any) -> None:
        """A column (see `Column` for the options); control characters in `header` print as escapes."""
        self.columns.append(Column(printable(header), kind, **options))

    def add_row(self, *cells: Any, end_section: bool = False, style: str | None = None) -> None:
        """One row of raw values, one per column."""
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(_Row(list(cells), end_section, style))

    @property
    def row_count(self) -> int:
        return len(self.rows)

    # -- formatting --

    def formatted(self) -> list[list[Any]]:
        """The cells as they print: `number` columns by `column_format`, `value` columns by `value_format`."""
        columns: list[list[Any]] = []
        for j, column in enumerate(self.columns):
            raw = [row.cells[j] for row in self.rows]
            plain = [c for c in raw if not isinstance(c, Text)]
            if column.kind == "number":
                shown = iter(column_format(plain, column.digits))
            else:
                shown = iter([value_format(c) if column.kind == "value" else fmt(c) for c in plain])
            columns.append([c if isinstance(c, Text) else printable(next(shown)) for c in raw])
        return [[columns[j][i] for j in range(len(self.columns))] for i in range(len(self.rows))]

    def _layout(self) -> _Layout:
        return _Layout(self.columns, self.formatted())

    def natural_width(self) -> int:
        """The width the table takes when nothing wraps."""
        layout = self._layout()
        return sum(layout.natural) + _overhead(len(self.columns))

    # -- rendering --

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        layout = self._layout()
        return Measurement(min(sum(layout.smallest) + _overhead(len(self.columns)), options.max_width),
                           min(sum(layout.natural) + _overhead(len(self.columns)), options.max_width))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        layout = self._layout()
        keep = list(range(len(self.columns)))
        moved: list[int] = []
        widths = _fit(layout, width)
        # Too wide: move the movable text columns below the table, widest first.
        movable = sorted((j for j, c in enumerate(self.columns) if c.kind == "text" and c.movable),
                         key=lambda j: -layout.natural[j])
        while widths is None and movable and len(keep) > 1:
            j = movable.pop(0)
            keep.remove(j)
            moved.append(j)
            widths = _fit(layout.pick(keep), width)
        if widths is not None:
            blocks = [(keep, widths)]
        else:
            blocks = self._blocks(layout, keep, width)
        for n, (indices, block_widths) in enumerate(blocks):
            needed = sum(block_widths) + _overhead(len(indices))
            # A str title is text, never markup (a run's name comes from its config.yaml).
            title = (Text(printable(self.title)) if isinstance(self.title, str) else self.title) if n == 0 else None
            if title is not None and cell_len(str(title)) > needed:
                # A title wider than its table goes above it, wrapped to the console rather than to the table.
                yield from console.render(Text(str(title), style="table.title"), options)
                title = None
            table = self._rich_table(layout, indices, block_widths, title)
            yield from console.render(table, options.update(width=max(width, needed)))
        if self.caption:
            yield from console.render(Text(printable(self.caption), style="table.caption"), options)
        yield from self._notes(layout, moved, console, options)

    def _blocks(self, layout: _Layout, keep: list[int], width: int) -> list[tuple[list[int], list[int]]]:
        """Split the columns `keep` into blocks that fit `width` (each repeating the key columns)."""
        keys = [j for j in keep if self.columns[j].key]
        rest = [j for j in keep if j not in keys]
        blocks: list[tuple[list[int], list[int]]] = []
        current: list[int] = []
        for j in rest:
            trial = sorted(keys + current + [j])
            if current and _fit(layout.pick(trial), width) is None:
                block = sorted(keys + current)
                blocks.append((block, _fit(layout.pick(block), width) or [layout.smallest[i] for i in block]))
                current = []
            current.append(j)
        block = sorted(keys + current)
        blocks.append((block, _fit(layout.pick(block), width) or [layout.smallest[i] for i in block]))
        return blocks

    def _rich_table(self, layout: _Layout, indices: list[int], widths: list[int], title: Any) -> Table:
        table = _styled_table(title=title, show_header=self.show_header)
        for j, w in zip(indices, widths, strict=True):
            column = self.columns[j]
            header = Text(wrap_header(column.header, w), overflow="fold")
            table.add_column(header, justify=column.justify, width=w, no_wrap=column.kind != "text",
                             overflow="fold", style=column.style)
        folds = {j: w for j, w in zip(indices, widths, strict=True) if self.columns[j].kind == "text"}
        for row, cells in zip(self.rows, layout.cells, strict=True):
            # Plain cells are text, never markup (`[64, 32]` is a list, not a style); text that folds breaks
            # after `-`, `_`, `.`, `/` and spaces, like headers (`digits-sweep-` / `3da65cfa603c`).
            table.add_row(*(cells[j] if isinstance(cells[j], Text)
                            else Text(wrap_header(cells[j], folds[j]) if j in folds else cells[j])
                            for j in indices), end_section=row.end_section, style=row.style)
        return table

    def _notes(self, layout: _Layout, moved: list[int], console: Console,
               options: ConsoleOptions) -> RenderResult:
        """The text of the columns moved below the table: `key: header: text`, one line per row with text."""
        keys = [j for j, c in enumerate(self.columns) if c.key]
        for j in sorted(moved):
            for i, cells in enumerate(layout.cells):
                cell = cells[j]
                text = cell.plain if isinstance(cell, Text) else cell
                if not text or text == "-":
                    continue
                name = " ".join((cells[k].plain if isinstance(cells[k], Text) else cells[k]) for k in keys)
                line = Text(f"{name or f'row {i + 1}'}: ", style="bold") + Text(f"{self.columns[j].header}: ")
                line += cell if isinstance(cell, Text) else Text(text)
                yield from console.render(line, options)


def key_value_table(title: str | None, values: dict[str, Any], caption: str | None = None) -> DataTable:
    """A two-column table of `values` (no header): names, then values as `fmt` writes them."""
    table = DataTable(title, caption=caption, show_header=False)
    table.add_column("", "label", style="bold", key=True)
    table.add_column("", "text", movable=False)
    for key, value in values.items():
        table.add_row(key, value if isinstance(value, Text) else fmt(value))
    return table


def console_for(table: DataTable | Table | RenderableType, console: Console) -> Console:
    """The console to print `table` on: `console` on a terminal or when `COLUMNS` is set, else one as wide as
    the table's natural width (so logs and pipes get whole rows)."""
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console
    if isinstance(table, DataTable):
        natural = table.natural_width()
    else:
        natural = Measurement.get(console, console.options.update_width(1000), table).maximum
    if natural > console.width:
        return Console(file=console.file, width=natural, no_color=console.no_color,
                       force_terminal=console.is_terminal)
    return console


def print_table(table: DataTable | Group | RenderableType, console: Console = stderr_console) -> None:
    """Print `table` on `console` (stderr by default); off a terminal at its natural width (module docstring)."""
    console_for(table, console).print(table)
