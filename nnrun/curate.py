"""Curating runs: tags and notes (`nnrun tag`, `nnrun note`), and removing, archiving and restoring run
directories (`nnrun runs rm`, `nnrun runs archive`, `nnrun runs restore`).

Selection, the same for every command here: each argument is a run directory, or a folder of runs (all the
runs in it; in its sub-folders too with `recursive`); `filters` (`KEY=VALUE`, `KEY<VALUE`, ... as
`nnrun runs --filter` takes them) keep the runs that match. A path that is neither is refused, naming it.

Labels (`nnrun.labels`) may be changed while a run trains: they have their own lock and file.

Removing and moving never touch a run in use, one whose lock (`.lock`) another process holds: it trains now,
or a sweep holds it for its point. A selection that holds one is refused before anything changes. Each run is
then claimed (its `.lock`, and its labels' lock) for as long as it is removed or moved, so that a
`nnrun train --resume`, a sweep or a `nnrun tag` cannot start in it meanwhile; one taken up since the check is
left alone and reported.

Archive: `FOLDER/RUN` moves to `FOLDER/.archive/RUN` (`runstore.ARCHIVE_DIR`: a rename within the folder,
nothing is copied), where listings do not see it (`nnrun runs --archived` does); restore moves it back. A
destination that exists is never replaced: such a selection is refused before anything moves, and the rename
itself refuses to replace (`renameat2` with `RENAME_NOREPLACE` where the kernel has it), should another
process make the destination meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from rich.text import Text

from nnrun.errors import UserInputError
from nnrun.labels import (
    LABELS_LOCK,
    LOCK_TIMEOUT,
    Labels,
    check_note,
    missing_removals,
    note_run,
    one_line,
    parse_tags,
    tag_run,
    tags_text,
)
from nnrun.rundir import RUNNING, RunDir
from nnrun.runs import check_columns, parse_filter
from nnrun.runstore import ARCHIVE_DIR, RunRecord, list_runs, read_run
from nnrun.tables import DataTable, plural

ACTIONS = {"rm": ("remove", "removed"), "archive": ("archive", "archived"), "restore": ("restore", "restored")}
"""Each action of `nnrun runs`, as a verb and as what was done."""


def interactive() -> bool:
    """Whether a person can answer a confirmation: stdin is a terminal."""
    return sys.stdin is not None and sys.stdin.isatty()


# ---- selection ----------------------------------------------------------------------------------------------

def select(targets: Sequence[str | Path], *, filters: Sequence[str] = (), recursive: bool = False,
           archived: bool = False) -> list[RunRecord]:
    """The runs `targets` name (run directories, or folders of runs: their archived runs with `archived`) that
    pass every filter, each once, by path. A target that is neither, or a folder without such runs, is a
    `UserInputError` naming it; with `archived`, `FOLDER/RUN` also names the archived `FOLDER/.archive/RUN`."""
    if not targets:
        raise UserInputError("give a run directory or a folder of runs")
    records: dict[Path, RunRecord] = {}
    for target in targets:
        for record in _runs_of(Path(target), recursive=recursive, archived=archived):
            records.setdefault(Path(os.path.abspath(record.path)), record)
    found = list(records.values())
    parsed = [parse_filter(f) for f in filters]
    check_columns(found, [f.key for f in parsed], "--filter")
    return sorted((r for r in found if all(f.matches(r) for f in parsed)), key=lambda r: str(r.path))


def _runs_of(path: Path, *, recursive: bool, archived: bool) -> list[RunRecord]:
    """The runs `path` names, each named by its path as given (`runs/grid/run-1`), as these commands show it."""
    if not path.exists():
        moved = read_run(path.parent / ARCHIVE_DIR / path.name) if archived else None
        if moved is not None:
            return [_named(moved)]
        raise UserInputError(f"{path}: no such run directory or folder")
    if not path.is_dir():
        raise UserInputError(f"{path} is not a run directory or a folder of runs")
    records = [_named(r) for r in list_runs(path, recursive=recursive, archived=archived)]
    if not records:
        what = "archived runs" if archived else "runs"
        hint = "" if recursive else " (--recursive looks in sub-folders)"
        raise UserInputError(f"{path} is not a run directory and holds no {what}{hint}")
    return records


def _named(record: RunRecord) -> RunRecord:
    record.name = str(record.path)
    return record


# ---- labels -------------------------------------------------------------------------------------------------

def labels_report(records: list[RunRecord], changed: bool) -> dict[str, Any]:
    """`{"changed", "count", "runs": [{"run", "path", "tags", "note"}]}` for `--json` and `labels_table`."""
    return {"changed": changed, "count": len(records),
            "runs": [{"run": r.name, "path": str(r.path), "tags": dict(r.tags), "note": r.note} for r in records]}


def tag(targets: Sequence[str | Path], items: Sequence[str] = (), remove: Sequence[str] = (), *,
        filters: Sequence[str] = (), recursive: bool = False) -> dict[str, Any]:
    """`nnrun tag`: set the tags `items` (`KEY=VALUE`) and remove the keys `remove` on every selected run; with
    neither, only report the runs' labels (`labels_report`). Everything is checked before any run changes: a bad
    `KEY=VALUE`, an unknown run, an `--rm` key that no selected run has."""
    tags, removals = parse_tags(items, remove)
    records = select(targets, filters=filters, recursive=recursive)
    if removals:
        message = missing_removals(removals, [Labels(r.tags, r.note) for r in records])
        if message:
            raise UserInputError(message)
    if not tags and not removals:
        return labels_report(records, changed=False)
    for r in records:
        labels = tag_run(r.path, tags, removals)
        r.tags, r.note = labels.tags, labels.note
    return labels_report(records, changed=True)


def note(targets: Sequence[str | Path], text: str | None = None, *, append: bool = False, clear: bool = False,
         filters: Sequence[str] = (), recursive: bool = False) -> dict[str, Any]:
    """`nnrun note`: set the note of every selected run to `text` (replacing it; `append` adds `text` as a new
    line), or remove it (`clear`); with neither text nor `clear`, only report the runs' labels."""
    if clear and text is not None:
        raise UserInputError("--clear removes the note: give no TEXT with it")
    if append and text is None:
        raise UserInputError("--append adds TEXT to the note: give the TEXT")
    if text is not None:
        check_note(text)
    records = select(targets, filters=filters, recursive=recursive)
    if text is None and not clear:
        return labels_report(records, changed=False)
    for r in records:
        labels = note_run(r.path, text, append=append)
        r.tags, r.note = labels.tags, labels.note
    return labels_report(records, changed=True)


def labels_table(report: dict[str, Any]) -> DataTable:
    """The runs' tags and notes (one line each; the full note is in `--json`)."""
    table = DataTable(f"labels of {plural(report['count'], 'run')}")
    table.add_column("run", "text", key=True, movable=False)
    table.add_column("tags", "text")
    table.add_column("note", "text")
    for row in report["runs"]:
        table.add_row(row["run"], tags_text(row["tags"]), one_line(row["note"]))
    return table


# ---- remove, archive, restore -------------------------------------------------------------------------------

@dataclass
class Step:
    """One run of a plan: where it is, where it goes (None: removed), and what happened."""

    record: RunRecord
    source: Path
    destination: Path | None
    done: bool = False
    error: str | None = None


@dataclass
class Plan:
    """What `nnrun runs rm|archive|restore` does, checked: the action and its steps."""

    action: str
    steps: list[Step] = field(default_factory=list)

    @property
    def verb(self) -> str:
        return ACTIONS[self.action][0]

    @property
    def past(self) -> str:
        return ACTIONS[self.action][1]


def plan(action: str, targets: Sequence[str | Path], *, filters: Sequence[str] = (), recursive: bool = False,
         archived: bool = False) -> Plan:
    """The steps of `action` (`rm`, `archive`, `restore`) for the selected runs (`select`; restore and
    `archived` select archived runs), checked before anything changes: a run in use, a run archived twice or
    restored without being archived, and a destination that exists are each a `UserInputError` naming them."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    records = select(targets, filters=filters, recursive=recursive, archived=archived or action == "restore")
    result = Plan(action)
    problems: list[str] = []
    for record in records:
        source = Path(os.path.abspath(record.path))
        in_archive = source.parent.name == ARCHIVE_DIR
        destination = None
        if action == "archive":
            destination = source.parent / ARCHIVE_DIR / source.name
            if in_archive:
                problems.append(f"{record.name} is archived already")
                destination = None
        elif action == "restore":
            destination = source.parent.parent / source.name
            if not in_archive:
                problems.append(f"{record.name} is not archived (archived runs are in a folder's {ARCHIVE_DIR}/)")
                destination = None
        if destination is not None and os.path.lexists(destination):
            problems.append(f"{record.name} cannot be {result.past}: {destination} exists (never replaced; "
                            "rename or remove one of them first)")
        result.steps.append(Step(record, source, destination))
    busy = [s.record for s in result.steps if s.record.status == RUNNING or RunDir(s.source).is_busy()]
    if busy:
        # A run with a summary keeps its status while a process holds it again (a resume, a sweep's check).
        hint = " (--filter status!=running)" if all(r.status == RUNNING for r in busy) else ""
        problems.insert(0, f"{plural(len(busy), 'run')} in use (another process holds the lock: training now, or "
                           f"a sweep's point): {', '.join(r.name for r in busy)}; never {result.past} while in use: "
                           f"wait for them to finish, or leave them out{hint}")
    if problems:
        raise UserInputError(f"nothing {result.past}: " + "; ".join(problems))
    return result


def carry_out(steps_of: Plan) -> Plan:
    """Remove or move each run of the plan, claiming it first; a run taken up meanwhile, or one whose move
    fails, is left as it is, with the reason in its step's `error`. Returns the plan with each step's outcome."""
    for step in steps_of.steps:
        try:
            _carry_out(steps_of.action, step)
            step.done = True
        except (OSError, UserInputError) as e:
            step.error = _reason(e)
    return steps_of


def _reason(e: Exception) -> str:
    if isinstance(e, OSError):
        name = e.filename2 if e.filename2 is not None else e.filename
        return f"{e.strerror or e}" + (f": {os.fsdecode(name)}" if name is not None else "")
    return str(e)


def _carry_out(action: str, step: Step) -> None:
    run = RunDir(step.source)
    if not run.try_claim(0.0):
        raise UserInputError("in use: another process took it up since the check")
    labels = FileLock(step.source / LABELS_LOCK)
    try:
        try:
            labels.acquire(timeout=LOCK_TIMEOUT)
        except Timeout:
            raise UserInputError("its labels are being changed by another process") from None
        try:
            if step.destination is None and step.source.is_symlink():
                step.source.unlink()  # a link to a run elsewhere: the link goes, never what it points at
            elif step.destination is None:
                shutil.rmtree(step.source)
            else:
                step.destination.parent.mkdir(exist_ok=True)
                rename_noreplace(step.source, step.destination)
                if action == "restore":
                    with contextlib.suppress(OSError):  # the archive folder, once empty
                        step.source.parent.rmdir()
        finally:
            labels.release()
    finally:
        run.release()


AT_FDCWD = -100
RENAME_NOREPLACE = 1


def rename_noreplace(source: Path, destination: Path) -> None:
    """Rename `source` to `destination`, never replacing what is there (`FileExistsError`): `renameat2` with
    `RENAME_NOREPLACE` (Linux), else a check just before `os.rename` (which would replace an empty folder)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        if renameat2(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(destination), RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # file systems without the flag: below
            raise OSError(code, os.strerror(code), str(source), None, str(destination))
    if os.path.lexists(destination):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(source), None, str(destination))
    os.rename(source, destination)


def plan_report(steps_of: Plan, *, dry_run: bool) -> dict[str, Any]:
    """The plan (and after `carry_out`, what happened) for `--json`: `action`, `dry_run`, `count`, `failed` and
    per run `run`, `path`, `status`, `to` (None when removed), `done` and `error`."""
    return {"action": steps_of.action, "dry_run": dry_run, "count": len(steps_of.steps),
            "failed": sum(1 for s in steps_of.steps if s.error),
            "runs": [{"run": s.record.name, "path": str(s.source), "status": s.record.status,
                      "to": None if s.destination is None else str(s.destination), "done": s.done,
                      "error": s.error} for s in steps_of.steps]}


def plan_table(steps_of: Plan, *, title: str) -> DataTable:
    """The runs of a plan, their status, where each goes (archive, restore) and, once carried out, what
    failed."""
    table = DataTable(title)
    table.add_column("run", "text", key=True, movable=False)
    table.add_column("status", "label")
    metric = "val_accuracy" if _has(steps_of, "val_accuracy") else "epochs"
    table.add_column(metric)
    moves = steps_of.action != "rm"
    if moves:
        table.add_column("to", "text")
    errors = any(s.error for s in steps_of.steps)
    if errors:
        table.add_column("not done", "text")
    for s in steps_of.steps:
        cells: list[Any] = [s.record.name, s.record.status, s.record.get(metric)]
        if moves:
            cells.append(str(s.destination))
        if errors:
            cells.append(Text(s.error, style="red") if s.error else None)
        table.add_row(*cells)
    return table


def _has(steps_of: Plan, column: str) -> bool:
    return any(s.record.get(column) is not None for s in steps_of.steps)
