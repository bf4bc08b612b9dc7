"""Files on disk: atomic writes (a temporary name in the same folder, then rename) and output-folder checks.

A reader never sees a half-written file, and a crash leaves the old file (if any) intact. Files
get the permissions the user's umask allows (0644 by default), not the 0600 of a temporary file.
A write killed before its rename leaves a hidden `.NAME.*.tmp` beside `NAME`;
`remove_stale_temporaries` clears them when a folder is taken up again. A name too long for that
(the temporary adds 14 characters) gets a shortened temporary name. An `OSError` of an atomic write
names the file asked for, never its temporary; `os_error_exit` turns one into the command line's
message and exit code.
"""

import errno
import functools
import glob
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from nnrun.errors import UserInputError

TEMP_SUFFIX = ".tmp"
"""Suffix of the temporary files of atomic writes (`.NAME.RANDOM.tmp` beside `NAME`)."""
NAME_MAX = 255
"""Longest file name (bytes) the usual file systems allow; a temporary name stays within it."""
INPUT_ERRNOS = frozenset({
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS,
    errno.ENAMETOOLONG, errno.EINVAL, errno.ELOOP, errno.ENXIO, errno.ENODEV, errno.EXDEV})
"""`OSError`s that mean a path the user gave cannot be used (exit 2); any other (a full disk, an I/O error)
is a failure during the work (exit 1)."""


def os_error_exit(e: OSError) -> tuple[str, int]:
    """One message naming the path of `e` (a file that exists where a folder is needed is said so), and
    the exit code: 2 when the path cannot be used (`INPUT_ERRNOS`), 1 for a failure during the work."""
    reason = e.strerror or str(e) or type(e).__name__
    name = e.filename if e.filename is not None else e.filename2
    if name is None:
        return f"{reason}", 2 if e.errno in INPUT_ERRNOS else 1
    path = os.fsdecode(name) if isinstance(name, bytes | os.PathLike) else str(name)
    if e.errno == errno.EEXIST and os.path.lexists(path) and not os.path.isdir(path):
        reason = "it exists and is not a folder"
    elif e.errno == errno.ENOTDIR:
        above = next((p for p in Path(path).parents if os.path.lexists(p)), None)
        if above is not None and not above.is_dir():
            reason = f"{above} is a file, not a folder"
    return f"cannot use {path}: {reason}", 2 if e.errno in INPUT_ERRNOS else 1


def _temp_prefix(name: str) -> str:
    """`.NAME.`, shortened so that `.NAME.RANDOM.tmp` (`mkstemp` adds 8 random characters) fits `NAME_MAX`."""
    room = NAME_MAX - len(".." + TEMP_SUFFIX) - 8
    encoded = name.encode()
    if len(encoded) > room:
        name = encoded[:room].decode(errors="ignore")
    return f".{name}."


@functools.cache
def file_mode() -> int:
    """The mode a new file gets under this process's umask (0o644 for the usual umask 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a temporary file beside `path`, fsync it, then rename it to `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _naming(e, path) from None
        raise
    return path


def _naming(e: OSError, path: Path) -> OSError:
    """`e`, naming `path` where it named the temporary file, or nothing (a full disk during `write`)."""
    name = "" if e.filename is None else os.path.basename(os.fsdecode(e.filename))
    if e.filename is None or (name.startswith(_temp_prefix(path.name)) and name.endswith(TEMP_SUFFIX)):
        e.filename, e.filename2 = str(path), None
    return e


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write `text` (UTF-8) to `path`."""
    return atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write `obj` as indented JSON to `path`."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically write `arrays` as an uncompressed `.npz` archive to `path`."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def check_output_folder(path: str | Path, names: tuple[str, ...] | list[str] | None, overwrite: bool, *,
                        what: str = "--out", hint: str = "choose another --out or pass --overwrite") -> Path:
    """`path` as a Path, checked before anything is written there.

    An error (`UserInputError`) when it exists and is not a folder, or when it already holds files
    and `overwrite` is off: any file when `names` is None, else one of `names`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserInputError(f"{what} {path} exists and is not a folder")
    if overwrite or not path.is_dir():
        return path
    if names is None:
        if any(path.iterdir()):
            raise UserInputError(f"{what} {path} already holds files; {hint}")
        return path
    clash = [name for name in names if (path / name).exists()]
    if clash:
        raise UserInputError(f"{path} already holds {', '.join(clash)}; {hint}")
    return path


def remove_stale_temporaries(folder: str | Path, names: tuple[str, ...] | list[str]) -> list[Path]:
    """Remove what killed atomic writes of the files `names` left in `folder`; returns the paths removed.

    Call it only while no other process writes those files (a run directory's lock is held).
    """
    removed = []
    for name in names:
        for tmp in Path(folder).glob(f"{glob.escape(_temp_prefix(name))}*{TEMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
