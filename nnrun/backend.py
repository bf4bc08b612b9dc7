"""The array module a computation runs on: NumPy on the CPU, CuPy on an NVIDIA GPU, through one code path.

Layers, losses, penalties, optimizers and preprocessing take the module of the arrays they are
given (`xp_of(*arrays)`: CuPy when any is a CuPy array, else NumPy) and call only functions both
modules provide (`ARRAY_FUNCTIONS`; tests run every layer, loss and optimizer against a namespace
that offers those alone). `device_module("gpu")` imports CuPy, refusing with the install command
when it is missing and with a plain message when it sees no GPU; `to_device` and `to_host` move
arrays. Run directory files are always written from host copies.

CPU and GPU runs are each deterministic (the same seed gives the same bytes on the same device),
but not bit-identical to each other: the GPU's matrix products and reductions sum in another
order, and its dropout masks come from CuPy's generator seeded from the same named stream.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from nnrun.errors import UserInputError

DEVICES = ("cpu", "gpu")
"""Where a run computes."""
CUPY_INSTALL = "pip install 'nnrun[gpu]' (CuPy for CUDA 12; with CUDA 13: pip install cupy-cuda13x)"
"""How to get CuPy, as messages say it."""

ARRAY_FUNCTIONS = frozenset({
    "abs", "add", "arange", "asarray", "concatenate", "divide", "einsum", "empty", "exp", "float32", "float64",
    "linalg", "log", "logaddexp", "matmul", "maximum", "mean", "multiply", "searchsorted", "sign", "sqrt", "stack",
    "subtract", "sum", "take", "tanh", "vdot", "where", "zeros", "zeros_like",
})
"""The names nnrun's compute code uses on an array module (`xp.NAME`): each exists, with the same meaning, in
NumPy and in CuPy. A new call needs a name from here, or one added here after checking CuPy has it. One
difference is bridged rather than avoided: CuPy's `einsum` takes no `out=`, so code calls `einsum` below."""


def is_device_array(a: Any) -> bool:
    """Whether `a` lives on a GPU (a CuPy array), without importing CuPy."""
    return type(a).__module__.split(".", 1)[0] == "cupy"


def xp_of(*arrays: Any) -> ModuleType:
    """The array module of `arrays`: CuPy when any of them is a CuPy array, else NumPy."""
    for a in arrays:
        if is_device_array(a):
            import cupy

            return cupy
    return np


def device_module(device: str) -> ModuleType:
    """NumPy for `cpu`; CuPy for `gpu`, or a `UserInputError` saying how to install it or that no GPU is seen."""
    if device == "cpu":
        return np
    if device != "gpu":
        raise UserInputError(f"train.device must be one of {', '.join(DEVICES)}, got {device!r}")
    try:
        import cupy
    except ImportError:
        raise UserInputError(f"train.device: gpu needs CuPy, which is not installed: {CUPY_INSTALL}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy raises its own CUDA error types when the driver or the device is missing
        raise UserInputError(f"train.device: gpu: CuPy is installed but finds no usable GPU ({e})") from None
    if count < 1:
        raise UserInputError("train.device: gpu: CuPy is installed but this machine has no GPU")
    return cupy


def einsum(subscripts: str, *operands: Any, out: Any = None) -> Any:
    """`xp.einsum(subscripts, *operands)` for the operands' module, written into `out` when given (NumPy writes
    there directly; CuPy has no `out=`, so its result is copied in)."""
    xp = xp_of(*operands)
    if xp is np:
        return np.einsum(subscripts, *operands, out=out)
    result = xp.einsum(subscripts, *operands)
    if out is None:
        return result
    out[...] = result
    return out


def loss_scalar(value: Any) -> Any:
    """A loss or penalty total as the training loop collects it: `float(value)` on the host; on a GPU the
    0-d array itself, so that no step waits for the GPU (the loop reads an epoch's values in one transfer)."""
    return value if is_device_array(value) else float(value)


def device_memory(xp: ModuleType) -> int | None:
    """Free bytes on the device of `xp` (None for the host: see `nnrun.resources.available_memory`)."""
    if xp is np:
        return None
    free, _total = xp.cuda.runtime.memGetInfo()
    return int(free)


def to_device(a: Any, xp: ModuleType) -> Any:
    """`a` as an array of module `xp` (a copy to the GPU for CuPy; `a` itself for NumPy)."""
    return a if xp is np else xp.asarray(a)


def to_host(a: Any) -> Any:
    """`a` as a NumPy array (copied from the GPU when it lives there); other values unchanged."""
    return a.get() if is_device_array(a) else a


def host_copy(a: Any) -> np.ndarray:
    """A NumPy copy of `a` (from the GPU when it lives there)."""
    return a.get() if is_device_array(a) else a.copy()


def host_dict(arrays: dict[str, Any]) -> dict[str, Any]:
    """`arrays` with every value on the host (what run directory files are written from)."""
    return {k: to_host(v) for k, v in arrays.items()}


def device_rng(xp: ModuleType, seed_rng: np.random.Generator) -> Any:
    """A generator on the device of `xp`: `seed_rng` itself for NumPy, a CuPy generator seeded from it for CuPy."""
    if xp is np:
        return seed_rng
    return xp.random.default_rng(int(seed_rng.integers(2**63)))
