"""`nnrun diff RUN_A RUN_B`: what differs between two runs.

The config keys whose resolved values differ (dotted keys, in the order of A's config, keys only
one run has included unless the other's is null: `runstore.varying_keys`), then the headline
metrics side by side with their difference B - A: status, the headline metric (accuracy, or rmse
for regression) and the loss on each split, epochs, best epoch and time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text

from nnrun.errors import UserInputError
from nnrun.rundir import BROKEN, BROKEN_REASON
from nnrun.runstore import RunRecord, headline_metric, read_run, varying_keys
from nnrun.tables import DataTable, column_format, is_number

SPLITS = ("val", "test", "train")
"""Splits whose metrics the comparison shows, in this order."""
RUN_VALUES = ("epochs", "best_epoch", "seconds", "seconds_per_epoch")
"""Summary values shown after the split metrics."""


def _read(path: str | Path, which: str) -> RunRecord:
    record = read_run(path)
    if record is None:
        raise UserInputError(f"{which} {path}: not a run directory (no config.yaml or summary.json in it)")
    if record.status == BROKEN:
        raise UserInputError(f"{which} {path}: {BROKEN_REASON}")
    return record


def diff_runs(a: str | Path, b: str | Path) -> dict[str, Any]:
    """The differing config keys and the headline metrics of the runs in `a` and `b`.

    Returns `{"a": path, "b": path, "status": [a, b], "config": [{"key", "a", "b"}],
    "metrics": [{"metric", "a", "b", "difference"}]}` (a value a run lacks is None).
    """
    ra, rb = _read(a, "RUN_A"), _read(b, "RUN_B")
    config = [{"key": k, "a": ra.config.get(k), "b": rb.config.get(k)} for k in varying_keys([ra, rb])]
    metric = headline_metric([ra, rb])
    names = [f"{split}_{m}" for m in (metric, "loss") for split in SPLITS] + list(RUN_VALUES)
    metrics = []
    for name in names:
        va, vb = ra.get(name), rb.get(name)
        if va is None and vb is None:
            continue
        difference = vb - va if is_number(va) and is_number(vb) else None
        metrics.append({"metric": name, "a": va, "b": vb, "difference": difference})
    return {"a": str(ra.path), "b": str(rb.path), "status": [ra.status, rb.status], "config": config,
            "metrics": metrics}


def diff_view(result: dict[str, Any]) -> Group:
    """The comparison as the terminal shows it: which run is A and B, the config table, the metrics table."""
    heading = Text.assemble(("A", "bold"), f": {result['a']} ({result['status'][0]})\n",
                            ("B", "bold"), f": {result['b']} ({result['status'][1]})")
    parts: list[Any] = [heading]
    config = result["config"]
    if config:
        table = DataTable(f"config: {len(config)} key{'s' if len(config) != 1 else ''} differ")
        table.add_column("key", "label", key=True)
        table.add_column("A", "value")
        table.add_column("B", "value")
        for row in config:
            table.add_row(row["key"], row["a"], row["b"])
        parts.append(table)
    else:
        parts.append(Text("config: the same resolved config"))
    if result["metrics"]:
        table = DataTable("metrics", caption="B - A: the difference of the two runs' values")
        table.add_column("metric", "label", key=True)
        for header in ("A", "B", "B - A"):
            table.add_column(header)
        for row in result["metrics"]:
            # Each row is its own quantity (accuracy, loss, seconds): one number format per row.
            a, b, difference = column_format([row["a"], row["b"], row["difference"]])
            if is_number(row["difference"]) and row["difference"] > 0:
                difference = f"+{difference}"
            table.add_row(row["metric"], a, b, difference)
        parts.append(table)
    return Group(*parts)
