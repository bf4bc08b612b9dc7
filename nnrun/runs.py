"""`nnrun runs`: every run directory under a folder as records, filtered, sorted, as a table, CSV or JSON.

A record is a run's flattened config (dotted keys), its summary and its provenance (`provenance.KEY`:
versions, git commit, command line, host, BLAS, times, peak memory); columns name any of them.
Filters are `KEY OP VALUE`; sorting puts runs without the key last.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from nnrun.config import flatten, parse_value
from nnrun.errors import UserInputError
from nnrun.rundir import RunDir
from nnrun.safeyaml import safe_load
from nnrun.tables import METRIC_COLUMNS, csv_cell, fmt

FILTER_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|<=|>=|=|<|>)\s*(.*?)\s*$", re.DOTALL)
BUILTIN_COLUMNS = ("run", "path", "status", "started", "reason")


@dataclass
class RunRecord:
    """A run directory as read from disk: flattened config (dotted keys), summary (None while missing), the
    epochs finished so far, when it started, and its status (`RunDir.status`: the summary's, else `running`
    while a process holds the run's lock, `interrupted` when none does: it was killed and can be resumed),
    and its provenance flattened under `provenance.` (empty for runs written before provenance.json)."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None
    epochs_done: int
    started: float | None
    status: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def get(self, column: str) -> Any:
        """The value of `column`: a built-in (run, path, status, started, reason), a config key, or a summary key."""
        if column == "run":
            return self.path.name
        if column == "path":
            return str(self.path)
        if column == "status":
            return self.status
        if column == "started":
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)) if self.started else None
        if column == "epochs" and self.summary is None:
            return self.epochs_done
        if column in self.config:
            return self.config[column]
        if column in self.provenance:
            return self.provenance[column]
        return (self.summary or {}).get(column)

    def has(self, column: str) -> bool:
        return column in BUILTIN_COLUMNS or column in self.config or column in (self.summary or {}) \
            or column in self.provenance or column == "epochs"


def read_run(path: str | Path) -> RunRecord | None:
    """The run in `path`, or None when the folder holds neither config.yaml nor summary.json."""
    path = Path(path)
    config_file, summary_file = path / "config.yaml", path / "summary.json"
    if not config_file.is_file() and not summary_file.is_file():
        return None
    config: dict[str, Any] = {}
    started = None
    try:
        loaded = safe_load(config_file.read_text())
        config = flatten(loaded) if isinstance(loaded, dict) else {}
        started = config_file.stat().st_mtime
    except (OSError, yaml.YAMLError):
        pass
    run = RunDir(path)
    provenance = flatten(run.read_provenance() or {}, "provenance.")
    return RunRecord(path, config, run.read_summary(), run.epochs_done(), started, run.status(), provenance)


def list_runs(root: str | Path) -> list[RunRecord]:
    """Every run directory directly under `root` (or `root` itself when it is one), by folder name."""
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"runs directory {root} does not exist or is not a folder")
    own = read_run(root)
    if own is not None:
        return [own]
    records = (read_run(child) for child in sorted(root.iterdir()) if child.is_dir())
    return [r for r in records if r is not None]


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def varying_keys(records: list[RunRecord]) -> list[str]:
    """Config keys whose value differs between `records` (or is missing from some), in first-seen order."""
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r.config))
    return [k for k in keys
            if any(k not in r.config for r in records)
            or any(not _same(r.config[k], records[0].config[k]) for r in records[1:])]


def default_columns(records: list[RunRecord]) -> list[str]:
    """run, status, the config keys that differ between runs, the usual metrics, start time and failure reasons."""
    metrics = [m for m in METRIC_COLUMNS if any(r.has(m) for r in records)]
    reason = ["reason"] if any((r.summary or {}).get("reason") for r in records) else []
    return ["run", "status", *varying_keys(records), *metrics, "started", *reason]


def check_columns(records: list[RunRecord], columns: list[str], option: str) -> None:
    """An error naming `columns` that no run has (typos), with the columns that exist."""
    if not records:
        return
    unknown = [c for c in columns if not any(r.has(c) for r in records)]
    if unknown:
        known: dict[str, None] = dict.fromkeys(BUILTIN_COLUMNS)
        for r in records:
            known.update(dict.fromkeys(r.config))
            known.update(dict.fromkeys(r.summary or {}))
            known.update(dict.fromkeys(r.provenance))
        raise UserInputError(f"{option}: no run has {', '.join(unknown)}; available: {', '.join(known)}")


@dataclass(frozen=True)
class RunFilter:
    """`key OP value`, OP one of = == != < <= > >=; `<`-style operators compare numbers."""

    key: str
    op: str
    value: Any

    def matches(self, record: RunRecord) -> bool:
        actual = record.get(self.key)
        if self.op in ("=", "==", "!="):
            equal = actual is not None and _equal(actual, self.value)
            return equal if self.op != "!=" else not equal
        if not _is_number(actual):
            return False
        return {"<": actual < self.value, "<=": actual <= self.value,
                ">": actual > self.value, ">=": actual >= self.value}[self.op]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _equal(actual: Any, wanted: Any) -> bool:
    if _is_number(actual) and _is_number(wanted):
        return math.isclose(actual, wanted, rel_tol=1e-9, abs_tol=0.0) or actual == wanted
    if isinstance(actual, str) and not isinstance(wanted, str):
        return actual == json.dumps(wanted) or actual == str(wanted)
    return _same(actual, wanted)


def parse_filter(text: str) -> RunFilter:
    """`'optim.lr=1e-3'` -> `RunFilter('optim.lr', '=', 0.001)`; bad syntax is a `UserInputError`."""
    match = FILTER_RE.match(text)
    if not match or not match.group(3):
        raise UserInputError(f"--filter expects KEY=VALUE (or !=, <, <=, >, >=), e.g. status=completed; got {text!r}")
    key, op, raw = match.groups()
    value = parse_value(raw)
    if op in ("<", "<=", ">", ">=") and not _is_number(value):
        raise UserInputError(f"--filter {text!r}: {op} compares numbers, got {raw!r}")
    return RunFilter(key, op, value)


def sort_runs(records: list[RunRecord], key: str | None) -> list[RunRecord]:
    """Sort by `key` ascending (`-key` descending), runs without it last.

    Without a key: best validation accuracy first when runs have one, else by folder name.
    """
    if key is None:
        if any(_is_number(r.get("val_accuracy")) for r in records):
            key = "-val_accuracy"
        else:
            return sorted(records, key=lambda r: r.path.name)
    descending = key.startswith("-")
    name = key.lstrip("-")
    numbers = [r for r in records if _is_number(r.get(name))]
    texts = [r for r in records if r.get(name) is not None and not _is_number(r.get(name))]
    missing = [r for r in records if r.get(name) is None]
    numbers.sort(key=lambda r: r.path.name)
    numbers.sort(key=lambda r: r.get(name), reverse=descending)
    texts.sort(key=lambda r: r.path.name)
    texts.sort(key=lambda r: csv_cell(r.get(name)), reverse=descending)
    return numbers + texts + sorted(missing, key=lambda r: r.path.name)


def select_runs(root: str | Path, *, filters: list[str] | tuple[str, ...] = (), sort: str | None = None,
                columns: list[str] | tuple[str, ...] | None = None) -> tuple[list[RunRecord], list[str]]:
    """The runs under `root` that pass every filter, sorted, and the columns to show.

    `columns` None (or empty) means `default_columns` of all the runs under `root`, so that filters
    do not change the columns; items may hold several names separated by commas.
    """
    records = list_runs(root)
    parsed = [parse_filter(f) for f in filters]
    check_columns(records, [f.key for f in parsed], "--filter")
    if sort:
        check_columns(records, [sort.lstrip("-")], "--sort")
    chosen = [c.strip() for item in (columns or ()) for c in item.split(",") if c.strip()]
    check_columns(records, chosen, "--columns")
    kept = [r for r in records if all(f.matches(r) for f in parsed)]
    return sort_runs(kept, sort), chosen or default_columns(records)


def runs_csv(records: list[RunRecord], columns: list[str]) -> str:
    """A CSV document: a header of `columns`, then one row per run."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        writer.writerow([csv_cell(r.get(c)) for c in columns])
    return out.getvalue()


def runs_json(root: str | Path, records: list[RunRecord], columns: list[str]) -> dict[str, Any]:
    """One JSON-ready object: the runs as `{column: value}` rows (plus `path`)."""
    return {"runs_dir": str(root), "count": len(records), "columns": columns,
            "runs": [{**{c: r.get(c) for c in columns}, "path": str(r.path)} for r in records]}


def runs_table(title: str, records: list[RunRecord], columns: list[str]) -> Table:
    """The runs as a rich table, one column per name in `columns`."""
    table = Table(title=title)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in records:
        table.add_row(*(fmt(r.get(c)) for c in columns))
    return table
