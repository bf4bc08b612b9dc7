"""Hostile and broken inputs, as files: each case builds one in a folder and says what the refusal must say.

Used by tests/test_hostile.py (in-process, exit codes and messages) and, run as a script, as the
acceptance measurement: `python tests/hostile_cases.py` runs every case through the real `nnrun`
command in a subprocess and reports its exit code, wall time, peak RSS, whether a traceback
appeared and what was left behind.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _yaml(text: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / "c.yaml"
        path.write_text(text)
        return path
    return build


BILLION_LAUGHS = "\n".join(
    [
        'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
        *(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
        "model:",
        "  hidden: *i",
    ]) + "\n"
"""About 360 bytes that expand to 9**9 strings under a typed key."""

CONFIG_CASES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "alias_bomb": lambda d: (_yaml(BILLION_LAUGHS)(d), "expands to more than"),
    "nested_1000_deep": lambda d: (_yaml("model:\n  hidden: " + "[" * 1000 + "]" * 1000 + "\n")(d),
                                   "nested more than 64 levels"),
    "duplicate_key": lambda d: (_yaml("optim:\n  lr: 0.1\n  lr: 0.2\n")(d), "appears twice"),
    "5000_digit_int": lambda d: (_yaml("seed: " + "9" * 5000 + "\n")(d), "5000 digits"),
    "5000_hex_digit_int": lambda d: (_yaml("seed: 0x" + "f" * 5000 + "\n")(d), "5000 hex digits"),
    "5000_bit_int": lambda d: (_yaml("seed: 0b" + "1" * 5000 + "\n")(d), "5000 binary digits"),
    "29_hex_digits_in_a_list": lambda d: (_yaml("model:\n  hidden: [0x" + "f" * 29 + "]\n")(d),
                                          "an integer of 35 digits"),
    "sexagesimal_int": lambda d: (_yaml("seed: 1" + ":59" * 40 + "\n")(d), "digits (at most 30"),
    "huge_file": lambda d: (_yaml("# " + "x" * (2 << 20) + "\nseed: 1\n")(d), "bytes; a config is at most"),
    "300_char_name": lambda d: (_yaml("name: " + "n" * 300 + "\n")(d), "at most 100 characters"),
    "tree_300_deep": lambda d: (_yaml("loss:\n  name: hierarchical_softmax\n  tree: " + "[" * 300 + "a, b"
                                      + "]" * 300 + "\n")(d), "nested more than 64 levels"),
    "huge_width_int": lambda d: (_yaml("train:\n  epochs: 1000000000000\n")(d), "less than or equal to"),
}
"""Config files `nnrun validate` must refuse (exit 2)."""

OVERRIDE_CASES: dict[str, tuple[list[str], str]] = {
    "alias_bomb": (["model.hidden=" + BILLION_LAUGHS.replace("\n", " ").split("model:")[0].replace("  ", " ")],
                   "model.hidden"),
    "nested_value": (["loss.tree=" + "[" * 300 + "]" * 300], "nested more than 64 levels"),
    "long_value": (["name=" + "x" * 20_000], "at most 10000"),
    "huge_int": (["seed=" + "1" * 5000], "5000 digits"),
    "huge_hex_int": (["seed=0x" + "f" * 5000], "5000 hex digits"),
    "300_digit_int": (["seed=" + "1" * 300], "300 digits"),
    "bad_name": (["name=" + "a" * 300], "at most 100 characters"),
}
"""`--set` items that must be refused (exit 2)."""


def _npz(folder: Path, **arrays: np.ndarray) -> Path:
    path = folder / "d.npz"
    np.savez(path, **arrays)
    return path


def _npz_with_header(folder: Path, shape: tuple[int, ...]) -> Path:
    """An .npz whose X member's header claims `shape` but holds a few bytes (no allocation may follow it)."""
    buf = io.BytesIO()
    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    buf.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x00" * 64)
    path = folder / "d.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("X.npy", buf.getvalue())
        zf.writestr("y.npy", _npy(np.zeros(10, np.int64)))
    return path


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _zip_bomb(folder: Path) -> Path:
    path = folder / "d.npz"
    np.savez_compressed(path, X=np.zeros((1024, 1024), np.float32), y=np.zeros(1024, np.int64))  # 4 MiB in ~4 kB
    return path


def _big_zip_bomb(folder: Path, gigabytes: float = 6.0) -> Path:
    """An .npz whose X inflates to `gigabytes` GB of zeros from a few MB, written in chunks (never held in memory)."""
    rows = int(gigabytes * 1e9 / (3072 * 4))
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (rows, 3072)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    path = folder / "d.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("X.npy", "w", force_zip64=True) as f:
            f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
            chunk = bytes(3072 * 4 * 4096)
            for start in range(0, rows, 4096):
                f.write(chunk[: 3072 * 4 * min(4096, rows - start)])
        zf.writestr("y.npy", _npy(np.zeros(rows % 1000 + 10, np.int64)))
    return path


def _many_bombs(folder: Path, members: int = 20, member_bytes: int = 2**20 - 4096) -> Path:
    """An .npz of `members` arrays of zeros, each just under `member_bytes` (under the one-member bomb bound), that
    inflate to `members * member_bytes` together from a thousandth of that; written in chunks."""
    rows = member_bytes // (3072 * 4)
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (rows, 3072)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    path = folder / "d.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for m in range(members):
            with zf.open(f"X{m}.npy" if m else "X.npy", "w", force_zip64=True) as f:
                f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header)
                chunk = bytes(3072 * 4 * 256)
                for start in range(0, rows, 256):
                    f.write(chunk[: 3072 * 4 * min(256, rows - start)])
        zf.writestr("y.npy", _npy(np.zeros(rows, np.int64)))
    return path


NPZ_CASES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "huge_shape_header": lambda d: (_npz_with_header(d, (10**12, 3072)), "declares shape"),
    "zip_bomb": lambda d: (_zip_bomb(d), "zip bomb"),
    "many_small_bombs": lambda d: (_many_bombs(d), "and 19 more inflate"),
    "label_1e9": lambda d: (_npz(d, X=np.zeros((10, 2)), y=np.full(10, 10**9)), "at most 100000 classes"),
    "label_2_70": lambda d: (_npz(d, X=np.zeros((10, 2)), y=np.full(10, 2.0**70)), "at most 100000 classes"),
    "label_3_7": lambda d: (_npz(d, X=np.zeros((10, 2)), y=np.full(10, 3.7)), "integer class labels"),
    "complex_x": lambda d: (_npz(d, X=np.ones((10, 2), np.complex64), y=np.zeros(10, int)), "not complex"),
    "nan_x": lambda d: (_npz(d, X=np.array([[1.0, np.nan]] * 10), y=np.zeros(10, int)), "1 0|10 NaN"),
    "object_y": lambda d: (_npz(d, X=np.zeros((10, 2)), y=np.array([{"a": 1}] * 10, dtype=object)),
                           "Python objects"),
}
"""Dataset .npz files `read_npz` must refuse before allocating what they claim."""


def png_of_zeros(path: Path, width: int, height: int) -> Path:
    """A valid grayscale PNG of `width` x `height` black pixels, compressed as it is written (never held whole)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    deflate, row, idat = zlib.compressobj(9), bytes(width + 1), []  # each row: filter byte 0, then the pixels
    for start in range(0, height, 4096):
        idat.append(deflate.compress(row * min(4096, height - start)))
    idat.append(deflate.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b""))
    return path


IMAGE_CASES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "80M_by_1": lambda d: (png_of_zeros(d / "wide.png", 80_000_000, 1), "80,000,000 x 1 pixels"),
    "12000_square": lambda d: (png_of_zeros(d / "big.png", 12_000, 12_000), "12,000 x 12,000 pixels"),
}
"""Images `nnrun predict` must refuse before decoding them (exit 2)."""


def _batch(folder: Path, obj: object) -> Path:
    path = folder / "data_batch_1"
    path.write_bytes(obj if isinstance(obj, bytes) else pickle.dumps(obj))
    return path


MEMO_BOMB = b"\x80\x02N" + b"r\xff\xff\xff\xff" + b"."
"""A pickle that asks for memo slot 4294967295 (the C unpickler would grow its memo to four billion slots)."""

BATCH_CASES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    "memo_bomb": lambda d: (_batch(d, MEMO_BOMB), "memo slot"),
    "float_pixels": lambda d: (_batch(d, {b"data": np.full((3, 3072), 300.7), b"labels": [0, 1, 2]}), "uint8"),
    "nan_pixels": lambda d: (_batch(d, {b"data": np.full((3, 3072), np.nan), b"labels": [0, 1, 2]}), "uint8"),
    "fractional_labels": lambda d: (_batch(d, {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0.5, 1, 3.7]}),
                                    "whole numbers"),
    "label_2_70": lambda d: (_batch(d, {b"data": np.zeros((1, 3072), np.uint8), b"labels": [2**70]}), "labels"),
    "empty": lambda d: (_batch(d, {b"data": np.zeros((0, 3072), np.uint8), b"labels": []}), "0 images"),
    "not_a_dict": lambda d: (_batch(d, [1, 2, 3]), "expected a dict"),
    "truncated": lambda d: (_batch(d, pickle.dumps({b"data": np.zeros((10, 3072), np.uint8),
                                                    b"labels": [0] * 10})[:4000]), "corrupt"),
    "deep_nesting": lambda d: (_batch(d, b"\x80\x02" + b"(" * 200 + b"."), "nested more than"),
}
"""CIFAR-10 batch files `read_cifar10_batch` must refuse."""


def _header_bomb_like(original: Path) -> None:
    """`original` rewritten with the same keys, its first claiming 10**12 x 3072 float32 (36 TiB) in 64 bytes."""
    with np.load(original, allow_pickle=False) as z:
        keys = list(z.files)
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (10**12, 3072)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    with zipfile.ZipFile(original, "w") as zf:
        zf.writestr(f"{keys[0]}.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(64))
        for key in keys[1:]:
            zf.writestr(f"{key}.npy", _npy(np.zeros(3, np.float32)))


def _zip_bomb_like(original: Path) -> None:
    """`original` rewritten with its first key inflating 4 MiB of zeros from about 4 kB (a bomb under the test's
    lowered bound)."""
    with np.load(original, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    first = next(iter(arrays))
    arrays[first] = np.zeros((1024, 1024), np.float32)
    with open(original, "wb") as f:
        np.savez_compressed(f, **arrays)


def _many_members_like(original: Path) -> None:
    """`original` with 1,000 extra one-element members."""
    with np.load(original, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    with open(original, "wb") as f:
        np.savez(f, **arrays, **{f"extra{i}": np.zeros(1, np.float32) for i in range(1000)})


def _truncated(original: Path) -> None:
    original.write_bytes(original.read_bytes()[: original.stat().st_size // 2])


RUN_NPZ_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "header_bomb": (_header_bomb_like, "declares shape"),
    "zip_bomb": (_zip_bomb_like, "zip bomb"),
    "many_members": (_many_members_like, "members; this .npz may hold at most"),
    "truncated": (_truncated, "cannot read"),
}
"""A run directory's .npz file rewritten hostile (applied to model.npz, preprocess.npz, targets.npz, split.npz):
what `load_run` must refuse, naming the file, before allocating what it claims."""


# ---- acceptance measurement -----------------------------------------------------------------------

MEASURE = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
           "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
           "sys.exit(code)")
"""A wrapper that runs one command and prints its peak RSS (its only child's, so exactly that command's)."""


def run_case(args: list[str], cwd: Path) -> dict:
    """Run `nnrun ARGS` in a subprocess: exit code, seconds, peak RSS (MiB), traceback or not, last message."""
    import os

    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "nnrun", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - started
    lines = proc.stderr.strip().splitlines()
    peak = int(lines[-1].split()[-1]) / 1024 if lines and lines[-1].startswith("peak-rss-kib") else None
    message = [line for line in lines[:-1] if line.strip()]
    return {"exit": proc.returncode, "seconds": round(seconds, 2), "peak_rss_mib": round(peak or 0),
            "traceback": "Traceback" in proc.stdout + proc.stderr, "message": " ".join(message)[:160]}


def measure() -> list[dict]:
    """Every case through the real CLI in a fresh folder; what it printed and left there."""
    rows = []
    cases: list[tuple[str, Callable[[Path], list[str]]]] = []
    for name, build in CONFIG_CASES.items():
        cases.append((f"config:{name}", lambda d, b=build: ["validate", str(b(d)[0])]))
    for name, (items, _) in OVERRIDE_CASES.items():
        cases.append((f"--set:{name}", lambda d, i=items: ["validate", str(ROOT / "configs/quickstart.yaml"),
                                                            *[a for item in i for a in ("--set", item)]]))
    big = {"zip_bomb": lambda d: (_big_zip_bomb(d), "zip bomb"),
           "many_small_bombs": lambda d: (_many_bombs(d, 20, 95 * 2**20), "zip bomb")}
    for name, build in {**NPZ_CASES, **big}.items():
        cases.append((f"npz:{name}", lambda d, b=build: ["train", str(ROOT / "configs/quickstart.yaml"), "--set",
                                                          "data.dataset=npz", "--set", f"data.path={b(d)[0]}",
                                                          "--out", str(d / "run")]))
    for name, build in BATCH_CASES.items():
        def batch_case(d: Path, b=build) -> list[str]:
            from tests.cifar_fixtures import write_cifar_folder

            folder = write_cifar_folder(d / "data")
            path, _ = b(d)
            path.replace(folder / "data_batch_1")
            return ["train", str(ROOT / "configs/quickstart.yaml"), "--set", "data.dataset=cifar10", "--set",
                    f"data.root={d / 'data'}", "--set", "data.val_size=10", "--out", str(d / "run")]
        cases.append((f"batch:{name}", batch_case))
    cases.append(("model:hidden=[1e9]", lambda d: ["train", str(ROOT / "configs/quickstart.yaml"), "--set",
                                                   "model.hidden=[1000000000]", "--out", str(d / "run")]))
    for label, make in cases:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            args = make(folder)
            before = {p for p in folder.rglob("*")}
            row = {"case": label, **run_case(args, folder)}
            row["left_behind"] = sorted(str(p.relative_to(folder)) for p in set(folder.rglob("*")) - before)
            rows.append(row)
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    results = measure()
    for r in results:
        print(json.dumps(r))
