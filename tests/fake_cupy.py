"""A stand-in for CuPy, made of NumPy, so that the GPU code path runs in CI (which has no GPU).

`install(monkeypatch)` puts a module named `cupy` into `sys.modules`. Its arrays are an ndarray subclass
whose module is `cupy` (so `nnrun.backend.is_device_array` takes them for GPU arrays), and it is as
strict as CuPy where that finds mistakes: NumPy functions refuse its arrays (CuPy raises on implicit
conversion; nnrun must call the module of the arrays, or bring them to the host with `.get()`), and
only the names nnrun may use exist on it. `ElementwiseKernel` runs the CUDA body of nnrun's element-wise
kernels, translated to NumPy statements (so their formulas are tested here); raw kernels, whose bodies
are loops, run a NumPy reference registered by kernel name (their bodies are checked on a real GPU by
tests/test_gpu.py).
"""

from __future__ import annotations

import re
import threading
import types
from collections.abc import Callable
from typing import Any

import numpy as np

_state = threading.local()


def _inside() -> bool:
    return getattr(_state, "depth", 0) > 0


class ndarray(np.ndarray):  # noqa: N801 - CuPy's name
    """A 'GPU' array: NumPy data, but NumPy functions refuse it as CuPy's arrays refuse them."""

    __module__ = "cupy"

    def get(self) -> np.ndarray:
        """A host copy (CuPy's `ndarray.get`)."""
        return np.array(self.view(np.ndarray), copy=True)

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        if not _inside():
            raise TypeError(f"numpy.{func.__name__} was given a GPU array: implicit conversion to a NumPy array "
                            "is not allowed (call the array's own module, or .get() it)")
        return super().__array_function__(func, types_, args, kwargs)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """Operators and ufuncs: a host array among the operands is refused, as CuPy refuses it (Python and
        NumPy scalars pass); results are GPU arrays, 0-d ones included (CuPy never returns a host scalar)."""
        operands = (*inputs, *kwargs.get("out", ()))
        if not _inside() and any(isinstance(a, np.ndarray) and not isinstance(a, ndarray) for a in operands):
            raise TypeError(f"{ufunc.__name__} was given a host (NumPy) array beside a GPU array: CuPy refuses "
                            "implicit conversion (move it with cupy.asarray first)")
        plain = [a.view(np.ndarray) if isinstance(a, ndarray) else a for a in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(a.view(np.ndarray) if isinstance(a, ndarray) else a for a in kwargs["out"])
        result = getattr(ufunc, method)(*plain, **kwargs)
        if "out" in kwargs and method != "at":
            outs = tuple(_wrap(o) for o in kwargs["out"])
            return outs[0] if len(outs) == 1 else outs
        return _wrap(result)

    def __getitem__(self, key: Any) -> Any:
        """CuPy's integer indexing: `a[i]` of every axis is a 0-d array *viewing* the element, not a host scalar
        (writing through `a[i] = ...` later changes what such a view reads)."""
        if isinstance(key, int | np.integer) or (
                isinstance(key, tuple) and key and all(isinstance(k, int | np.integer) for k in key)):
            whole = key if isinstance(key, tuple) else (key,)
            if len(whole) == self.ndim:
                return super().__getitem__((*whole, Ellipsis))
        return super().__getitem__(key)


def _wrap(value: Any) -> Any:
    if isinstance(value, np.ndarray) and not isinstance(value, ndarray):
        return value.view(ndarray)
    if isinstance(value, np.generic):  # CuPy returns 0-d device arrays, never host scalars
        return np.asarray(value).view(ndarray)
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _device_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        _state.depth = getattr(_state, "depth", 0) + 1
        try:
            return _wrap(fn(*args, **kwargs))
        finally:
            _state.depth -= 1
    call.__name__ = getattr(fn, "__name__", "function")
    return call


def _asarray(a: Any, dtype: Any = None) -> ndarray:
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return np.array(a, dtype=dtype, copy=True).view(ndarray)  # an upload is a copy


NAMES = ("abs", "add", "arange", "ascontiguousarray", "concatenate", "divide", "einsum", "empty", "empty_like",
         "exp", "log", "logaddexp", "matmul", "maximum", "mean", "multiply", "searchsorted", "sign", "sqrt",
         "stack", "subtract", "sum", "take", "tanh", "vdot", "where", "zeros", "zeros_like")
"""NumPy functions the fake offers (the names nnrun's GPU path may call, and what the tests themselves use)."""


class Generator:
    """`cupy.random.default_rng(seed)`: NumPy's generator, arrays on the 'GPU'."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def random(self, size: Any = None, dtype: Any = np.float64) -> ndarray:
        return _wrap(self._rng.random(size, dtype=dtype))

    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> ndarray:
        return _wrap(self._rng.standard_normal(size, dtype=dtype))


# ---- element-wise kernels -------------------------------------------------------------------------

_TERNARY = re.compile(r"^(\w+)\s*=\s*(.+?)\s*\?\s*(.+?)\s*:\s*(.+)$")


def _parse_params(spec: str) -> list[tuple[bool, str, str]]:
    params = []
    for part in spec.split(","):
        words = part.split()
        raw = words[0] == "raw"
        words = words[1:] if raw else words
        params.append((raw, words[0], words[1]))
    return params


def _python_statements(body: str) -> list[str]:
    """The body of an element-wise kernel as NumPy statements (enough C for nnrun's kernels)."""
    statements = []
    for statement in body.split(";"):
        statement = statement.strip()
        if not statement:
            continue
        statement = re.sub(r"^const\s+T\s+", "", statement)
        statement = re.sub(r"\(T\)\s*([0-9.]+)", r"\1", statement)
        statement = re.sub(r"\bsqrt\(", "np.sqrt(", statement)
        ternary = _TERNARY.match(statement)
        if ternary:
            target, condition, yes, no = ternary.groups()
            statement = f"{target} = np.where({condition}, {yes}, {no})"
        statements.append(statement)
    return statements


RAW_KERNELS: dict[str, Callable[..., None]] = {}
"""Kernel name -> a NumPy reference of a raw kernel, called with the kernel's arguments."""


def _softmax_xent(s: np.ndarray, y: np.ndarray, c: int, inv_n: Any, keep: Any, smooth: Any, d: np.ndarray,
                  row_loss: np.ndarray) -> None:
    s = s.reshape(-1, c)
    top = s.max(axis=1, keepdims=True)
    e = np.exp(s - top)
    total = e.sum(axis=1, keepdims=True)
    probs = e * (inv_n / total) - smooth * inv_n
    rows = np.arange(len(s))
    probs[rows, y] -= keep * inv_n
    d.reshape(-1, c)[...] = probs
    row_loss[...] = np.log(total[:, 0]) - keep * (s[rows, y] - top[:, 0]) - smooth * (s - top).sum(axis=1)


RAW_KERNELS["nnrun_softmax_xent"] = _softmax_xent


class ElementwiseKernel:
    """`cupy.ElementwiseKernel(in_params, out_params, operation, name)`: checks the arguments as CuPy does and
    runs the body (translated), or for raw kernels the registered NumPy reference."""

    def __init__(self, in_params: str, out_params: str, operation: str, name: str = "kernel") -> None:
        self.inputs, self.outputs = _parse_params(in_params), _parse_params(out_params)
        self.operation, self.name = operation, name
        self.raw = any(raw for raw, _, _ in self.inputs + self.outputs)

    def __call__(self, *args: Any) -> Any:
        n_in, n_out = len(self.inputs), len(self.outputs)
        if len(args) not in (n_in, n_in + n_out):
            raise TypeError(f"{self.name}: takes {n_in} inputs (+ {n_out} outputs), got {len(args)} arguments")
        arrays = [a for a in args if isinstance(a, np.ndarray) and a.ndim > 0]
        if any(not isinstance(a, ndarray) for a in arrays):
            raise TypeError(f"{self.name}: host array given to a GPU kernel")
        params = self.inputs + self.outputs
        typed = [a for (_, t, _), a in zip(params, args, strict=False) if t == "T" and isinstance(a, np.ndarray)]
        dtype = typed[0].dtype
        for (_, t, pname), a in zip(self.inputs + self.outputs, args, strict=False):
            if t == "T" and np.asarray(a).dtype != dtype and not isinstance(a, float | int):
                raise TypeError(f"{self.name}: {pname} is {np.asarray(a).dtype}, T is {dtype}")
        _state.depth = getattr(_state, "depth", 0) + 1
        try:
            if self.raw:
                if len(args) != n_in + n_out:
                    raise TypeError(f"{self.name}: a raw kernel needs its outputs given")
                RAW_KERNELS[self.name](*(a.view(np.ndarray) if isinstance(a, ndarray) else a for a in args))
                return args[n_in] if n_out == 1 else tuple(args[n_in:])
            shape = np.broadcast_shapes(*(a.shape for a in arrays))
            outs = list(args[n_in:]) or [np.empty(shape, dtype=dtype).view(ndarray) for _ in self.outputs]
            names = {pname: (np.broadcast_to(a, shape) if isinstance(a, np.ndarray) else dtype.type(a))
                     for (_, _, pname), a in zip(self.inputs, args, strict=False)}
            names.update({pname: out for (_, _, pname), out in zip(self.outputs, outs, strict=True)})
            scope = {"np": np, **names}
            for statement in _python_statements(self.operation):
                exec(statement, scope)  # noqa: S102 - the test translation of a trusted kernel body
            for (_, _, pname), out in zip(self.outputs, outs, strict=True):
                if scope[pname] is not out:
                    out[...] = scope[pname]
            return outs[0] if n_out == 1 else tuple(outs)
        finally:
            _state.depth -= 1


# ---- the module -----------------------------------------------------------------------------------

def make_module(devices: int = 1, free_bytes: int = 16 << 30) -> types.ModuleType:
    """A fresh fake `cupy` module with `devices` GPUs and `free_bytes` of free GPU memory."""
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "fake"
    cupy.ndarray = ndarray
    for name in NAMES:
        setattr(cupy, name, _device_function(getattr(np, name)))
    cupy.asarray = _asarray
    cupy.float32, cupy.float64, cupy.int64 = np.float32, np.float64, np.int64
    cupy.linalg = types.SimpleNamespace(eigh=_device_function(np.linalg.eigh))
    cupy.random = types.SimpleNamespace(default_rng=Generator)
    cupy.ElementwiseKernel = ElementwiseKernel
    runtime = types.SimpleNamespace(getDeviceCount=lambda: devices, memGetInfo=lambda: (free_bytes, free_bytes))
    cupy.cuda = types.SimpleNamespace(runtime=runtime)
    return cupy


def install(monkeypatch: Any, **options: Any) -> types.ModuleType:
    """Make `import cupy` give a fresh fake for the rest of the test (and forget kernels built before)."""
    from nnrun.nn import kernels

    module = make_module(**options)
    monkeypatch.setitem(__import__("sys").modules, "cupy", module)
    kernels.kernel.cache_clear()
    return module
