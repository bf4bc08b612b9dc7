"""`nnrun diff RUN_A RUN_B [RUN_C ...]`: what differs between two or more runs, side by side.

The runs are lettered A, B, C, ... in the order given (at most `MAX_RUNS`). Shown: the config keys whose
resolved values differ between any of them (dotted keys, in first-seen order, keys only some runs have included
unless the others' are null: `runstore.varying_keys`), the tags that differ (`tag.KEY`), each run's note, then
the headline metrics side by side: status, the headline metric (accuracy, or rmse for regression) and the loss
on each split, epochs, best epoch and time. Two runs get the difference B - A; more runs get the best value of
each split metric marked (bold in the terminal, `best` in JSON). Every table is a `DataTable`: a row of keys
too wide for the terminal is split into blocks of runs, each repeating the key column, and no number is cut.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text

from nnrun.errors import UserInputError
from nnrun.labels import one_line
from nnrun.rundir import BROKEN, BROKEN_REASON
from nnrun.runstore import TAG_PREFIX, RunRecord, headline_metric, higher_is_better, read_run, varying_keys
from nnrun.tables import DataTable, column_format, is_number, plural, printable

SPLITS = ("val", "test", "train")
"""Splits whose metrics the comparison shows, in this order."""
RUN_VALUES = ("epochs", "best_epoch", "seconds", "seconds_per_epoch")
"""Summary values shown after the split metrics."""
LETTERS = string.ascii_uppercase
"""The names of the compared runs, in the order given."""
MAX_RUNS = len(LETTERS)
"""Most runs one `nnrun diff` compares (`nnrun runs --columns` lists more)."""


def _read(path: str | Path, which: str) -> RunRecord:
    record = read_run(path)
    if record is None:
        raise UserInputError(f"{which} {path}: not a run directory (no config.yaml or summary.json in it)")
    if record.status == BROKEN:
        raise UserInputError(f"{which} {path}: {BROKEN_REASON}")
    return record


def _differing_tags(records: list[RunRecord]) -> list[str]:
    """The tag keys whose value (or absence) differs between `records`, in first-seen order."""
    keys = dict.fromkeys(k for r in records for k in r.tags)
    return [k for k in keys if len({r.tags.get(k) for r in records}) > 1]


def _best(metric: str, values: list[Any]) -> int | None:
    """The index of the best of `values` for a split metric (`val_accuracy`: the highest; `val_loss`: the
    lowest), None for other rows, when fewer than two runs have a number, or when all numbers are equal."""
    if metric.split("_", 1)[0] not in SPLITS:
        return None
    numbers = [(v, i) for i, v in enumerate(values) if is_number(v) and v == v]
    if len(numbers) < 2 or len({v for v, _ in numbers}) == 1:
        return None
    pick = max if higher_is_better(metric.split("_", 1)[1]) else min
    return pick(numbers, key=lambda vi: vi[0])[1]


def diff_runs(*paths: str | Path) -> dict[str, Any]:
    """The differing config keys and tags, the notes and the headline metrics of the runs in `paths` (2 to
    `MAX_RUNS` run directories).

    Returns `{"runs": [path, ...], "letters": ["A", "B", ...], "status": [...], "notes": [...],
    "config": [{"key", "values"}], "tags": [{"key", "values"}], "metrics": [{"metric", "values", "best"}]}`, a
    value a run lacks being None and `best` the index of the best value (or None). With exactly two runs it
    also holds `a` and `b` (their paths), each config row `a` and `b`, and each metric row `a`, `b` and
    `difference` (B - A).
    """
    if len(paths) < 2:
        raise UserInputError("nnrun diff compares two or more runs: give at least RUN_A and RUN_B")
    if len(paths) > MAX_RUNS:
        raise UserInputError(f"nnrun diff compares at most {MAX_RUNS} runs (got {len(paths)}); "
                             "nnrun runs FOLDER --columns run,KEY,... lists any number side by side")
    letters = list(LETTERS[:len(paths)])
    records = [_read(p, f"RUN_{letter}") for p, letter in zip(paths, letters, strict=True)]
    seen: dict[Path, str] = {}
    for record, letter in zip(records, letters, strict=True):
        first = seen.setdefault(record.path.resolve(), letter)
        if first != letter:
            raise UserInputError(f"RUN_{letter} {record.path} is RUN_{first} again: give each run once")
    config = [{"key": k, "values": [r.config.get(k) for r in records]} for k in varying_keys(records)]
    tags = [{"key": TAG_PREFIX + k, "values": [r.tags.get(k) for r in records]} for k in _differing_tags(records)]
    metric = headline_metric(records)
    names = [f"{split}_{m}" for m in (metric, "loss") for split in SPLITS] + list(RUN_VALUES)
    metrics = []
    for name in names:
        values = [r.get(name) for r in records]
        if all(v is None for v in values):
            continue
        metrics.append({"metric": name, "values": values, "best": _best(name, values)})
    result: dict[str, Any] = {"runs": [str(r.path) for r in records], "letters": letters,
                              "status": [r.status for r in records], "notes": [r.note for r in records],
                              "config": config, "tags": tags, "metrics": metrics}
    if len(records) == 2:
        result["a"], result["b"] = result["runs"]
        for row in config:
            row["a"], row["b"] = row["values"]
        for row in metrics:
            va, vb = row["a"], row["b"] = row["values"]
            row["difference"] = vb - va if is_number(va) and is_number(vb) else None
    return result


def diff_view(result: dict[str, Any]) -> Group:
    """The comparison as the terminal shows it: which run is A, B, ... (with its note), the config and tag
    tables, the metrics table."""
    letters = result["letters"]
    heading = Text()
    for i, (letter, path, status, note) in enumerate(zip(letters, result["runs"], result["status"],
                                                         result["notes"], strict=True)):
        heading.append(letter, "bold")
        heading.append(f": {printable(path)} ({status})")
        if note:
            heading.append(f"\n   note: {printable(one_line(note) or '')}")
        if i < len(letters) - 1:
            heading.append("\n")
    parts: list[Any] = [heading]
    config, tags = result["config"], result["tags"]
    if config:
        parts.append(_values_table(f"config: {_differ(len(config), 'key')}", config, letters))
    else:
        parts.append(Text("config: the same resolved config"))
    if tags:
        parts.append(_values_table(f"tags: {_differ(len(tags), 'tag')}", tags, letters))
    if result["metrics"]:
        parts.append(_metrics_table(result["metrics"], letters))
    return Group(*parts)


def _differ(n: int, noun: str) -> str:
    """`1 key differs`, `3 keys differ`."""
    return f"{plural(n, noun)} {'differs' if n == 1 else 'differ'}"


def _values_table(title: str, rows: list[dict[str, Any]], letters: list[str]) -> DataTable:
    """Keys down, runs across: each run's value as given (`value` columns)."""
    table = DataTable(title)
    table.add_column("key", "label", key=True)
    for letter in letters:
        table.add_column(letter, "value")
    for row in rows:
        table.add_row(row["key"], *row["values"])
    return table


def _metrics_table(rows: list[dict[str, Any]], letters: list[str]) -> DataTable:
    """Metrics down, runs across; B - A for two runs, the best value of each split metric in bold for more."""
    pair = len(letters) == 2
    caption = ("B - A: the difference of the two runs' values" if pair
               else "bold: the best value of a split metric (highest accuracy, lowest loss or error)")
    table = DataTable("metrics", caption=caption)
    table.add_column("metric", "label", key=True)
    for header in (*letters, *(["B - A"] if pair else [])):
        table.add_column(header)
    for row in rows:
        # Each row is its own quantity (accuracy, loss, seconds): one number format per row.
        shown: list[Any] = column_format([*row["values"], *([row["difference"]] if pair else [])])
        if pair:
            if is_number(row["difference"]) and row["difference"] > 0:
                shown[-1] = f"+{shown[-1]}"
        elif row["best"] is not None:
            shown[row["best"]] = Text(shown[row["best"]], style="bold")
        table.add_row(row["metric"], *shown)
    return table
