"""A stand-in for CuPy, made of NumPy, so that the GPU code path runs in CI (which has no GPU).

`install(monkeypatch)` puts a module named `cupy` into `sys.modules`. Its arrays are an ndarray subclass
whose module is `cupy` (so `nnrun.backend.is_device_array` takes them for GPU arrays), and it is as
strict as CuPy where that finds mistakes: NumPy functions refuse its arrays (CuPy raises on implicit
conversion; nnrun must call the module of the arrays, or bring them to the host with `.get()`), and
only the names nnrun may use exist on it. `ElementwiseKernel` runs the CUDA body of nnrun's element-wise
kernels, translated to NumPy statements (so their formulas are tested here); kernels whose bodies are
loops run a NumPy reference registered by kernel name (their bodies are checked against those references
on a real GPU by tests/test_gpu.py).

Stream capture is faithful where it matters for CUDA graphs: between `Stream.begin_capture()` and
`end_capture()` every device operation is recorded (kernels, module functions, operators, copies, fills,
allocations' zeroing), anything that needs the host (`.get()`, `float()`, an upload) raises as CUDA
refuses it, and what the recorded work did to existing arrays is undone at `end_capture` (a real capture
runs nothing). `Graph.launch()` then replays the record with the recorded arguments, host scalars as
they were at capture, so a step that bakes a changing host value into its launches diverges here too.
"""

from __future__ import annotations

import contextlib
import re
import threading
import types
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

_state = threading.local()


_live: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
"""Every fake array alive, by id (a capture snapshots their memory to undo what the recorded work did)."""


def _inside() -> bool:
    return getattr(_state, "depth", 0) > 0


def _recording() -> list | None:
    """The record of the capture in progress, when this call is a top-level device operation (not one made
    inside another fake operation, which the outer one's record covers)."""
    return getattr(_state, "record", None) if not _inside() else None


def _refuse_in_capture(what: str) -> None:
    if getattr(_state, "record", None) is not None:
        raise RuntimeError(f"cudaErrorStreamCaptureUnsupported: {what} is not permitted while a stream is "
                           "capturing (it needs the host)")


def _plain(a: Any) -> Any:
    return a.view(np.ndarray) if isinstance(a, ndarray) else a


class ndarray(np.ndarray):  # noqa: N801 - CuPy's name
    """A 'GPU' array: NumPy data, but NumPy functions refuse it as CuPy's arrays refuse them."""

    __module__ = "cupy"

    def __array_finalize__(self, obj: Any) -> None:
        _live[id(self)] = self

    def get(self, stream: Any = None) -> np.ndarray:
        """A host copy (CuPy's `ndarray.get`)."""
        _refuse_in_capture("a device-to-host copy")
        return np.array(self.view(np.ndarray), copy=True)

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        """Copy the host array `arr` in (CuPy's `ndarray.set`: same shape)."""
        _refuse_in_capture("a host-to-device copy")
        if arr.shape != self.shape:
            raise ValueError(f"set: shape {arr.shape} does not match {self.shape}")
        np.copyto(self.view(np.ndarray), arr, casting="unsafe")

    def item(self) -> Any:
        _refuse_in_capture("reading a value")
        return self.view(np.ndarray).item()

    def tolist(self) -> Any:
        _refuse_in_capture("reading values")
        return self.view(np.ndarray).tolist()

    def __float__(self) -> float:
        _refuse_in_capture("reading a value")
        return float(self.view(np.ndarray))

    def __int__(self) -> int:
        _refuse_in_capture("reading a value")
        return int(self.view(np.ndarray))

    def __bool__(self) -> bool:
        _refuse_in_capture("reading a value")
        return bool(self.view(np.ndarray))

    def astype(self, dtype: Any, *args: Any, **kwargs: Any) -> Any:
        result = _wrap(self.view(np.ndarray).astype(dtype, *args, **kwargs))
        if result is not self and (record := _recording()) is not None:
            record.append(("copy", result, self, ...))
        return result

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        result = _wrap(self.view(np.ndarray).copy(*args, **kwargs))
        if (record := _recording()) is not None:
            record.append(("copy", result, self, ...))
        return result

    def reshape(self, *shape: Any, **kwargs: Any) -> Any:
        result = _wrap(self.view(np.ndarray).reshape(*shape, **kwargs))
        if not np.shares_memory(_plain(result), _plain(self)) and (record := _recording()) is not None:
            record.append(("copy", result, self.reshape(-1) if result.ndim == 1 else self, ...))
        return result

    def fill(self, value: Any) -> None:
        self.view(np.ndarray).fill(value)
        if (record := _recording()) is not None:
            record.append(("fill", self, value))

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, np.ndarray) and not isinstance(value, ndarray) and value.ndim > 0:
            _refuse_in_capture("a host-to-device copy")
        np.ndarray.__setitem__(self.view(np.ndarray), key, _plain(value))
        if (record := _recording()) is not None:
            record.append(("setitem", self, key, value))

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
        plain = [_plain(a) for a in inputs]
        given = kwargs.pop("out", None)
        if given is not None:
            kwargs["out"] = tuple(_plain(a) for a in given)
        result = getattr(ufunc, method)(*plain, **kwargs)
        if method == "at":
            outs: tuple = ()
        elif given is not None:
            outs = tuple(_wrap(o) for o in given)
        else:
            outs = tuple(_wrap(r) for r in (result if isinstance(result, tuple) else (result,)))
        if (record := _recording()) is not None:
            record.append(("ufunc", ufunc, method, inputs, kwargs, outs))
        if method == "at":
            return None
        return outs[0] if len(outs) == 1 else outs

    def __getitem__(self, key: Any) -> Any:
        """CuPy's integer indexing: `a[i]` of every axis is a 0-d array *viewing* the element, not a host scalar
        (writing through `a[i] = ...` later changes what such a view reads)."""
        if isinstance(key, int | np.integer) or (
                isinstance(key, tuple) and key and all(isinstance(k, int | np.integer) for k in key)):
            whole = key if isinstance(key, tuple) else (key,)
            if len(whole) == self.ndim:
                return super().__getitem__((*whole, Ellipsis))
        result = super().__getitem__(key)
        parts = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, np.ndarray | list) for k in parts) and (record := _recording()) is not None:
            record.append(("copy", result, self, key))  # advanced indexing copies: a gather kernel
        return result


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
        record = _recording()
        _state.depth = getattr(_state, "depth", 0) + 1
        try:
            result = _wrap(fn(*args, **kwargs))
        finally:
            _state.depth -= 1
        if record is not None:
            record.append(("call", fn, args, kwargs, result))
        return result
    call.__name__ = getattr(fn, "__name__", "function")
    return call


def _asarray(a: Any, dtype: Any = None) -> ndarray:
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    _refuse_in_capture("a host-to-device copy")
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
        _refuse_in_capture("the fake's generator")
        return _wrap(self._rng.random(size, dtype=dtype))

    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> ndarray:
        _refuse_in_capture("the fake's generator")
        return _wrap(self._rng.standard_normal(size, dtype=dtype))


# ---- streams, graphs and memory pools ----------------------------------------------------------------------

def _replay(op: tuple) -> None:
    """Run one recorded operation again, writing into the arrays it wrote when recorded."""
    kind = op[0]
    if kind == "call":
        _, fn, args, kwargs, result = op
        _state.depth = getattr(_state, "depth", 0) + 1
        try:
            new = _wrap(fn(*args, **kwargs))
        finally:
            _state.depth -= 1
        pairs = zip(result, new, strict=True) if isinstance(result, tuple) else [(result, new)]
        for old, fresh in pairs:
            if isinstance(old, np.ndarray) and fresh is not old:
                np.copyto(old.view(np.ndarray), _plain(fresh), casting="unsafe")
    elif kind == "kernel":
        _, kernel, args, size = op
        kernel(*args, size=size)
    elif kind == "ufunc":
        _, ufunc, method, inputs, kwargs, outs = op
        plain = [_plain(a) for a in inputs]
        if method == "at":
            getattr(ufunc, method)(*plain, **kwargs)
        else:
            getattr(ufunc, method)(*plain, **{**kwargs, "out": tuple(_plain(o) for o in outs)})
    elif kind == "copy":
        _, result, source, key = op
        np.copyto(result.view(np.ndarray), _plain(source)[key], casting="unsafe")
    elif kind == "fill":
        np.ndarray.fill(op[1].view(np.ndarray), op[2])
    elif kind == "setitem":
        _, target, key, value = op
        np.ndarray.__setitem__(target.view(np.ndarray), key, _plain(value))


class Graph:
    """`cupy.cuda.Graph`: the record of a capture, replayed by `launch`."""

    def __init__(self, record: list) -> None:
        self.record = record

    def launch(self, stream: Any = None) -> None:
        _refuse_in_capture("launching a graph")
        for op in self.record:
            _replay(op)


class Stream:
    """`cupy.cuda.Stream`: the current stream inside `with`; captures as the module docstring says."""

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False) -> None:
        self._snapshot: list | None = None

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def synchronize(self) -> None:
        _refuse_in_capture("synchronizing")

    def is_capturing(self) -> bool:
        return self._snapshot is not None

    def begin_capture(self, mode: Any = None) -> None:
        if getattr(_state, "record", None) is not None:
            raise RuntimeError("a capture is already in progress")
        roots: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for a in list(_live.values()):
            root = a
            while isinstance(root.base, np.ndarray):
                root = root.base
            if id(root) not in roots and root.flags.writeable:
                roots[id(root)] = (root, np.array(_plain(root), copy=True))
        self._snapshot = list(roots.values())
        _state.record = []

    def end_capture(self) -> Graph:
        if self._snapshot is None:
            raise RuntimeError("the stream is not capturing")
        record, _state.record = _state.record, None
        for root, saved in self._snapshot:
            np.copyto(root.view(np.ndarray), saved)  # a capture runs nothing: undo what recording did
        self._snapshot = None
        return Graph(record)


class MemoryPool:
    """`cupy.cuda.MemoryPool`: `malloc` for `using_allocator` (the fake allocates with NumPy regardless)."""

    def malloc(self, size: int) -> None:
        return None

    def set_limit(self, size: int = 0, fraction: float | None = None) -> None:
        self.limit = size


@contextlib.contextmanager
def _using_allocator(allocator: Any = None) -> Any:
    yield


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
        statement = re.sub(r"^const\s+\w+\s+", "", statement)
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


def _batch_rows(order: np.ndarray, counters: np.ndarray, batch: int, b: int) -> np.ndarray:
    """The positions in the epoch of the b rows of the batch at `counters[0]`, and their rows in the data."""
    at = int(counters[0]) * int(batch) + np.arange(b)
    return at, order[at]


def _gather_rows(src: np.ndarray, order: np.ndarray, counters: np.ndarray, batch: int, width: int,
                 out: np.ndarray) -> None:
    _, rows = _batch_rows(order, counters, batch, len(out))
    out[...] = src.reshape(-1, width)[rows].reshape(out.shape)


def _augment_rows(src: np.ndarray, order: np.ndarray, moves: np.ndarray, counters: np.ndarray, batch: int, c: int,
                  h: int, w: int, reflect: bool, affine: bool, scale: np.ndarray, shift: np.ndarray,
                  out: np.ndarray) -> None:
    b = len(out)
    at, rows = _batch_rows(order, counters, batch, b)
    flip, sy, sx = moves.reshape(-1, 3)[at].T
    images = src.reshape(-1, c * h * w)[rows].reshape(b, c, h, w)
    if affine:
        images = images * scale.reshape(1, c, h, w) + shift.reshape(1, c, h, w)
    iy = np.arange(h)[None, :] - sy[:, None]
    ix = np.where(flip[:, None] != 0, w - 1 - np.arange(w)[None, :], np.arange(w)[None, :]) - sx[:, None]
    if reflect:
        iy = np.where(iy < 0, -iy, np.where(iy >= h, 2 * (h - 1) - iy, iy))
        ix = np.where(ix < 0, -ix, np.where(ix >= w, 2 * (w - 1) - ix, ix))
    inside = ((iy >= 0) & (iy < h))[:, None, :, None] & ((ix >= 0) & (ix < w))[:, None, None, :]
    moved = np.take_along_axis(images, np.broadcast_to(np.clip(iy, 0, h - 1)[:, None, :, None], (b, c, h, w)), 2)
    moved = np.take_along_axis(moved, np.broadcast_to(np.clip(ix, 0, w - 1)[:, None, None, :], (b, c, h, w)), 3)
    moved = np.where(inside, moved, 0).astype(out.dtype)
    if affine:
        moved = (moved - shift.reshape(1, c, h, w)) / scale.reshape(1, c, h, w)
    out[...] = moved.reshape(out.shape)


def _record_losses(data_loss: np.ndarray, reg_loss: np.ndarray, losses: np.ndarray, counters: np.ndarray) -> None:
    k = int(counters[0])
    losses.reshape(-1)[2 * k:2 * k + 2] = [data_loss.reshape(-1)[0], reg_loss.reshape(-1)[0]]
    counters += 1


def _dropout_counter(x: np.ndarray, counters: np.ndarray, key: int, layer: int, p: Any, scale: Any,
                     mask: np.ndarray, out: np.ndarray) -> None:
    u64 = np.uint64
    with np.errstate(over="ignore"):
        high = np.array([(int(counters[1]) * 64 + int(layer)) % 2**64], dtype=u64) << u64(32)
        z = np.array([key], dtype=u64) + u64(0x9E3779B97F4A7C15) * (high + np.arange(x.size, dtype=u64) + u64(1))
        z = (z ^ (z >> u64(30))) * u64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> u64(27))) * u64(0x94D049BB133111EB)
        z ^= z >> u64(31)
    u = ((z >> u64(40)).astype(np.float32) * np.float32(2.0 ** -24)).astype(x.dtype).reshape(x.shape)
    mask[...] = np.where(u < p, x.dtype.type(scale), x.dtype.type(0))
    out[...] = x * mask


def _bn_stats(x: np.ndarray, n: int, d: int, eps: Any, momentum: Any, mean: np.ndarray, inv_std: np.ndarray,
              running_mean: np.ndarray, running_var: np.ndarray) -> None:
    x64 = x.reshape(n, d).astype(np.float64)
    m = x64.mean(axis=0)
    var = ((x64 - m) ** 2).mean(axis=0)
    t = x.dtype.type
    mean[...] = m
    inv_std[...] = 1.0 / np.sqrt(var + float(eps))
    running_mean[...] = running_mean * (t(1) - momentum) + momentum * m.astype(x.dtype)
    if n > 1:
        running_var[...] = running_var * (t(1) - momentum) + (float(momentum) * n / (n - 1) * var).astype(x.dtype)


def _bn_param_grads(dout: np.ndarray, xhat: np.ndarray, n: int, d: int, dbeta: np.ndarray,
                    dgamma: np.ndarray) -> None:
    d64 = dout.reshape(n, d).astype(np.float64)
    dbeta[...] = d64.sum(axis=0)
    dgamma[...] = (d64 * xhat.reshape(n, d)).sum(axis=0)


RAW_KERNELS.update({"nnrun_gather_rows": _gather_rows, "nnrun_augment_rows": _augment_rows,
                    "nnrun_record_losses": _record_losses, "nnrun_dropout_counter": _dropout_counter,
                    "nnrun_bn_stats": _bn_stats, "nnrun_bn_param_grads": _bn_param_grads})


class ElementwiseKernel:
    """`cupy.ElementwiseKernel(in_params, out_params, operation, name)`: checks the arguments as CuPy does and
    runs the body (translated), or for raw kernels the registered NumPy reference."""

    def __init__(self, in_params: str, out_params: str, operation: str, name: str = "kernel") -> None:
        self.inputs, self.outputs = _parse_params(in_params), _parse_params(out_params)
        self.operation, self.name = operation, name
        self.raw = any(raw for raw, _, _ in self.inputs + self.outputs)

    def __call__(self, *args: Any, size: int | None = None) -> Any:
        n_in, n_out = len(self.inputs), len(self.outputs)
        if len(args) not in (n_in, n_in + n_out):
            raise TypeError(f"{self.name}: takes {n_in} inputs (+ {n_out} outputs), got {len(args)} arguments")
        arrays = [a for a in args if isinstance(a, np.ndarray) and a.ndim > 0]
        if any(not isinstance(a, ndarray) for a in arrays):
            raise TypeError(f"{self.name}: host array given to a GPU kernel")
        record = _recording()
        result = self._run(args, size)
        if record is not None:
            outs = result if isinstance(result, tuple) else (result,)
            record.append(("kernel", self, (*args[:n_in], *outs), size))
        return result

    def _run(self, args: tuple, size: int | None) -> Any:
        n_in, n_out = len(self.inputs), len(self.outputs)
        params = self.inputs + self.outputs
        typed = [a for (_, t, _), a in zip(params, args, strict=False) if t == "T" and isinstance(a, np.ndarray)]
        dtype = typed[0].dtype
        for (_, t, pname), a in zip(self.inputs + self.outputs, args, strict=False):
            if t == "T" and np.asarray(a).dtype != dtype and not isinstance(a, float | int):
                raise TypeError(f"{self.name}: {pname} is {np.asarray(a).dtype}, T is {dtype}")
        _state.depth = getattr(_state, "depth", 0) + 1
        try:
            elementwise = [a for (raw, _, _), a in zip(params, args, strict=False)
                           if not raw and isinstance(a, np.ndarray)]
            shape = np.broadcast_shapes(*(a.shape for a in elementwise)) if elementwise else (size,)
            outs = list(args[n_in:]) or [np.empty(shape, dtype=dtype).view(ndarray) for _ in self.outputs]
            if self.name in RAW_KERNELS:
                RAW_KERNELS[self.name](*(_plain(a) for a in (*args[:n_in], *outs)))
                return outs[0] if n_out == 1 else tuple(outs)
            names = {pname: (_plain(a).reshape(-1) if raw else np.broadcast_to(_plain(a), shape))
                     if isinstance(a, np.ndarray) else (dtype.type(a) if t == "T" else a)
                     for (raw, t, pname), a in zip(self.inputs, args, strict=False)}
            names.update({pname: _plain(out).reshape(-1) if raw else _plain(out)
                          for (raw, _, pname), out in zip(self.outputs, outs, strict=True)})
            scope = {"np": np, **names}
            for statement in _python_statements(self.operation):
                exec(statement, scope)  # noqa: S102 - the test translation of a trusted kernel body
            for (raw, _, pname), out in zip(self.outputs, outs, strict=True):
                if not raw and scope[pname] is not names[pname]:
                    np.copyto(_plain(out), scope[pname], casting="unsafe")
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
    cupy.float32, cupy.float64, cupy.int64, cupy.int32 = np.float32, np.float64, np.int64, np.int32
    cupy.linalg = types.SimpleNamespace(eigh=_device_function(np.linalg.eigh))
    cupy.random = types.SimpleNamespace(default_rng=Generator)
    cupy.ElementwiseKernel = ElementwiseKernel
    runtime = types.SimpleNamespace(getDeviceCount=lambda: devices, memGetInfo=lambda: (free_bytes, free_bytes))
    pool = MemoryPool()
    cupy.cuda = types.SimpleNamespace(runtime=runtime, Stream=Stream, Graph=Graph, MemoryPool=MemoryPool,
                                      using_allocator=_using_allocator, get_current_stream=Stream)
    cupy.get_default_memory_pool = lambda: pool
    return cupy


def install(monkeypatch: Any, **options: Any) -> types.ModuleType:
    """Make `import cupy` give a fresh fake for the rest of the test (and forget kernels built before)."""
    from nnrun.nn import kernels

    module = make_module(**options)
    monkeypatch.setitem(__import__("sys").modules, "cupy", module)
    kernels.kernel.cache_clear()
    return module
