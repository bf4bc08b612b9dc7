"""Files on disk: atomic writes (a temporary name in the same folder, then rename) and output-folder checks.

A reader never sees a half-written file, and a crash leaves the old file (if any) intact.
"""

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from nnrun.errors import UserInputError


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a temporary file beside `path`, fsync it, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
