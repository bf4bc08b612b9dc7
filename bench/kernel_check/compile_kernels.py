"""Compile every CuPy ElementwiseKernel of `nnrun.nn.kernels` with NVRTC for sm_90 (H200), no GPU needed.

CuPy's own code generator (`cupy._core._kernel._get_elementwise_kernel_code`) writes the exact source a call on
a device would compile, from the argument infos that call would produce (dtype, ndim, contiguity and 32-bit
indexing of each array after CuPy's broadcasting and dimension reduction, which this script reproduces), and
NVRTC compiles it with the options `cupy._core.core.compile_with_cache` passes (`--std=c++17`, CCCL and CUDA
include paths, `-ftz=true`, `--device-as-default-execution-space`), for `-arch=sm_90` instead of the
device's arch. Nothing touches the CUDA driver.

The argument shapes and dtypes of each case follow the wrapper functions of `nnrun/nn/kernels.py` and their
callers (`nnrun/device_step.py`, `nnrun/nn/layers.py`, `nnrun/optim.py`, `nnrun/nn/losses.py`). The host-side
checks of `ElementwiseKernel.__call__` that need no device are also run: CuPy's own type resolution
(`_decide_params_type`, which raises "Type is mismatched" at call time), the argument count, and the
`size=` rule (size only when every array is raw, otherwise at least one non-raw array).

Setup (no GPU, no driver):
    python3 -m venv /tmp/kc && /tmp/kc/bin/pip install "cupy-cuda13x[ctk]==14.2.0"
Run:
    /tmp/kc/bin/python bench/kernel_check/compile_kernels.py [REPO_ROOT] [--arch 90] [--dump DIR] [-v]
Prints one line per kernel/dtype case, "OK" or "FAIL" followed by the NVRTC log (or call-time error);
exits 1 when any case fails. --dump writes each generated .cu file into DIR.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
I32, I64, U8 = np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.uint8)


@dataclass
class Arr:
    """A cupy.ndarray argument as the wrapper passes it (C-contiguous, as nnrun allocates them)."""
    dtype: np.dtype
    shape: tuple[int, ...]
    idx32: bool | None = None  # None: as CuPy computes it from the size


@dataclass
class Case:
    label: str
    spec: tuple[str, str, str, str]
    args: list[Any]  # Arr for arrays, anything else is a host scalar
    size: int = -1
    expect_call_error: bool = False  # documents a combination CuPy rejects at call time
    note: str = ""


# ---- CuPy's host-side argument processing, reproduced without allocating device memory -------------------------

def _c_strides(shape, itemsize):
    strides, acc = [], itemsize
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return list(reversed(strides))


def _get_c_contiguity(shape, strides, itemsize):  # cupy/_core/internal.pyx get_c_contiguity
    ndim = len(strides)
    if ndim == 0 or (ndim == 1 and strides[0] == itemsize):
        return True
    prev_i, index, st = -1, 0, 0
    for i in range(ndim):
        sh = shape[i]
        if sh == 0:
            return True
        if sh == 1:
            continue
        st = strides[i]
        if prev_i == -1 or strides[prev_i] != sh * st:
            index += 1
        prev_i = i
    return index == 0 or (index == 1 and st == itemsize)


class _View:
    """The metadata of a cupy.ndarray that the kernel's argument info depends on."""

    def __init__(self, dtype, shape, strides, c_contig, idx32):
        self.dtype, self.shape, self.strides = dtype, list(shape), list(strides)
        self.c_contiguous, self.index_32_bits = c_contig, idx32

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @classmethod
    def new(cls, a: Arr):
        size = int(np.prod(a.shape, dtype=np.int64)) if a.shape else 1
        idx32 = a.idx32 if a.idx32 is not None else size * a.dtype.itemsize <= (1 << 31)
        return cls(a.dtype, a.shape, _c_strides(a.shape, a.dtype.itemsize), True, idx32)


def _broadcast(views, params):  # cupy/_core/_kernel.pyx _broadcast + internal._broadcast_core
    idx = [i for i, v in enumerate(views) if isinstance(v, _View) and not params[i].raw]
    nd = max((len(views[i].shape) for i in idx), default=0)
    shape = []
    for d in range(nd):
        s = 1
        for i in idx:
            a = views[i]
            if d < nd - len(a.shape):
                continue
            sh = a.shape[d - (nd - len(a.shape))]
            if sh == s or sh == 1:
                continue
            if s == 1:
                s = sh
                continue
            raise ValueError("operands could not be broadcast together")
        shape.append(s)
    for i in idx:
        a = views[i]
        if a.shape == shape:
            continue
        strides = [0] * nd
        for j, sh in enumerate(a.shape):
            if sh == shape[j + nd - len(a.shape)]:
                strides[j + nd - len(a.shape)] = a.strides[j]
        v = _View(a.dtype, shape, strides, _get_c_contiguity(shape, strides, a.dtype.itemsize), a.index_32_bits)
        if v.size * a.dtype.itemsize > 2 ** 31:
            v.index_32_bits = False
        views[i] = v
    return shape, bool(idx)


def _reduce_dims(views, params, shape):  # cupy/_core/_kernel.pyx _reduce_dims / _reduced_view_core
    if len(shape) <= 1 or len(views) == 0:
        return shape
    ndim = len(shape)
    array_idx, strided_idx = [], []
    for i, v in enumerate(views):
        if params[i].raw or not isinstance(v, _View):
            continue
        array_idx.append(i)
        if not v.c_contiguous:
            if ndim == 2:
                return shape
            strided_idx.append(i)
    if not array_idx:
        return shape
    if not strided_idx:
        total = views[array_idx[0]].size
        for i in array_idx:
            v = views[i]
            views[i] = _View(v.dtype, [total], [v.dtype.itemsize], v.c_contiguous, v.index_32_bits)
        return [total]
    vecshape, axes, last_ax = list(shape), [], -1
    for ax in range(ndim):
        if vecshape[ax] == 1:
            continue
        if last_ax < 0:
            last_ax = ax
            continue
        for i in strided_idx:
            if views[i].strides[ax] * vecshape[ax] != views[i].strides[last_ax]:
                axes.append(last_ax)
                break
        else:
            vecshape[ax] *= vecshape[last_ax]
        last_ax = ax
    if last_ax >= 0:
        axes.append(last_ax)
    if len(axes) == ndim:
        return shape
    newshape = [vecshape[ax] for ax in axes]
    for i in array_idx:
        v = views[i]
        views[i] = _View(v.dtype, newshape, [v.strides[ax] for ax in axes], v.c_contiguous, v.index_32_bits)
    return newshape


# ---- generation and compilation -----------------------------------------------------------------------------------

class Compiler:
    def __init__(self, arch: str):
        import cupy
        from cupy._core import _carray, _kernel, _scalar, core
        from cupy.cuda import compiler

        self.cupy, self.K, self.carray, self.scalar, self.core, self.compiler = (
            cupy, _kernel, _carray, _scalar, core, compiler)
        self.header = "".join(f"#include <{h}>\n" for h in core._cupy_header_list)
        # as compile_with_cache -> _compile_with_cache_cuda -> _compile_using_nvrtc_no_warning
        self.options = core.assemble_cupy_compiler_options(()) + (
            "-ftz=true", f"-arch=sm_{arch}", "--device-as-default-execution-space")

    def generate(self, kern, case: Case) -> str:
        """The source `kern(*case.args, size=case.size)` would compile; raises what the call would raise."""
        K = self.K
        if len(case.args) not in (kern.nin, kern.nargs):
            raise TypeError(f"Wrong number of arguments for {kern.name!r}: {len(case.args)}")
        params = kern.params  # in + out + CIndexer _ind
        views = [_View.new(a) if isinstance(a, Arr) else a for a in case.args]
        shape, any_nonraw = _broadcast(views, params)
        if case.size != -1 and any_nonraw:
            raise ValueError("Specified 'size' can be used only if all of the ndarray are 'raw'.")
        if case.size == -1 and not any_nonraw:
            raise ValueError("Loop size is undecided.")
        in_views, out_views = views[:kern.nin], views[kern.nin:]
        in_types = tuple(v.dtype if isinstance(v, _View) else None for v in in_views)
        out_types = tuple(v.dtype for v in out_views)
        in_types, out_types, type_map = kern._decide_params_type(in_types, out_types)
        if case.size != -1:
            shape = [case.size]
        if len(out_views) < kern.nout:  # outputs allocated by the call (C-contiguous, of the loop shape)
            for t in out_types[len(out_views):]:
                views.append(_View.new(Arr(np.dtype(t), tuple(shape))))
        for i, v in enumerate(views[:kern.nin]):
            if not isinstance(v, _View):
                self.scalar.CScalar(v).apply_dtype(in_types[i])  # raises as the call would (out-of-range ints)
        if kern.reduce_dims:
            shape = _reduce_dims(views, params, shape)
        infos = []
        for i, v in enumerate(views):
            if isinstance(v, _View):
                infos.append(K._ArgInfo(1, self.cupy.ndarray, v.dtype, len(v.shape), v.c_contiguous,
                                        v.index_32_bits))
            else:
                infos.append(K._ArgInfo(3, self.scalar.CScalar, np.dtype(in_types[i]), 0, True, True))
        size = int(np.prod(shape, dtype=np.int64)) if shape else 1
        infos.append(K._ArgInfo(2, self.carray.Indexer, None, len(shape), True, size <= (1 << 31)))
        return K._get_elementwise_kernel_code(tuple(infos), type_map, params, kern.operation, kern.name,
                                              kern.preamble, **kern.kwargs)

    def compile(self, code: str) -> tuple[bool, str]:
        """(compiled, NVRTC log): the log holds the errors, or any warnings of a successful compile."""
        import io

        prog = self.compiler._NVRTCProgram(self.header + code, "kern.cu", method="cubin")
        log = io.StringIO()
        try:
            prog.compile(self.options, log)
        except self.compiler.CompileException as e:
            return False, e.get_message()
        return True, log.getvalue().strip()


# ---- the cases ----------------------------------------------------------------------------------------------------

def cases(kn) -> list[Case]:
    N, D, C, B = 256, 3072, 10, 128  # training rows, features, classes, batch
    H = 512  # hidden width
    out: list[Case] = []
    for T in (F32, F64):
        t = T.type
        tn = f"T={T.name}"
        out.append(Case(tn, kn.RELU_BACKWARD, [Arr(T, (B, H)), Arr(T, (B, H))]))
        out.append(Case(tn, kn.DROPOUT, [Arr(T, (B, H)), Arr(T, (B, H)), t(0.6), t(1 / 0.6)]))
        for lab in (I64, I32):
            out.append(Case(f"{tn} I={lab.name}" + ("" if lab == I64 else " (not used by nnrun: int32 labels)"),
                            kn.SOFTMAX_XENT,
                            [Arr(T, (B * C,)), Arr(lab, (B,)), C, t(1.0 / B), t(0.9), t(0.1 / C),
                             Arr(T, (B * C,)), Arr(T, (B,))]))
        for rule, spec in kn.UPDATES.items():
            nin = len(spec[0].split(","))
            nslots = len(spec[1].split(",")) - 1
            out.append(Case(f"{tn} ({rule})", spec,
                            [Arr(T, (D, H))] + [t(0.1)] * (nin - 1) + [Arr(T, (D, H))] * (1 + nslots)))
            tspec = kn.from_table(rule)
            width = nin - 1 + 1  # the rule's scalars + the decay factor (Optimizer.step_scalars)
            out.append(Case(f"{tn} ({rule})", tspec,
                            [Arr(T, (D, H)), Arr(T, (7 * width,)), Arr(I64, (2,)), width]
                            + [Arr(T, (D, H))] * (1 + nslots)))
            out.append(Case(f"{tn} ({rule}, bias (H,))", tspec,
                            [Arr(T, (H,)), Arr(T, (7 * width,)), Arr(I64, (2,)), width]
                            + [Arr(T, (H,))] * (1 + nslots)))
        out.append(Case(tn, kn.DECAY_FROM_TABLE, [Arr(T, (7 * 3,)), Arr(I64, (2,)), 3, 2, Arr(T, (D, H))]))
        # dropout_counter: key from integers(2**63), layer number, keep, scale
        out.append(Case(tn, kn.DROPOUT_COUNTER, [Arr(T, (B, H)), Arr(I64, (2,)), 2 ** 63 - 1, 3, t(0.7), t(1 / 0.7)]))
        # batchnorm_forward / batchnorm_backward
        out.append(Case(tn, kn.BN_STATS, [Arr(T, (B * H,)), B, H, t(1e-5), t(0.1)] + [Arr(T, (H,))] * 4))
        out.append(Case(f"{tn} (broadcast (H,) over (B, H))", kn.BN_NORMALIZE,
                        [Arr(T, (H,))] * 4 + [Arr(T, (B, H)), Arr(T, (B, H))]))
        out.append(Case(tn, kn.BN_PARAM_GRADS, [Arr(T, (B * H,)), Arr(T, (B * H,)), B, H, Arr(T, (H,)), Arr(T, (H,))]))
        out.append(Case(f"{tn} (broadcast (H,) over (B, H))", kn.BN_INPUT_GRAD,
                        [Arr(T, (B, H)), Arr(T, (H,)), Arr(T, (H,)), Arr(T, (H,)), Arr(T, (H,)), t(B),
                         Arr(T, (B, H))]))
        # device_step: gather_rows for X (T) and labels (int64 classes; float32 attributes/regression)
        out.append(Case(f"{tn} (X rows)", kn.GATHER_ROWS, [Arr(T, (N * D,)), Arr(I64, (N,)), Arr(I64, (2,)), B, D,
                                                        Arr(T, (B, D))]))
        out.append(Case(f"{tn} (X rows, src > 2 GiB: 64-bit indexing)", kn.GATHER_ROWS,
                        [Arr(T, (N * D,), idx32=False), Arr(I64, (N,)), Arr(I64, (2,)), B, D, Arr(T, (B, D))]))
        out.append(Case(f"{tn} augment off / no affine", kn.AUGMENT_ROWS,
                        [Arr(T, (N * D,)), Arr(I64, (N,)), Arr(I32, (N * 3,)), Arr(I64, (2,)), B, 3, 32, 32,
                         True, False, Arr(T, (N * D,)), Arr(T, (N * D,)), Arr(T, (B, D))]))
        out.append(Case(f"{tn} with pixel_affine (scale/shift cast to the data's dtype by DeviceEpochs)",
                        kn.AUGMENT_ROWS,
                        [Arr(T, (N * D,)), Arr(I64, (N,)), Arr(I32, (N * 3,)), Arr(I64, (2,)), B, 3, 32, 32,
                         False, True, Arr(T, (D,)), Arr(T, (D,)), Arr(T, (B, D))]))
        for U in (F32, F64):
            out.append(Case(f"{tn} U={U.name} size=1", kn.RECORD_LOSSES,
                            [Arr(T, (1,)), Arr(U, (1,)), Arr(F64, (7 * 2,)), Arr(I64, (2,))], size=1))
    out.append(Case("T=int64 (class labels)", kn.GATHER_ROWS,
                    [Arr(I64, (N,)), Arr(I64, (N,)), Arr(I64, (2,)), B, 1, Arr(I64, (B,))]))
    out.append(Case("T=float32 (attribute/regression targets (B, A))", kn.GATHER_ROWS,
                    [Arr(F32, (N * 5,)), Arr(I64, (N,)), Arr(I64, (2,)), B, 5, Arr(F32, (B, 5))]))
    # question (a): a 0-d array as a raw argument, read as x[0]
    out.append(Case("T=float32 U=float64, 0-d raw data_loss/reg_loss (semantic probe (a))", kn.RECORD_LOSSES,
                    [Arr(F32, ()), Arr(F64, ()), Arr(F64, (14,)), Arr(I64, (2,))], size=1))
    return out


def load_kernels(root: str):
    sys.path.insert(0, root)
    try:
        return importlib.import_module("nnrun.nn.kernels")
    except ImportError:  # the module's own imports are stdlib only; load it by path if the package will not import
        path = os.path.join(root, "nnrun", "nn", "kernels.py")
        spec = importlib.util.spec_from_file_location("nnrun_kernels_standalone", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", nargs="?", default=os.path.dirname(os.path.dirname(here)), help="repository root")
    ap.add_argument("--arch", default="90", help="SM version for NVRTC (default 90: H100/H200)")
    ap.add_argument("--dump", help="write each generated kernel source into this directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the generated source of failures")
    ap.add_argument("--self-test", action="store_true",
                    help="also compile a deliberately broken body, to show that errors are caught")
    a = ap.parse_args()

    kn = load_kernels(os.path.abspath(a.root))
    import cupy
    from cupy_backends.cuda.libs import nvrtc

    comp = Compiler(a.arch)
    print(f"# cupy {cupy.__version__}, NVRTC {'.'.join(map(str, nvrtc.getVersion()))}, sm_{a.arch}, "
          f"kernels from {kn.__file__}")
    if a.dump:
        os.makedirs(a.dump, exist_ok=True)
    failures = 0
    seen: dict[str, tuple[bool, str]] = {}
    todo = cases(kn)
    if a.self_test:
        broken = ("T x", "T y", "y = x + undefined_name; y = (T)", "nnrun_self_test_broken")
        todo.append(Case("T=float32 (self-test: must FAIL)", broken, [Arr(F32, (8,)), Arr(F32, (8,))]))
    for n, case in enumerate(todo):
        name = case.spec[3]
        tag = f"{name:<28} {case.label}"
        try:
            kern = kn.kernel(case.spec)  # the module's own constructor (validates names, 'i', kernel name)
            code = comp.generate(kern, case)
        except Exception as e:  # what the call would raise on a device, before compiling
            if case.expect_call_error:
                print(f"EXPECTED-CALL-ERROR {tag}: {type(e).__name__}: {e}  [{case.note}]")
            else:
                failures += 1
                print(f"FAIL {tag}: call-time {type(e).__name__}: {e}")
            continue
        if case.expect_call_error:
            print(f"NOTE {tag}: expected a call-time error but the types resolved")
        if a.dump:
            with open(os.path.join(a.dump, f"{n:03d}_{name}.cu"), "w") as f:
                f.write(comp.header + code)
        if code not in seen:
            seen[code] = comp.compile(code)
        ok, log = seen[code]
        if ok:
            print(f"OK   {tag}")
            if log:
                print("\n".join("    warning: " + line for line in log.splitlines()))
        else:
            failures += 1
            print(f"FAIL {tag}: NVRTC compile error:")
            print("\n".join("    " + line for line in log.rstrip().splitlines()))
            if a.verbose:
                print("\n".join(f"    {k + 1:4d}| {line}" for k, line in enumerate((comp.header + code).splitlines())))
    print(f"# {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
