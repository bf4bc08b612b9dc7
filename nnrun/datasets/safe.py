"""Reading untrusted data files within bounds: nothing is executed, and nothing allocated before it is checked.

- Pickles (CIFAR-10 batches): `scan_pickle` walks the opcodes with `pickletools.genops` (which
  builds nothing) and refuses more than `MAX_PICKLE_OPS` opcodes, memo indices above `MAX_MEMO`
  (a 288-byte "memo bomb" asks the unpickler for a memo of four billion slots), nesting deeper
  than `MAX_PICKLE_DEPTH` and integers longer than `MAX_INT_BYTES`; `restricted_unpickle` then
  builds only NumPy arrays and plain containers, so a data file cannot run code.
- `.npz` archives: `read_npz_arrays` first reads the archive's directory alone and refuses more
  members than allowed, members that inflate past `data_budget()` together, or members compressed
  more than `MAX_COMPRESSION_RATIO` times that together inflate past `MAX_BOMB_FREE_BYTES` (a zip
  bomb, whether one member or many); then it reads each member's `.npy` header and refuses an
  object dtype or a declared size larger than the member holds, before reading any array.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from nnrun.errors import UserInputError
from nnrun.resources import available_memory, human_bytes

MAX_PICKLE_OPS = 1_000_000
"""Most opcodes in a pickle (a CIFAR-10 batch has about 30,000)."""
MAX_MEMO = 1_000_000
"""Largest memo index a pickle may name."""
MAX_PICKLE_DEPTH = 64
"""Deepest nesting of MARKed containers."""
MAX_INT_BYTES = 16
"""Longest binary integer in a pickle (LONG1/LONG4 payloads)."""
MAX_NPZ_MEMBERS = 64
"""Most arrays in a dataset .npz."""
MAX_COMPRESSION_RATIO = 200
"""Members that inflate more than this many times ..."""
MAX_BOMB_FREE_BYTES = 100 * 2**20
"""... to more than this many bytes together are refused as a zip bomb (store real data uncompressed:
np.savez)."""
FALLBACK_BUDGET = 8 * 2**30
"""Data budget when the system does not say how much memory is available."""

PICKLE_ARRAYS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
"""The only globals a data pickle may name: what NumPy needs to rebuild an array."""


def data_budget() -> int:
    """Bytes one data file may decode to: half the memory available now."""
    available = available_memory()
    return FALLBACK_BUDGET if available is None else available // 2


def scan_pickle(data: bytes, name: str) -> None:
    """Refuse (`UserInputError` starting with `name`) a pickle whose opcodes break the limits of this module."""
    ops = depth = 0
    try:
        for op, arg, _ in pickletools.genops(data):
            ops += 1
            if ops > MAX_PICKLE_OPS:
                raise UserInputError(f"{name}: more than {MAX_PICKLE_OPS} pickle operations; not a data batch")
            if op.name == "MARK":
                depth += 1
                if depth > MAX_PICKLE_DEPTH:
                    raise UserInputError(f"{name}: pickle nested more than {MAX_PICKLE_DEPTH} levels deep")
            elif pickletools.markobject in op.stack_before:
                depth -= 1
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(arg) > MAX_MEMO:
                raise UserInputError(f"{name}: the pickle asks for memo slot {arg} (at most {MAX_MEMO}); "
                                     "not a data batch")
            if op.name in ("LONG1", "LONG4") and abs(int(arg)).bit_length() > 8 * MAX_INT_BYTES:
                raise UserInputError(f"{name}: an integer of more than {MAX_INT_BYTES} bytes in the pickle")
    except UserInputError:
        raise
    except Exception as e:  # pickletools reports any malformed stream with its own exception types
        raise UserInputError(f"{name}: not a readable pickle: {type(e).__name__}: {str(e)[:200]}") from None


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that builds only NumPy arrays and plain containers: a data file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in PICKLE_ARRAYS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def restricted_unpickle(path: Path, what: str = "data file") -> Any:
    """The object pickled in `path`, after `scan_pickle`, built by an unpickler that allows only arrays.

    Messages call the file "corrupt `what` PATH" (a `UserInputError`) when it cannot be used.
    """
    try:
        size = path.stat().st_size
        if size > data_budget():
            raise UserInputError(f"{path}: {human_bytes(size)} is more than the memory available for one file")
        data = path.read_bytes()
    except OSError as e:
        raise UserInputError(f"cannot read {path}: {e.strerror or e}") from None
    scan_pickle(data, f"corrupt {what} {path}")
    try:
        return _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # a corrupt pickle raises many exception types; none may become a traceback
        raise UserInputError(f"corrupt {what} {path}: {type(e).__name__}: {str(e)[:200]}") from None


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a `.npy` member, read from its header alone."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _check_inflated_sizes(path: Path, members: list[zipfile.ZipInfo], budget: int) -> None:
    """Refuse, from the archive's directory alone, members that inflate past `budget` together, or members
    compressed more than `MAX_COMPRESSION_RATIO` times that inflate past `MAX_BOMB_FREE_BYTES` together."""
    inflated = sum(i.file_size for i in members)
    if inflated > budget:
        raise UserInputError(f"{path}: its members inflate to {human_bytes(inflated)}, over the "
                             f"{human_bytes(budget)} of memory available for data")
    bombs = [i for i in members if i.file_size > MAX_COMPRESSION_RATIO * max(i.compress_size, 1)]
    inflated = sum(i.file_size for i in bombs)
    if inflated > MAX_BOMB_FREE_BYTES:
        worst = max(bombs, key=lambda i: i.file_size / max(i.compress_size, 1))
        keys = f"key '{worst.filename.removesuffix('.npy')}'" + (
            f" and {len(bombs) - 1} more" if len(bombs) > 1 else "")
        ratio = inflated / max(sum(i.compress_size for i in bombs), 1)
        raise UserInputError(f"{path}: {keys} {'inflate' if len(bombs) > 1 else 'inflates'} {ratio:.0f} times "
                             f"to {human_bytes(inflated)}, like a zip bomb; save real data uncompressed (np.savez)")


def read_npz_arrays(path: Path, what: str = "data.path", max_members: int = MAX_NPZ_MEMBERS) -> dict[str, np.ndarray]:
    """Every array of the `.npz` at `path`, each checked from its header before it is read (see module docstring).

    Raises `UserInputError` naming the file (and key) for anything unreadable or over a bound; `what` says where
    the path came from in the messages that do not start with it; `max_members`: most arrays the file may hold
    (a run's checkpoint.npz holds a few per layer).
    """
    budget = data_budget()
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise UserInputError(f"{what}: cannot read {path}: {e.strerror or e}") from None
    if head == b"\x93NUMPY":
        raise UserInputError(f"{what}: {path} is a single .npy array, not an .npz archive with an 'X' key")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            if len(members) > max_members:
                raise UserInputError(f"{path}: {len(members)} members; this .npz may hold at most {max_members}")
            _check_inflated_sizes(path, members, budget)
            total = 0
            for info in members:
                key = info.filename.removesuffix(".npy")
                try:
                    shape, dtype = _member_header(zf, info)
                except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
                    raise UserInputError(f"{path}: key '{key}' cannot be read: {str(e)[:200]}") from None
                if dtype.hasobject:
                    raise UserInputError(f"{path}: key '{key}' cannot be read: it holds Python objects "
                                         f"(dtype {dtype}); store numbers or strings")
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes > info.file_size:
                    raise UserInputError(f"{path}: key '{key}' declares shape {shape} ({human_bytes(nbytes)}) but "
                                         f"holds {human_bytes(info.file_size)}; the file is corrupt")
                total += nbytes
                if total > budget:
                    raise UserInputError(f"{path}: its arrays need {human_bytes(total)} or more, over the "
                                         f"{human_bytes(budget)} of memory available for data")
                with zf.open(info) as f:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
    except UserInputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        raise UserInputError(f"{what}: cannot read {path} as an .npz file: {str(e)[:200]}") from None
    return arrays
