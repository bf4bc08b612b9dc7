"""The numba kernels of nnrun.cpu_kernels: bit for bit what the NumPy code computes (NaN, infinities and signed
zeros included) at any thread count, used where they serve, and a clean fallback where numba is off or missing."""

import importlib.util
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun import cpu_kernels
from nnrun.cli import app
from nnrun.config import OptimConfig
from nnrun.experiment import build_optimizer
from nnrun.nn.layers import BatchNorm, Dropout, Linear, Parameter, ReLU
from nnrun.nn.regularizers import Regularizer, Strengths
from nnrun.optim import OPTIMIZERS
from nnrun.parallel import gather_rows

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba is not installed here")

SPECIALS = np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 3e38], np.float32)


def array(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Standard-normal float32 with the special values at the start."""
    a = rng.standard_normal(shape, dtype=np.float32)
    a.reshape(-1)[: SPECIALS.size] = SPECIALS
    return a


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    """The kernels switched on (NNRUN_NUMBA=1, on one thread) for each test, loaded afresh."""
    monkeypatch.setenv(cpu_kernels.ENV, "1")
    monkeypatch.setattr(cpu_kernels, "_state", {"kernels": None, "tried": False, "threads": 1, "parallel": False})
    assert cpu_kernels.active()


@pytest.fixture
def kernels_off(monkeypatch):
    """A function that switches the kernels off (the NumPy code runs) until the test ends."""
    saved = dict(cpu_kernels._state)

    def off() -> None:
        monkeypatch.setattr(cpu_kernels, "_state", {**saved, "kernels": None, "tried": True})

    return off


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request, monkeypatch):
    """The kernels on 1 thread (each serial body), or on 2 as NNRUN_NUMBA=parallel runs them, with every size
    split (each parallel driver)."""
    if request.param > cpu_kernels._state["kernels"].max_threads():
        pytest.skip(f"numba may use fewer than {request.param} threads here (NUMBA_NUM_THREADS)")
    before = cpu_kernels.threads()
    cpu_kernels.set_threads(request.param)
    if request.param > 1:
        monkeypatch.setitem(cpu_kernels._state, "parallel", True)
        monkeypatch.setattr(cpu_kernels, "PARALLEL_MIN", 0)
    yield request.param
    cpu_kernels.set_threads(before)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def both_ways(kernels_off, compute):
    """`compute()` with the kernels, then without them: the two results."""
    with np.errstate(all="ignore"):
        fused = compute()
        kernels_off()
        return fused, compute()


def test_layers_forward_and_backward_match_numpy(threads, kernels_off):
    rng = np.random.default_rng(0)
    # 257 x 517: neither a whole number of row blocks nor of CHUNKs, so every driver's last block is partial
    x, W, b = array(rng, 257, 300), array(rng, 300, 517) * 0.05, array(rng, 517)
    dout = array(rng, 257, 517)

    def compute():
        fc, relu = Linear(W.copy(), b.copy(), 0), ReLU()
        h = relu.forward(fc.forward(x.copy(), True), True)
        d = relu.backward(dout.copy())
        return h, d

    (h1, d1), (h2, d2) = both_ways(kernels_off, compute)
    assert same_bits(h1, h2) and same_bits(d1, d2)
    assert np.signbit(h1[h1 == 0]).sum() == 0  # max(-0.0, 0) is +0.0, as NumPy's maximum gives


@pytest.mark.parametrize("mode,keep", [("inverted", 0.5), ("inverted", 0.7), ("vanilla", 0.7)])
def test_dropout_matches_numpy_and_draws_the_same_stream(threads, kernels_off, mode, keep):
    rng = np.random.default_rng(1)
    x, dout = array(rng, 257, 517), array(rng, 257, 517)

    def compute():
        layer = Dropout(keep, np.random.default_rng(5), mode)
        out = layer.forward(x.copy(), True)
        return out, layer.mask.copy(), layer.backward(dout.copy()), layer.rng.random()

    (o1, m1, d1, next1), (o2, m2, d2, next2) = both_ways(kernels_off, compute)
    assert same_bits(o1, o2) and same_bits(m1, m2) and same_bits(d1, d2)
    assert next1 == next2  # the generator advanced by the same draws
    assert 0 < np.count_nonzero(m1) < m1.size


def test_a_uniform_draw_equal_to_the_keep_probability_drops_the_unit_as_numpy_does(kernels_off):
    """NumPy compares float32 uniforms with the float32 keep probability: 0.7 rounds down, so u = float32(0.7)
    is dropped (a float64 comparison would keep it)."""
    x = np.ones((256, 128), np.float32)

    class Fixed:
        def random(self, shape, dtype):
            return np.full(shape, np.float32(0.7), dtype)

    def compute():
        layer = Dropout(0.7, Fixed())
        return layer.forward(x.copy(), True)

    fused, plain = both_ways(kernels_off, compute)
    assert same_bits(fused, plain) and not fused.any()


def test_batchnorm_training_forward_and_backward_match_numpy(threads, kernels_off):
    rng = np.random.default_rng(2)
    with np.errstate(over="ignore"):
        x, dout = array(rng, 257, 517) * 3 + 1, array(rng, 257, 517)
    x[:, 7] = np.float32(2.5)  # a constant feature: xhat 0, inv_std 1 / sqrt(eps)

    def compute():
        bn = BatchNorm(517, 0)
        bn.gamma.value[...] = rng_gamma
        out = bn.forward(x.copy(), True)
        dx = bn.backward(dout.copy())
        return out, bn.xhat.copy(), dx, bn.gamma.grad.copy(), bn.running_var.copy()

    rng_gamma = np.random.default_rng(3).standard_normal(517, dtype=np.float32)
    fused, plain = both_ways(kernels_off, compute)
    for a, b in zip(fused, plain, strict=True):
        assert same_bits(a, b)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_step_matches_numpy(threads, kernels_off, name):
    rng = np.random.default_rng(4)
    w0 = array(rng, 700, 300)
    grads = [array(rng, 700, 300) for _ in range(3)]

    def compute():
        optimizer = build_optimizer(OptimConfig(name=name))
        p = Parameter("w", w0.copy(), "weight", 0)
        for g in grads:
            p.grad[...] = g
            optimizer.step([p], 0.05)
        return (p.value, *optimizer._state(p, *optimizer.slots))

    fused, plain = both_ways(kernels_off, compute)
    assert len(fused) == len(plain)
    for a, b in zip(fused, plain, strict=True):
        assert same_bits(a, b)


@pytest.mark.parametrize("penalties", [{"l2": 3e-3}, {"l2": 1e-4, "l1": 2e-4}])
def test_the_l2_penalty_gradient_matches_numpy(threads, kernels_off, penalties):
    """The L2 gradient goes in by the add_scaled kernel (an elastic net's L1 part stays in NumPy after it): the
    same gradient bytes and the same penalty value as `grad += strength * W`."""
    rng = np.random.default_rng(8)
    w, g = array(rng, 700, 300), array(rng, 700, 300)
    served = []
    run = cpu_kernels._run

    def compute():
        p = Parameter("w", w.copy(), "weight", 0)
        p.grad[...] = g
        regularizer = Regularizer(Strengths(penalties))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(cpu_kernels, "_run", lambda name, *args: (served.append(name), run(name, *args)))
            value = regularizer.add_penalty([p])
        return p.grad, value

    (fused_grad, fused_value), (plain_grad, plain_value) = both_ways(kernels_off, compute)
    assert served == ["add_scaled"]
    assert same_bits(fused_grad, plain_grad)
    assert fused_value == plain_value or (np.isnan(fused_value) and np.isnan(plain_value))


def test_gather_rows_matches_take_and_checks_the_range(threads):
    rng = np.random.default_rng(6)
    X = array(rng, 2000, 300)
    index = rng.permutation(2000)[:512]
    assert same_bits(gather_rows(X, index), X[index])
    with pytest.raises(IndexError):
        gather_rows(X, np.array([0, 2000] * 100, np.int64))


def test_kernels_serve_only_large_float32_contiguous_host_arrays_on_the_main_thread():
    big = np.zeros((256, 512), np.float32)
    assert cpu_kernels.usable(big)
    assert not cpu_kernels.usable(big.astype(np.float64))  # gradient checks keep NumPy
    assert not cpu_kernels.usable(np.zeros((8, 8), np.float32))
    assert not cpu_kernels.usable(big[:, ::2])
    seen = []
    thread = threading.Thread(target=lambda: seen.append(cpu_kernels.usable(big)))
    thread.start()
    thread.join()
    assert seen == [False]


@pytest.mark.parametrize("mode", ["serial", "parallel"])
def test_a_run_gives_the_same_bytes_with_and_without_the_kernels(tmp_path, monkeypatch, kernels_off, mode):
    """BatchNorm, inverted dropout and momentum on a 512-256 network, 2 threads: every kernel serves (on one
    thread, or split over both as NNRUN_NUMBA=parallel does), and the weights, buffers and metrics are
    byte-identical to the NumPy run. The kernels start unloaded, as in a fresh process: `fit` sets them up."""
    monkeypatch.setenv(cpu_kernels.ENV, "parallel" if mode == "parallel" else "1")
    monkeypatch.setattr(cpu_kernels, "_state", {"kernels": None, "tried": False, "threads": 1, "parallel": False})
    if mode == "parallel":
        monkeypatch.setattr(cpu_kernels, "PARALLEL_MIN", 0)
    calls: dict[str, int] = {}
    run = cpu_kernels._run

    def counting(name, *args):
        calls[name] = calls.get(name, 0) + 1
        run(name, *args)

    monkeypatch.setattr(cpu_kernels, "_run", counting)
    outs = {}
    for label in ("fused", "numpy"):
        if label == "numpy":
            kernels_off()
        out = tmp_path / label
        result = CliRunner().invoke(app, ["train", "configs/quickstart.yaml", "--set", "model.hidden=[512, 256]",
                                          "--set", "model.batchnorm=true", "--set", "model.dropout=0.5",
                                          "--set", "train.epochs=2", "--threads", "2", "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        with np.load(out / "model.npz") as z:
            outs[label] = {k: z[k].tobytes() for k in z.files}
        lines = (out / "metrics.jsonl").read_text().splitlines()
        outs[label]["rows"] = [{k: v for k, v in json.loads(r).items() if k != "seconds"} for r in lines]
        if label == "fused":
            assert cpu_kernels._state["parallel"] is (mode == "parallel")
            assert {"add_bias", "subtract_row", "relu", "relu_backward", "dropout", "batchnorm_normalize",
                    "batchnorm_input_grad", "add_scaled", "momentum"} <= set(calls), calls
    assert outs["fused"] == outs["numpy"]


def test_the_kernels_are_on_unless_switched_off_and_numpy_runs_where_numba_is_missing(monkeypatch):
    big = np.zeros((256, 512), np.float32)
    for value, on in ((None, True), ("1", True), ("parallel", True), ("0", False), ("off", False)):
        monkeypatch.setattr(cpu_kernels, "_state", {"kernels": None, "tried": False, "threads": 1, "parallel": False})
        if value is None:
            monkeypatch.delenv(cpu_kernels.ENV)
        else:
            monkeypatch.setenv(cpu_kernels.ENV, value)
        assert cpu_kernels.active() is on and cpu_kernels.usable(big) is on
        assert cpu_kernels._state["parallel"] is (value == "parallel")
    monkeypatch.setattr(cpu_kernels, "_state", {"kernels": None, "tried": False, "threads": 1, "parallel": False})
    monkeypatch.setenv(cpu_kernels.ENV, "1")
    monkeypatch.setitem(sys.modules, "nnrun._numba_kernels", None)  # the import fails as without numba
    assert not cpu_kernels.active()
    x = np.full((256, 512), -1.0, np.float32)
    ReLU().forward(x, True)
    assert not x.any()


def test_an_unknown_nnrun_numba_value_is_refused_before_anything_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_state", {"kernels": None, "tried": False, "threads": 1, "parallel": False})
    monkeypatch.setenv(cpu_kernels.ENV, "fast")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "configs/quickstart.yaml", "--out", str(out), "--quiet"])
    assert result.exit_code == 2 and "NNRUN_NUMBA" in result.output and "'fast'" in result.output, result.output
    assert not out.exists()
    runs = tmp_path / "runs"  # a sweep refuses it too, before any worker makes a run folder
    result = CliRunner().invoke(app, ["sweep", "configs/quickstart.yaml", "--grid", "optim.lr=0.01,0.02",
                                      "--runs-dir", str(runs), "--quiet"])
    assert result.exit_code == 2 and "NNRUN_NUMBA" in result.output, result.output
    assert not runs.exists() or not any(runs.iterdir())


def test_warm_sets_numba_up_only_where_a_kernel_will_serve(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_state", {"kernels": None, "tried": False, "threads": 1, "parallel": False})
    class DeviceArray:  # a GPU array as usable() sees it: large float32, not a NumPy array
        dtype, size = np.dtype(np.float32), 1 << 20

    cpu_kernels.warm(np.zeros((8, 8), np.float32), np.zeros((256, 512), np.float64), DeviceArray())
    assert not cpu_kernels._state["tried"]  # small, float64 or GPU arrays: numba is not even looked for
    cpu_kernels.warm(np.zeros((8, 8), np.float32), np.zeros((256, 512), np.float32))
    assert cpu_kernels._state["kernels"] is not None
    monkeypatch.setattr(cpu_kernels, "_state", {"kernels": None, "tried": False, "threads": 1, "parallel": False})
    monkeypatch.setenv(cpu_kernels.ENV, "0")
    cpu_kernels.warm(np.zeros((256, 512), np.float32))  # switched off: nothing to set up, nothing raised
    assert cpu_kernels._state["tried"] and cpu_kernels._state["kernels"] is None


def test_forward_passes_alone_never_load_numba_and_a_training_loop_sets_the_kernels_up():
    """`nnrun predict` and `nnrun evaluate` run a forward pass or two: numba's set-up (0.7 s, 100 MB) would
    cost more than it saves, so only `fit` (through `warm`) loads it; the bytes are the same either way."""
    code = (
        "import sys, numpy as np\n"
        "from nnrun import cpu_kernels\n"
        "from nnrun.nn.layers import Linear, ReLU\n"
        "rng = np.random.default_rng(0)\n"
        "layer = Linear(rng.standard_normal((64, 512), dtype=np.float32), np.ones(512, np.float32), 0)\n"
        "x = rng.standard_normal((256, 64), dtype=np.float32)\n"
        "forward = lambda: ReLU().forward(layer.forward(x, False), False)\n"
        "before = forward()\n"
        "print('numba' in sys.modules, cpu_kernels.usable(before))\n"
        "cpu_kernels.warm(np.zeros((256, 512), np.float32))\n"
        "print('numba' in sys.modules, cpu_kernels.usable(before))\n"
        "print(np.array_equal(before, forward()))\n")
    env = {k: v for k, v in os.environ.items() if k != cpu_kernels.ENV}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["False False", "True True", "True"], proc.stdout
