"""Run directories read back as records: what `nnrun runs`, `nnrun plot` and `nnrun diff` look at.

A record is a run's flattened config (dotted keys such as `optim.lr`), its summary (None while
it has none), its status (`RunDir.status`), the epochs it finished, its provenance flattened
under `provenance.` (versions, git commit, command line, host, BLAS, times, peak memory; empty
for runs written before provenance.json) and, on demand, its per-epoch metrics. `list_runs`
finds the runs under a folder (optionally in every sub-folder), `varying_keys` the config keys
that tell them apart, `headline_metric` the metric their losses select on (accuracy for class
and attribute losses, rmse for regression). A record also holds the run's labels (`nnrun.labels`: each tag
as a `tag.KEY` column, all of them as `tags`, and the `note`). Archived runs (moved into an `ARCHIVE_DIR`
folder by `nnrun runs archive`) are listed only when asked for (`archived`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml import YAMLError

from nnrun.config import flatten
from nnrun.errors import UserInputError
from nnrun.labels import read_labels
from nnrun.nn.losses import LOSSES
from nnrun.rundir import BROKEN, BROKEN_REASON, LOCK_FILE, RunDir
from nnrun.safeyaml import safe_load

BUILTIN_COLUMNS = ("run", "path", "status", "started", "reason", "tags", "note")
"""Columns every run has besides its config keys and summary keys."""
TAG_PREFIX = "tag."
"""The prefix of a tag's column (`tag.group`)."""
ARCHIVE_DIR = ".archive"
"""The folder (in a folder of runs) that `nnrun runs archive` moves runs into; listings skip it."""


@dataclass
class RunRecord:
    """A run directory as read from disk: its `name` (the folder, relative to the listed root), flattened
    config (dotted keys), summary (None while missing), the epochs finished so far, when it started, and
    its status (`RunDir.status`: the summary's, else `running` while a process holds the run's lock,
    `interrupted` when none does: it was killed and can be resumed; `broken` when it was killed before it
    wrote config.yaml, with `reason` saying so)."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None
    epochs_done: int
    started: float | None
    status: str
    name: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    note: str | None = None
    _metrics: list[dict[str, Any]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = self.name or self.path.name

    def get(self, column: str) -> Any:
        """The value of `column`: a built-in (run, path, status, started, reason, tags, note), a tag (`tag.KEY`), a
        config key, or a summary key."""
        if column == "run":
            return self.name
        if column == "path":
            return str(self.path)
        if column == "status":
            return self.status
        if column == "started":
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)) if self.started else None
        if column == "reason" and self.status == BROKEN:
            return BROKEN_REASON
        if column == "epochs" and self.summary is None:
            return self.epochs_done
        if column == "tags":
            return dict(self.tags) or None
        if column == "note":
            return self.note
        if column.startswith(TAG_PREFIX) and column[len(TAG_PREFIX):] in self.tags:
            return self.tags[column[len(TAG_PREFIX):]]
        if column in self.config:
            return self.config[column]
        if column in self.provenance:
            return self.provenance[column]
        return (self.summary or {}).get(column)

    def has(self, column: str) -> bool:
        return column in BUILTIN_COLUMNS or column in self.config or column in (self.summary or {}) \
            or column in self.provenance or column == "epochs" \
            or (column.startswith(TAG_PREFIX) and column[len(TAG_PREFIX):] in self.tags)

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl (read once)."""
        if self._metrics is None:
            self._metrics = RunDir(self.path).read_metrics()
        return self._metrics

    def headline_metric(self) -> str | None:
        """The metric this run's loss selects on (`primary_metric`; rmse for a class loss with bins)."""
        return config_headline(self.config)


def config_headline(config: dict[str, Any]) -> str | None:
    """The metric a run of the flattened `config` selects on (`primary_metric` of its loss; rmse for a class loss
    with bins), None without a known loss."""
    if config.get("loss.bins") is not None:
        return "rmse"
    loss = LOSSES.get(config.get("loss.name"))
    return loss.primary_metric if loss is not None else None


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` is a run directory: it holds config.yaml, summary.json or a run's lock file (a run killed
    before it wrote config.yaml leaves the lock alone: it is listed as `broken`); no file is read."""
    return any((Path(path) / name).is_file() for name in ("config.yaml", "summary.json", LOCK_FILE))


def read_run(path: str | Path, name: str | None = None) -> RunRecord | None:
    """The run in `path`, or None when it is not a run directory (`is_run_dir`)."""
    path = Path(path)
    config_file = path / "config.yaml"
    if not is_run_dir(path):
        return None
    config: dict[str, Any] = {}
    started = None
    try:
        loaded = safe_load(config_file.read_text())
        config = flatten(loaded) if isinstance(loaded, dict) else {}
        started = config_file.stat().st_mtime
    except (OSError, UnicodeDecodeError, YAMLError):
        pass
    run = RunDir(path)
    provenance = flatten(run.read_provenance() or {}, "provenance.")
    labels = read_labels(path)
    return RunRecord(path, config, run.read_summary(), run.epochs_done(), started, run.status(), name or path.name,
                     provenance, labels.tags, labels.note)


def list_runs(root: str | Path, *, recursive: bool = False, archived: bool = False) -> list[RunRecord]:
    """Every run directory directly under `root` (or `root` itself when it is one), by folder name.

    `recursive` also looks into the sub-folders that are not runs themselves, at any depth; a run's
    name is then its path relative to `root` (`grid/digits-sweep-3da65cfa603c`). The `ARCHIVE_DIR` folders
    are skipped; with `archived`, only the runs in them are listed, each named as where it was archived from
    (`grid/digits-sweep-3da65cfa603c` for `grid/.archive/digits-sweep-3da65cfa603c`).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"runs directory {root} does not exist or is not a folder")
    own = read_run(root)
    if own is not None:
        return [own]
    records: list[RunRecord] = []
    if archived and (root / ARCHIVE_DIR).is_dir():
        records.extend(list_runs(root / ARCHIVE_DIR))
    for child in sorted(p for p in root.iterdir() if p.is_dir() and p.name != ARCHIVE_DIR):
        if is_run_dir(child):
            if not archived:  # a live run: read only when listed
                records.append(read_run(child))
        elif recursive:
            for inner in list_runs(child, recursive=True, archived=archived):
                inner.name = f"{child.name}/{inner.name}"
                records.append(inner)
    return sorted(records, key=lambda r: r.name) if archived else records


def collect_runs(paths: list[str | Path] | tuple[str | Path, ...], *, recursive: bool = False,
                 archived: bool = False) -> list[RunRecord]:
    """The runs of several arguments, each a run directory or a folder of runs (its archived runs with
    `archived`); a run named twice counts once."""
    records: dict[Path, RunRecord] = {}
    for path in paths:
        for record in list_runs(path, recursive=recursive, archived=archived):
            records.setdefault(record.path.resolve(), record)
    return list(records.values())


def _unset(value: Any) -> Any:
    """A config value with "not set" in one form: a missing key, null and an empty mapping (`model.layers: {}`)
    all mean the default, so they do not tell runs apart."""
    return None if value is None or value == {} else value


def _same(a: Any, b: Any) -> bool:
    return json.dumps(_unset(a), sort_keys=True) == json.dumps(_unset(b), sort_keys=True)


def varying_keys(records: list[RunRecord]) -> list[str]:
    """Config keys whose value differs between `records`, in first-seen order. A key one run lacks and another
    holds as null (or `{}`) does not differ (`model.layers.N.*` of runs with other per-layer settings). Runs
    without a config (broken, or an unreadable config.yaml) tell nothing and are left out."""
    records = [r for r in records if r.config]
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r.config))
    return [k for k in keys if any(not _same(r.config.get(k), records[0].config.get(k)) for r in records[1:])]


def distinct_values(records: list[RunRecord], key: str) -> int:
    """How many different values `records` hold for config key `key` (unset counted as one value)."""
    return len({json.dumps(_unset(r.config.get(key)), sort_keys=True, default=str) for r in records})


def headline_metric(records: list[RunRecord]) -> str:
    """The headline metric most of `records` select on (`accuracy` when they name none)."""
    return most_common_metric([r.headline_metric() for r in records])


def most_common_metric(metrics: list[str | None]) -> str:
    """The metric named most often in `metrics` (the first of equal counts; `accuracy` when none is named)."""
    names = [m for m in metrics if m is not None]
    return max(dict.fromkeys(names), key=names.count) if names else "accuracy"


def higher_is_better(metric: str) -> bool:
    """Whether a larger `metric` is better: as the losses whose headline it is say (accuracy: yes; rmse: no);
    losses and errors are lower-is-better, anything else higher."""
    for name in (metric, metric.split("_", 1)[-1]):
        directions = {loss.primary_metric: loss.higher_is_better for loss in LOSSES.values()}
        if name in directions:
            return directions[name]
    return not metric.endswith(("loss", "error", "rmse", "mae"))


def best_first(status: str | None, summary: dict[str, Any] | None, name: str, *, metric: str,
               higher_is_better: bool) -> tuple:
    """The sort key of the one order of runs, best first, that `nnrun runs` (without `--sort`), `nnrun sweep`'s
    table and `--json` share: completed runs first, then the best `val_METRIC` (`metric`: the headline, such as
    accuracy or rmse), then the lowest `val_loss`, then the run folder's name (ties always broken the same way,
    whichever command lists the runs). Missing values sort last."""
    summary = summary or {}

    def number(key: str) -> float:
        value = summary.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
        return float(value) if ok else math.inf

    value = number(f"val_{metric}")
    if higher_is_better and value != math.inf:
        value = -value
    return (status != "completed", value, number("val_loss"), name)


def known_columns(records: list[RunRecord]) -> list[str]:
    """Every column some record has: the built-ins, then config keys, then summary keys."""
    known: dict[str, None] = dict.fromkeys(BUILTIN_COLUMNS)
    for r in records:
        known.update(dict.fromkeys(r.config))
    for r in records:
        known.update(dict.fromkeys(r.summary or {}))
    for r in records:
        known.update(dict.fromkeys(r.provenance))
    for r in records:
        known.update(dict.fromkeys(TAG_PREFIX + k for k in r.tags))
    known["epochs"] = None
    return list(known)
