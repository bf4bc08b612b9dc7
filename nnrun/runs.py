"""`nnrun runs`: the run directories under a folder as a table, CSV or JSON: filtered, sorted, grouped.

Records come from `nnrun.runstore`: a run's flattened config (dotted keys), summary and provenance
(`provenance.KEY`: versions, git commit, command line, host, BLAS, times, peak memory); columns
name any of them. The default view is the run, its status, the config keys that differ between the
listed runs, the headline validation and test metric and the epochs. Filters are `KEY OP VALUE`;
sorting puts runs without the key last. `--group-by` turns the runs into one row per value of
the group keys, with the mean and standard deviation of every metric column over the group's
runs (typically its seeds). A run's labels (`nnrun tag`, `nnrun note`) are columns too: `tag.KEY`, `tags` and
`note`, shown by default when some run has them; `--columns` takes patterns (`tag.*`). Archived runs are
listed only with `archived`.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text

from nnrun.config import parse_value
from nnrun.errors import UserInputError, did_you_mean
from nnrun.labels import one_line, tags_text
from nnrun.runstore import (
    BUILTIN_COLUMNS,
    TAG_PREFIX,
    RunRecord,
    best_first,
    collect_runs,
    distinct_values,
    headline_metric,
    higher_is_better,
    known_columns,
    varying_keys,
)
from nnrun.tables import METRIC_COLUMNS, DataTable, column_format, csv_cell, csv_field, is_number, plural

STATUS_STYLES = {"completed": "green", "failed": "bold red", "interrupted": "yellow", "running": "cyan",
                 "pruned": "magenta"}
"""How each run status is coloured in tables."""
FILTER_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|<=|>=|=|<|>)\s*(.*?)\s*$", re.DOTALL)


MAX_KEY_COLUMNS = 8
"""Config keys the default table shows at most; the others that differ are named below it (`--columns`)."""


def shown_keys(records: list[RunRecord]) -> tuple[list[str], list[str]]:
    """The config keys that differ between `records`, split into those the default table shows (at most
    `MAX_KEY_COLUMNS`: the most distinct values first, shown in config order) and the rest."""
    keys = varying_keys(records)
    ranked = sorted(keys, key=lambda k: -distinct_values(records, k))[:MAX_KEY_COLUMNS]
    return [k for k in keys if k in ranked], [k for k in keys if k not in ranked]


def default_columns(records: list[RunRecord]) -> list[str]:
    """The table's columns: run, status, the headline val and test metric, epochs, the tags when some run has
    any, the config keys that differ between runs (`shown_keys`), the failure reasons when some run has one and
    the notes when some run has one. The metrics come before the keys, so that a table split into blocks of
    columns shows them in its first."""
    metric = headline_metric(records)
    metrics = [m for m in (f"val_{metric}", f"test_{metric}") if any(r.has(m) for r in records)]
    reason = ["reason"] if any(r.get("reason") for r in records) else []
    tags = ["tags"] if any(r.tags for r in records) else []
    note = ["note"] if any(r.note for r in records) else []
    return ["run", "status", *metrics, "epochs", *tags, *shown_keys(records)[0], *reason, *note]


def label_columns(records: list[RunRecord]) -> list[str]:
    """`tags` and `note`, each when some run has it (`["tags", "note"]`, `["note"]`, ... in that order)."""
    return [c for c in ("tags", "note") if any(r.get(c) for r in records)]


def export_columns(records: list[RunRecord]) -> list[str]:
    """The columns of CSV and JSON (unchanged for scripts): run, status, the config keys that differ, the
    usual metrics (`METRIC_COLUMNS`) the runs have, start time and failure reasons, and the tags and notes when
    some run has them."""
    metrics = [m for m in METRIC_COLUMNS if any(r.has(m) for r in records)]
    reason = ["reason"] if any(r.get("reason") for r in records) else []
    return ["run", "status", *varying_keys(records), *metrics, "started", *reason, *label_columns(records)]


def check_columns(records: list[RunRecord], columns: list[str], option: str) -> None:
    """An error naming `columns` that no run has (typos), with what was most likely meant and the columns
    that exist."""
    if not records:
        return
    unknown = [c for c in columns if not any(r.has(c) for r in records)]
    if unknown:
        known = known_columns(records)
        what = "; ".join(f"no run has a column {c!r}{did_you_mean(c, known)}" for c in unknown)
        raise UserInputError(f"{option}: {what}. Columns: {available_columns(records)}")


def available_columns(records: list[RunRecord]) -> str:
    """The columns `records` have, in a few words (not the hundred-odd config keys one by one)."""
    summary = list(dict.fromkeys(k for r in records for k in (r.summary or {})))
    tags = list(dict.fromkeys(TAG_PREFIX + k for r in records for k in r.tags))
    varying = varying_keys(records)
    config = (f"any config key as `nnrun validate` prints it (those that differ here: {', '.join(varying)})"
              if varying else "any config key as `nnrun validate` prints it (optim.lr, model.hidden)")
    return "; ".join(part for part in (
        ", ".join(dict.fromkeys([*BUILTIN_COLUMNS, "epochs"])),
        f"the summary's {', '.join(summary)}" if summary else "",
        config,
        "provenance.KEY (provenance.git_commit, provenance.hostname)" if any(r.provenance for r in records) else "",
        f"tag.KEY ({', '.join(tags)})" if tags else "",
    ) if part)


def expand_columns(records: list[RunRecord], names: list[str], option: str) -> list[str]:
    """`names` with each pattern (`tag.*`, `optim.*`: shell-style, `*` and `?`) replaced by the columns it
    matches, in `known_columns` order; a pattern that matches nothing is a `UserInputError`."""
    if not any(c in name for name in names for c in "*?["):
        return names
    known = known_columns(records)
    expanded: list[str] = []
    for name in names:
        if not any(c in name for c in "*?["):
            expanded.append(name)
            continue
        matches = [k for k in known if fnmatch.fnmatchcase(k, name) and any(r.has(k) for r in records)]
        if not matches and records:
            raise UserInputError(f"{option}: no column matches {name!r}. Columns: {available_columns(records)}")
        expanded.extend(matches)
    return list(dict.fromkeys(expanded))


@dataclass(frozen=True)
class RunFilter:
    """`key OP value`, OP one of = == != < <= > >=; `<`-style operators compare numbers. A text value also
    equals the `text` as written (`tag.keep=yes` matches the tag `yes`, which YAML would read as true)."""

    key: str
    op: str
    value: Any
    text: str | None = None

    def matches(self, record: RunRecord) -> bool:
        actual = record.get(self.key)
        if self.op in ("=", "==", "!="):
            equal = actual is not None and (_equal(actual, self.value) or (isinstance(actual, str)
                                                                           and actual == self.text))
            return equal if self.op != "!=" else not equal
        if not is_number(actual):
            return False
        return {"<": actual < self.value, "<=": actual <= self.value,
                ">": actual > self.value, ">=": actual >= self.value}[self.op]


def _equal(actual: Any, wanted: Any) -> bool:
    if is_number(actual) and is_number(wanted):
        return math.isclose(actual, wanted, rel_tol=1e-9, abs_tol=0.0) or actual == wanted
    if isinstance(actual, str) and not isinstance(wanted, str):
        return actual == json.dumps(wanted) or actual == str(wanted)
    return json.dumps(actual, sort_keys=True) == json.dumps(wanted, sort_keys=True)


def parse_filter(text: str) -> RunFilter:
    """`'optim.lr=1e-3'` -> `RunFilter('optim.lr', '=', 0.001)`; bad syntax is a `UserInputError`."""
    match = FILTER_RE.match(text)
    if not match or not match.group(3):
        raise UserInputError(f"--filter expects KEY=VALUE (or !=, <, <=, >, >=), e.g. status=completed; got {text!r}")
    key, op, raw = match.groups()
    value = parse_value(raw)
    if op in ("<", "<=", ">", ">=") and not is_number(value):
        raise UserInputError(f"--filter {text!r}: {op} compares numbers, got {raw!r}")
    return RunFilter(key, op, value, raw)


def sort_runs(records: list[RunRecord], key: str | None) -> list[RunRecord]:
    """Sort by `key` ascending (`-key` descending), runs without it last.

    Without a key: the one order of runs `nnrun sweep` shows too (`runstore.best_first`): completed runs first,
    the best headline validation metric first (highest accuracy, lowest rmse), ties by the lowest val_loss, then
    by name.
    """
    if key is None:
        metric = headline_metric(records)
        higher = higher_is_better(metric)
        return sorted(records, key=lambda r: best_first(r.status, r.summary, r.name, metric=metric,
                                                        higher_is_better=higher))
    descending = key.startswith("-")
    name = key.lstrip("-")
    numbers = [r for r in records if is_number(r.get(name))]
    texts = [r for r in records if r.get(name) is not None and not is_number(r.get(name))]
    missing = [r for r in records if r.get(name) is None]
    numbers.sort(key=lambda r: r.name)
    numbers.sort(key=lambda r: r.get(name), reverse=descending)
    texts.sort(key=lambda r: r.name)
    texts.sort(key=lambda r: csv_cell(r.get(name)), reverse=descending)
    return numbers + texts + sorted(missing, key=lambda r: r.name)


def split_names(items: Sequence[str] | None) -> list[str]:
    """`["a,b", "c"]` -> `["a", "b", "c"]` (options that take comma-separated names, repeatable)."""
    return [c.strip() for item in (items or ()) for c in item.split(",") if c.strip()]


def select_runs(root: str | Path, *, filters: Sequence[str] = (), sort: str | None = None,
                columns: Sequence[str] | None = None, group_by: Sequence[str] | None = None,
                recursive: bool = False, export: bool = False, archived: bool = False,
                every: list[RunRecord] | None = None) -> tuple[list[RunRecord], list[str]]:
    """The runs under `root` (in every sub-folder too with `recursive`; the archived ones instead with
    `archived`) that pass every filter, sorted, and the columns to show. `every`: those runs, read already
    (`collect_runs`), so that they are not read again.

    `columns` None (or empty) means `default_columns` (`export_columns` for CSV and JSON, `export`) of
    all the runs under `root`, so that filters do not change the columns; items may hold several
    names separated by commas, and patterns (`tag.*`). `group_by` keys are checked like columns.
    """
    records = every if every is not None else collect_runs([root], recursive=recursive, archived=archived)
    parsed = [parse_filter(f) for f in filters]
    check_columns(records, [f.key for f in parsed], "--filter")
    if sort:
        check_columns(records, [sort.lstrip("-")], "--sort")
    chosen = expand_columns(records, split_names(columns), "--columns")
    check_columns(records, chosen, "--columns")
    check_columns(records, split_names(group_by), "--group-by")
    kept = [r for r in records if all(f.matches(r) for f in parsed)]
    return sort_runs(kept, sort), chosen or (export_columns(records) if export else default_columns(records))


def runs_csv(records: list[RunRecord], columns: list[str]) -> str:
    """A CSV document: a header of `columns`, then one row per run."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        writer.writerow([csv_field(one_line(r.note) if c == "note" else r.get(c)) for c in columns])
    return out.getvalue()


def runs_json(root: str | Path, records: list[RunRecord], columns: list[str]) -> dict[str, Any]:
    """One JSON-ready object: the runs as `{column: value}` rows (plus `path`)."""
    return {"runs_dir": str(root), "count": len(records), "columns": columns,
            "runs": [{**{c: r.get(c) for c in columns}, "path": str(r.path)} for r in records]}


def column_kind(records: list[RunRecord], column: str) -> str:
    """How the table shows `column` (`nnrun.tables` kinds): config keys as given, summary numbers measured,
    names as labels, paths and reasons as text that may fold or move below the table."""
    if column in ("run", "path", "reason", "started", "tags", "note"):
        return "text"
    if column == "status":
        return "label"
    values = [r.get(column) for r in records]
    if any(column in r.config for r in records):
        return "value"
    if all(v is None or is_number(v) for v in values):
        return "number"
    return "text"


def runs_table(title: str, records: list[RunRecord], columns: list[str]) -> DataTable:
    """The runs as a table, one column per name in `columns` (the run names them when it is cut)."""
    table = DataTable(title)
    for c in columns:
        kind = column_kind(records, c)
        table.add_column(c, kind, key=c == "run", movable=c not in ("run", "path"))
    for r in records:
        table.add_row(*(cell(r, c) for c in columns))
    return table


def cell(record: RunRecord, column: str) -> Any:
    """What the table shows of `record` in `column`: the status in its colour, tags as `key=value, ...`, the note
    on one line, any other value as it is."""
    if column == "status":
        return Text(record.status, style=STATUS_STYLES.get(record.status, ""))
    if column == "tags":
        return tags_text(record.tags)
    if column == "note":
        return one_line(record.note)
    return record.get(column)


# ---- groups --------------------------------------------------------------------------------------

@dataclass
class RunGroup:
    """The runs that share the values of the group keys."""

    values: dict[str, Any]
    records: list[RunRecord]

    def stats(self, column: str) -> tuple[float | None, float | None, int]:
        """(mean, sample standard deviation, count) of the numbers the group's runs have in `column`;
        the deviation is None below two numbers."""
        numbers = [float(v) for v in (r.get(column) for r in self.records) if is_number(v)]
        if not numbers:
            return None, None, 0
        std = statistics.stdev(numbers) if len(numbers) > 1 else None
        return statistics.fmean(numbers), std, len(numbers)


def _order(value: Any) -> tuple:
    return (0, value, "") if is_number(value) else (1, 0, csv_cell(value))


def group_runs(records: list[RunRecord], keys: list[str]) -> list[RunGroup]:
    """The runs grouped by the values of `keys`, groups in ascending order of those values."""
    groups: dict[str, RunGroup] = {}
    for r in records:
        values = {k: r.get(k) for k in keys}
        groups.setdefault(json.dumps(values, sort_keys=True, default=str), RunGroup(values, [])).records.append(r)
    return sorted(groups.values(), key=lambda g: [_order(g.values[k]) for k in keys])


def group_metrics(records: list[RunRecord], columns: list[str], keys: list[str]) -> list[str]:
    """The columns a grouped view averages: the numeric summary columns among `columns` (not the group keys,
    not config keys, which differ inside a group)."""
    return [c for c in columns if c not in keys and not any(c in r.config for r in records)
            and c not in ("run", "path", "status", "started", "reason")
            and any(is_number(r.get(c)) for r in records)]


def sort_groups(groups: list[RunGroup], key: str | None) -> list[RunGroup]:
    """Groups sorted by a group key's value or a metric's mean (`-key` descending), those without it last."""
    if key is None:
        return groups
    name = key.lstrip("-")

    def value(g: RunGroup) -> Any:
        return g.values[name] if name in g.values else g.stats(name)[0]

    present = [g for g in groups if value(g) is not None]
    present.sort(key=lambda g: _order(value(g)), reverse=key.startswith("-"))
    return present + [g for g in groups if value(g) is None]


def pooled_keys(records: list[RunRecord], keys: list[str]) -> list[str]:
    """The keys that vary inside the groups (what each group's mean is taken over)."""
    return [k for k in varying_keys(records) if k not in keys]


def groups_table(title: str, groups: list[RunGroup], keys: list[str], metrics: list[str]) -> DataTable:
    """One row per group: its key values, the number of runs, `mean ± std` of each metric."""
    table = DataTable(title, caption="mean ± sample standard deviation over each group's runs")
    for k in keys:
        table.add_column(k, "value", key=True)
    table.add_column("runs")
    for m in metrics:
        table.add_column(m)
    cells = {m: mean_std_cells([g.stats(m) for g in groups], digits=2 if _integral(groups, m) else 4)
             for m in metrics}
    for i, g in enumerate(groups):
        table.add_row(*(g.values[k] for k in keys), len(g.records), *(cells[m][i] for m in metrics))
    return table


def _integral(groups: list[RunGroup], column: str) -> bool:
    """Whether every run of `groups` has an integer (or nothing) in `column` (epochs: a mean of 5.0, not 5.000)."""
    return all(isinstance(r.get(column), int) or r.get(column) is None for g in groups for r in g.records)


def mean_std_cells(stats: list[tuple[float | None, float | None, int]], digits: int = 4) -> list[str]:
    """`0.9611 ± 0.0042` cells of one column: means and deviations with the same decimals (`column_format`)."""
    numbers = [v for mean, std, _ in stats for v in (mean, std) if v is not None]
    shown = iter(column_format(numbers, digits))
    cells = []
    for mean, std, _ in stats:
        if mean is None:
            cells.append("-")
            continue
        text = next(shown)
        cells.append(f"{text} ± {next(shown)}" if std is not None else text)
    return cells


def groups_csv(groups: list[RunGroup], keys: list[str], metrics: list[str]) -> str:
    """A CSV document: the group keys, `runs`, then `METRIC` (mean) and `METRIC_std` per metric."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*keys, "runs", *(name for m in metrics for name in (m, f"{m}_std"))])
    for g in groups:
        stats = [g.stats(m)[:2] for m in metrics]
        writer.writerow([*(csv_field(g.values[k]) for k in keys), len(g.records),
                         *(csv_field(v) for pair in stats for v in pair)])
    return out.getvalue()


def groups_json(root: str | Path, groups: list[RunGroup], keys: list[str], metrics: list[str],
                pooled: list[str]) -> dict[str, Any]:
    """One JSON-ready object: `group_by`, `pooled` (keys that vary inside groups), and per group its key
    values, `runs`, `METRIC` (mean), `METRIC_std` and the run folders (`paths`)."""
    rows = []
    for g in groups:
        row: dict[str, Any] = {**g.values, "runs": len(g.records)}
        for m in metrics:
            row[m], row[f"{m}_std"], _ = g.stats(m)
        row["paths"] = [str(r.path) for r in g.records]
        rows.append(row)
    return {"runs_dir": str(root), "group_by": keys, "pooled": pooled, "metrics": metrics, "count": len(groups),
            "groups": rows}


def runs_report(root: str | Path, *, filters: Sequence[str] = (), sort: str | None = None,
                columns: Sequence[str] | None = None, group_by: Sequence[str] | None = None,
                recursive: bool = False, output: str = "table", archived: bool = False
                ) -> DataTable | str | dict[str, Any] | None:
    """`nnrun runs`: the listing of the runs under `root` (its archived runs with `archived`) as a `DataTable`
    (None when there are no runs), CSV text or a JSON-ready object (`output` table, csv or json)."""
    keys = split_names(group_by)
    every = collect_runs([root], recursive=recursive, archived=archived)
    records, chosen = select_runs(root, filters=filters, sort=None if keys else sort, columns=columns,
                                  group_by=keys, recursive=recursive, export=output != "table" and not keys,
                                  archived=archived, every=every)
    if keys:
        groups = sort_groups(group_runs(records, keys), sort)
        metrics = group_metrics(records, chosen, keys)
        pooled = pooled_keys(records, keys)
        if output == "csv":
            return groups_csv(groups, keys, metrics)
        if output == "json":
            return groups_json(root, groups, keys, metrics, pooled)
        if not records:
            return None
        over = f"; pooled over {', '.join(pooled)}" if pooled else ""
        return groups_table(f"{plural(len(records), 'run')} in {root}, by {', '.join(keys)}{over}", groups, keys,
                            metrics)
    if output == "csv":
        return runs_csv(records, chosen)
    if output == "json":
        return runs_json(root, records, chosen)
    if not records:
        return None
    what = plural(len(records), "archived run" if archived else "run")
    table = runs_table(f"{what} in {root}", records, chosen)
    hidden = [] if columns else shown_keys(every)[1]
    if hidden:
        named = ", ".join(hidden[:6]) + (", ..." if len(hidden) > 6 else "")
        verb = "differs" if len(hidden) == 1 else "differ"
        table.caption = (f"{plural(len(hidden), 'more config key')} {verb}: {named} "
                         f"(--columns run,KEY,... shows any; nnrun diff compares two runs)")
    return table
