"""A run's labels: tags (`KEY=VALUE` text) and one note, kept in the run directory's `labels.json`.

`labels.json` is `{"version": 1, "tags": {KEY: VALUE}, "note": TEXT}` (a run without labels has no file). It
is the user's, not the run's: only `nnrun tag` and `nnrun note` write it, training never does, and neither
`--overwrite` nor `--resume` nor a sweep's rerun of a point removes it.

Writers never take the run's `.lock` (held for as long as a run trains): a change takes the labels' own lock,
`.labels.lock` (an OS file lock through filelock, released when the process dies), reads the file, changes it
and writes it atomically (`nnrun.io`: a temporary file, then rename). So labelling a run that trains right now
is safe, two processes labelling one run at once lose nothing (each change is made to what the other wrote),
and a reader, which takes no lock, sees the old file or the new one, never half of one.

Limits: a tag key is a name (`[A-Za-z_][A-Za-z0-9_.]*`, as `--filter tag.KEY=...` and `--columns tag.KEY`
take it) of at most `MAX_KEY` characters, a value at most `MAX_VALUE` characters of one line, at most
`MAX_TAGS` tags, a note at most `MAX_NOTE` characters; control characters are refused (a note may hold line
breaks). A run directory may come from anywhere: a `labels.json` is read only up to `MAX_FILE_BYTES`, and what
does not fit the layout is skipped when runs are listed, and refused (naming the file) when it is to be changed.
"""

from __future__ import annotations

import contextlib
import json
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from nnrun.errors import UserInputError, did_you_mean
from nnrun.io import remove_stale_temporaries, write_json
from nnrun.tables import CONTROL_CHARACTERS

LABELS_FILE = "labels.json"
"""The file of a run directory that holds its tags and note."""
LABELS_LOCK = ".labels.lock"
"""The lock a process holds while it changes `labels.json` (never the run's own `.lock`)."""
LABELS_VERSION = 1
"""Layout version of `labels.json`."""
LOCK_TIMEOUT = 10.0
"""Seconds a change waits for another process's change of the same run's labels."""
TAG_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
"""A tag key: a name `--filter tag.KEY=VALUE` and `--columns tag.KEY` can hold."""
MAX_KEY, MAX_VALUE, MAX_TAGS, MAX_NOTE = 64, 500, 100, 10_000
"""Longest tag key, longest tag value, most tags per run, longest note (characters)."""
MAX_FILE_BYTES = 1 << 20
"""Largest `labels.json` read (a bigger one is not a labels file nnrun wrote)."""
NOTE_CONTROLS = re.compile(r"(?!\n)" + CONTROL_CHARACTERS.pattern)
"""Control characters a note may not hold (all but the line break)."""


@dataclass
class Labels:
    """A run's tags (key -> value, in the order they were first set) and its note (None: no note)."""

    tags: dict[str, str] = field(default_factory=dict)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": LABELS_VERSION, "tags": dict(self.tags), "note": self.note}

    def __bool__(self) -> bool:
        return bool(self.tags) or self.note is not None


def parse_tag(text: str) -> tuple[str, str]:
    """`'group=baseline'` -> `('group', 'baseline')`; anything else is a `UserInputError` naming `text`."""
    key, sep, value = text.partition("=")
    if not sep:
        raise UserInputError(f"tag {text!r}: expected KEY=VALUE, e.g. group=baseline (--rm KEY removes a tag)")
    check_key(key, f"tag {text!r}")
    check_value(value, f"tag {text!r}")
    return key, value


def check_key(key: str, what: str) -> str:
    """`key` if it is a valid tag key, else a `UserInputError` starting with `what`."""
    if not TAG_KEY_RE.fullmatch(key):
        raise UserInputError(f"{what}: a tag key is a name of letters, digits, '_' and '.', starting with a letter "
                             f"or '_' (got {key!r})")
    if len(key) > MAX_KEY:
        raise UserInputError(f"{what}: a tag key has at most {MAX_KEY} characters (got {len(key)})")
    return key


def check_value(value: str, what: str) -> str:
    """`value` if it is a valid tag value, else a `UserInputError` starting with `what`."""
    if not value:
        raise UserInputError(f"{what}: the value is empty; --rm KEY removes a tag")
    if CONTROL_CHARACTERS.search(value):
        raise UserInputError(f"{what}: a tag value is one line of text without control characters")
    if len(value) > MAX_VALUE:
        raise UserInputError(f"{what}: a tag value has at most {MAX_VALUE} characters (got {len(value)})")
    return value


def check_note(text: str) -> str:
    """`text` if it is a valid note, else a `UserInputError`."""
    if not text.strip():
        raise UserInputError("the note is empty; --clear removes a run's note")
    if NOTE_CONTROLS.search(text):
        raise UserInputError("a note is text without control characters (line breaks are fine)")
    if len(text) > MAX_NOTE:
        raise UserInputError(f"a note has at most {MAX_NOTE} characters (got {len(text)})")
    return text


def read_labels(run: str | Path, *, strict: bool = False) -> Labels:
    """The labels of the run directory `run` (empty without `labels.json`).

    A file that cannot be read or does not fit the layout gives the labels that do fit (none when it is not a
    JSON object), or with `strict` a `UserInputError` naming the file, so that a change never replaces what
    it could not read.
    """
    path = Path(run) / LABELS_FILE
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the read, a folder cannot be read
            return _unreadable(path, "not a file", strict)
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return Labels()
    except OSError as e:
        return _unreadable(path, e.strerror or str(e), strict)
    if len(raw) > MAX_FILE_BYTES:
        return _unreadable(path, f"larger than {MAX_FILE_BYTES} bytes", strict)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return _unreadable(path, "not JSON", strict)
    if not isinstance(data, dict):
        return _unreadable(path, "not a JSON object", strict)
    return _labels_of(path, data, strict)


def _unreadable(path: Path, why: str, strict: bool) -> Labels:
    if strict:
        raise UserInputError(f"{path} cannot be read as a run's labels ({why}); fix or remove it")
    return Labels()


def _labels_of(path: Path, data: dict[str, Any], strict: bool) -> Labels:
    """The tags and note of a parsed `labels.json`; entries that do not fit are skipped (refused with `strict`)."""
    version, tags, note = data.get("version", LABELS_VERSION), data.get("tags") or {}, data.get("note")
    problems = []
    if not isinstance(version, int) or isinstance(version, bool) or version > LABELS_VERSION:
        problems.append(f"version {version!r} (this nnrun writes {LABELS_VERSION})")
    if not isinstance(tags, dict):
        problems.append("tags is not an object")
        tags = {}
    kept: dict[str, str] = {}
    for key, value in tags.items():
        try:
            check_key(key, "tag")
            check_value(value if isinstance(value, str) else "\x00", f"tag {key!r}")
        except UserInputError as e:
            problems.append(str(e))
            continue
        kept[key] = value
    if note is not None and not (isinstance(note, str) and note.strip() and len(note) <= MAX_NOTE
                                 and not NOTE_CONTROLS.search(note)):
        problems.append(f"note is not text of at most {MAX_NOTE} characters")
        note = None
    if problems and strict:
        raise UserInputError(f"{path} cannot be read as a run's labels ({problems[0]}); fix or remove it")
    return Labels(kept, note)


def update_labels(run: str | Path, change: Callable[[Labels], Labels]) -> Labels:
    """Change the labels of the run directory `run` under its labels lock; returns the new labels.

    `change` gets the labels as they are now (read after the lock is taken) and returns the new ones, which are
    written atomically; labels that end up empty remove the file. Refused (`UserInputError`) when the folder
    is gone (removed or archived meanwhile), when its labels file cannot be read, or when another process holds
    the lock for over `LOCK_TIMEOUT` seconds.
    """
    folder = Path(run)
    lock = FileLock(folder / LABELS_LOCK)
    if not folder.is_dir():  # filelock makes a missing folder: never bring a removed run back as a lock file
        raise UserInputError(f"run directory {folder} does not exist (removed or archived?)")
    try:
        lock.acquire(timeout=LOCK_TIMEOUT)
    except Timeout:
        raise UserInputError(f"the labels of {folder} are being changed by another process; try again") from None
    except OSError as e:
        if not folder.is_dir():
            raise UserInputError(f"run directory {folder} was removed or archived meanwhile") from None
        raise UserInputError(f"cannot lock the labels of {folder}: {e.strerror or e}") from None
    try:
        if not any(p.name != LABELS_LOCK for p in folder.iterdir()):
            # Removed while the lock was waited for, and made again for the lock file alone: take it away again.
            (folder / LABELS_LOCK).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()
            raise UserInputError(f"run directory {folder} was removed or archived meanwhile")
        remove_stale_temporaries(folder, [LABELS_FILE])
        labels = change(read_labels(folder, strict=True))
        if len(labels.tags) > MAX_TAGS:
            raise UserInputError(f"{folder}: a run has at most {MAX_TAGS} tags")
        if labels:
            write_json(folder / LABELS_FILE, labels.to_json())
        else:
            (folder / LABELS_FILE).unlink(missing_ok=True)
        return labels
    finally:
        lock.release()


def tag_run(run: str | Path, tags: Mapping[str, str], remove: Sequence[str] = ()) -> Labels:
    """Set `tags` (replacing a key's earlier value) and remove the keys `remove` (missing ones ignored) on `run`."""
    def change(labels: Labels) -> Labels:
        kept = {k: v for k, v in labels.tags.items() if k not in remove}
        return Labels({**kept, **tags}, labels.note)

    return update_labels(run, change)


def note_run(run: str | Path, text: str | None, *, append: bool = False) -> Labels:
    """Set the note of `run` to `text` (None removes it); `append` adds `text` as a new line of the note."""
    def change(labels: Labels) -> Labels:
        if text is None:
            return Labels(labels.tags, None)
        new = f"{labels.note}\n{text}" if append and labels.note else text
        if len(new) > MAX_NOTE:
            raise UserInputError(f"{run}: the note would have {len(new)} characters; a note has at most {MAX_NOTE}")
        return Labels(labels.tags, new)

    return update_labels(run, change)


def parse_tags(items: Sequence[str], remove: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The tags to set (`KEY=VALUE` items) and the keys to remove (`--rm`), checked: a key given twice, or both
    set and removed, is a `UserInputError` naming it."""
    tags: dict[str, str] = {}
    for item in items:
        key, value = parse_tag(item)
        if key in tags:
            raise UserInputError(f"tag {key!r} is given twice ({key}={tags[key]}, {item})")
        tags[key] = value
    removed = []
    for key in remove:
        check_key(key, f"--rm {key!r}")
        if key in tags:
            raise UserInputError(f"tag {key!r} is both set and removed (--rm)")
        removed.append(key)
    return tags, list(dict.fromkeys(removed))


def missing_removals(remove: Sequence[str], labels: Sequence[Labels]) -> str:
    """An error message for the `--rm` keys none of `labels` has ("" when each is somewhere), with a suggestion."""
    present = list(dict.fromkeys(k for lab in labels for k in lab.tags))
    missing = [k for k in remove if k not in present]
    if not missing:
        return ""
    have = f" (tags: {', '.join(present)})" if present else " (they have no tags)"
    return "; ".join(f"--rm {k}: no selected run has a tag {k!r}{did_you_mean(k, present)}" for k in missing) + have


def one_line(note: str | None) -> str | None:
    """A note on one line, as table cells and CSV show it: its lines joined by ` | `."""
    if note is None:
        return None
    return " | ".join(line.strip() for line in note.splitlines() if line.strip())


def tags_text(tags: Mapping[str, str]) -> str | None:
    """`group=baseline, stage=2`: tags as a table cell shows them (None without tags)."""
    return ", ".join(f"{k}={v}" for k, v in tags.items()) or None
