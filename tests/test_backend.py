"""The array-module backend: one code path on NumPy or CuPy, and the GPU path exercised without a GPU.

Three kinds of test run here, in CI without a GPU:
- the device choice and its refusals (no CuPy, no GPU, too little GPU memory): exit 2, a message;
- the namespace contract: every layer, loss, penalty and optimizer computes with only the names
  `nnrun.backend.ARRAY_FUNCTIONS` lists, on the module of its arrays (run against a namespace
  that offers those alone, and read from the source for direct NumPy calls);
- the GPU path itself, against `tests/fake_cupy.py` (NumPy dressed as CuPy, as strict as CuPy
  about host/device mixing): the fused kernels' formulas, whole training runs, resume, gradient
  checks, preprocessing and the run directory a GPU run leaves.
tests/test_gpu.py does the same on a real GPU where there is one.
"""

import ast
import inspect
import json
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun import backend, optim
from nnrun.augment import Augmentation
from nnrun.backend import ARRAY_FUNCTIONS, CUPY_INSTALL, device_module
from nnrun.cli import app
from nnrun.config import load_config
from nnrun.errors import RunFailed, UserInputError
from nnrun.nn import kernels, layers, losses, regularizers
from nnrun.nn.layers import ACTIVATIONS, BatchNorm, Dropout, Linear
from nnrun.nn.losses import LOSSES, BinnedRegression, HierarchicalSoftmax, SoftmaxCrossEntropy, Targets
from nnrun.nn.model import build_mlp
from nnrun.nn.regularizers import Regularizer, Strengths
from nnrun.optim import OPTIMIZERS
from tests import fake_cupy

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["train.epochs=3", "model.hidden=[32, 16]", "train.eval_train_size=300"]
TIMING = {"seconds"}


# ---- choosing the device --------------------------------------------------------------------------

def test_cpu_is_numpy_and_an_unknown_device_is_refused():
    assert device_module("cpu") is np
    with pytest.raises(UserInputError, match="train.device must be one of cpu, gpu"):
        device_module("tpu")


def test_gpu_without_cupy_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    with pytest.raises(UserInputError, match="needs CuPy") as e:
        device_module("gpu")
    assert CUPY_INSTALL in str(e.value)


def test_gpu_with_cupy_but_no_device_says_so(monkeypatch):
    fake_cupy.install(monkeypatch, devices=0)
    with pytest.raises(UserInputError, match="this machine has no GPU"):
        device_module("gpu")
    broken = fake_cupy.install(monkeypatch)

    def no_driver():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    broken.cuda.runtime.getDeviceCount = no_driver
    with pytest.raises(UserInputError, match="finds no usable GPU .*no CUDA-capable device"):
        device_module("gpu")


def test_cli_device_gpu_without_cupy_exits_2_and_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cupy", None)
    result = CliRunner().invoke(app, ["train", str(ROOT / "configs/quickstart.yaml"), "--device", "gpu",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "pip install 'nnrun[gpu]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(app, ["train", str(ROOT / "configs/quickstart.yaml"), "--device", "tpu",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "train.device" in result.output


def test_a_model_too_big_for_the_gpu_is_refused_before_training(monkeypatch, tmp_path):
    fake_cupy.install(monkeypatch, free_bytes=1 << 20)
    with pytest.raises(UserInputError, match="GPU memory.*train.device: cpu"):
        train(tmp_path / "run", "gpu")
    assert not (tmp_path / "run").exists()


# ---- the namespace contract -----------------------------------------------------------------------

class Restricted(types.ModuleType):
    """NumPy offering only `ARRAY_FUNCTIONS` (and, like CuPy, an `einsum` without `out=`); records what is used."""

    def __init__(self) -> None:
        super().__init__("restricted")
        self.used: set[str] = set()

    def __getattr__(self, name: str):
        if name not in ARRAY_FUNCTIONS:
            raise AttributeError(f"{name!r} is not in nnrun.backend.ARRAY_FUNCTIONS")
        self.used.add(name)
        if name == "einsum":
            def einsum(*operands, **kwargs):
                if "out" in kwargs:
                    raise TypeError("CuPy's einsum takes no out=: use nnrun.backend.einsum")
                return np.einsum(*operands, **kwargs)
            return einsum
        return getattr(np, name)


def compute_everything(seed: int = 0) -> dict[str, np.ndarray]:
    """Run every layer (forward and backward, train and eval), loss, penalty and optimizer on small arrays;
    return what they produced."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    x = rng.standard_normal((6, 5), dtype=np.float32)
    for name, cls in ACTIVATIONS.items():
        layer = cls()
        a = layer.forward(x.copy(), train=True)
        out[f"{name}.forward"] = a.copy()
        out[f"{name}.backward"] = layer.backward(np.ones_like(x)).copy()
    for train in (True, False):
        bn = BatchNorm(5, 0)
        out[f"bn{train}.forward"] = bn.forward(x.copy(), train).copy()
        out[f"bn{train}.backward"] = bn.backward(np.ones_like(x))
        for mode in ("inverted", "vanilla"):
            drop = Dropout(0.7, np.random.default_rng(1), mode)
            out[f"dropout{mode}{train}"] = drop.forward(x.copy(), train).copy()
            out[f"dropout{mode}{train}.backward"] = drop.backward(np.ones_like(x)).copy()
    linear = Linear(rng.standard_normal((5, 3), dtype=np.float32), np.zeros(3, np.float32), 0)
    out["linear.forward"] = linear.forward(x, True).copy()
    out["linear.backward"] = linear.backward(np.ones((6, 3), np.float32))
    scores = rng.standard_normal((6, 4), dtype=np.float32)
    labels = rng.integers(0, 4, 6)
    attributes = rng.integers(0, 2, (6, 4))
    targets = rng.standard_normal((6, 4)).astype(np.float32)
    for name, cls in LOSSES.items():
        if cls is HierarchicalSoftmax:
            loss, y, s = HierarchicalSoftmax.balanced(5), labels, scores
        elif cls.target_kind == "classes":
            loss, y, s = cls.create(Targets(list("abcd"), labels, "t")), labels, scores
        elif cls.target_kind == "attributes":
            loss, y, s = cls.create(Targets(list("abcd"), attributes, "t")), attributes, scores
        else:
            loss, y, s = cls.create(Targets(list("abcd"), targets, "t")).fit(targets), targets, scores
        value, grad = loss.loss_and_grad(s.copy(), y)
        out[f"loss.{name}"] = np.array([value, *grad.ravel()])
    value, grad = SoftmaxCrossEntropy(label_smoothing=0.1).loss_and_grad(scores.copy(), labels)
    out["loss.softmax_smoothed"] = np.array([value, *grad.ravel()])
    binned = BinnedRegression.create(Targets(["t"], targets[:, :1], "t"), bins=3,
                                     inner=lambda t: SoftmaxCrossEntropy.create(t))
    value, grad = binned.loss_and_grad(scores[:, :3].copy(), targets[:, :1])
    out["loss.binned"] = np.array([value, *grad.ravel()])
    for name, cls in OPTIMIZERS.items():
        model = build_mlp([(rng.standard_normal((5, 4), dtype=np.float32), np.zeros(4, np.float32)),
                           (rng.standard_normal((4, 3), dtype=np.float32), np.zeros(3, np.float32))],
                          activation=ACTIVATIONS["relu"])
        reg = Regularizer(Strengths({"l2": 0.01, "l1": 0.001}, max_norm=1.0), regularize_bias=True)
        optimizer = cls()
        for step in range(3):
            scores = model.forward(x, train=True)
            _, dscores = SoftmaxCrossEntropy().loss_and_grad(scores, labels % 3)
            model.backward(dscores)
            out[f"{name}.penalty{step}"] = np.array([reg.add_penalty(model.params)])
            optimizer.step(model.params, 0.1)
            reg.project(model.params)
        for p in model.params:
            out[f"{name}.{p.name}"] = p.value.copy()
    return out


def test_the_compute_code_uses_only_the_listed_names_of_the_array_module(monkeypatch):
    expected = compute_everything()
    restricted = Restricted()
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("nnrun") and hasattr(module, "xp_of"):
            monkeypatch.setattr(module, "xp_of", lambda *arrays: restricted)
    got = compute_everything()
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert {"exp", "matmul", "maximum", "sqrt", "sum", "tanh"} <= restricted.used  # it did go through xp


TRAINING_PATH = [
    *(getattr(cls, m) for cls in (*ACTIVATIONS.values(), Linear, BatchNorm, Dropout)
      for m in ("forward", "backward") if m in vars(cls)),
    *(cls.loss_and_grad for cls in (*LOSSES.values(), BinnedRegression) if "loss_and_grad" in vars(cls)),
    losses.sigmoid, losses.softplus, losses.MulticlassSVM._terms, losses.RegressionLoss._scaled,
    BinnedRegression.to_bins,
    *(cls.update for cls in OPTIMIZERS.values()), *(cls.fused_scalars for cls in OPTIMIZERS.values()),
    regularizers.l2_penalty, regularizers.l1_penalty, regularizers.max_norm_project, optim.decay_weights,
    Augmentation.__call__, Augmentation._pad,
]
HOST_ONLY = {"ndarray", "dtype", "float32", "float64", "int64", "random"}
"""`np.NAME` a training-path function may name: types and dtypes (not functions on arrays)."""
HOST_DRAWS = {"zeros", "flatnonzero"}
"""What the augmentation may also name: its draws live on the host (zeros for no draws, the picked examples of a
host mask), and go to the batch's device before they touch it."""


@pytest.mark.parametrize("function", TRAINING_PATH, ids=lambda f: f.__qualname__)
def test_training_path_functions_call_no_numpy_function_directly(function):
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    direct = {node.attr for node in ast.walk(tree)
              if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "np"}
    allowed = HOST_ONLY | (HOST_DRAWS if function is Augmentation.__call__ else set())
    assert direct <= allowed, f"{function.__qualname__} calls numpy directly: {sorted(direct - allowed)}"


# ---- the GPU path on the fake ---------------------------------------------------------------------

@pytest.fixture
def gpu(monkeypatch):
    """The fake CuPy, installed for this test (tests/test_gpu.py runs the tests below with the real one)."""
    return fake_cupy.install(monkeypatch)


@pytest.fixture
def run_rtol():
    """How close a GPU run's metrics are to the CPU run's: the fake computes exactly as NumPy does, so only
    the loss kernel's arithmetic differs (a real GPU sums in other orders: tests/test_gpu.py allows more)."""
    return 1e-4


@pytest.mark.parametrize("rule", sorted(kernels.UPDATES))
def test_fused_update_kernels_compute_each_rule(gpu, rule):
    cls = OPTIMIZERS[rule]
    rng = np.random.default_rng(2)
    w = rng.standard_normal((7, 3)).astype(np.float32)
    grads = [rng.standard_normal((7, 3)).astype(np.float32) for _ in range(4)]
    cpu, dev = cls(), cls()
    p_cpu = layers.Parameter("w", w.copy(), "weight", 0)
    p_dev = layers.Parameter("w", gpu.asarray(w), "weight", 0)
    for g in grads:
        p_cpu.grad[...] = g
        p_dev.grad = gpu.asarray(g)
        cpu.step([p_cpu], 0.05)
        dev.step([p_dev], 0.05)
    assert backend.is_device_array(p_dev.value)
    np.testing.assert_allclose(p_dev.value.get(), p_cpu.value, rtol=1e-5, atol=1e-6)
    for slot in cls.slots:
        np.testing.assert_allclose(dev.state["w"][slot].get(), cpu.state["w"][slot], rtol=1e-5, atol=1e-6)


def test_fused_relu_dropout_and_softmax_kernels(gpu):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 5)).astype(np.float32)
    d = rng.standard_normal((8, 5)).astype(np.float32)
    got = kernels.relu_backward(gpu.asarray(x), gpu.asarray(d)).get()
    np.testing.assert_array_equal(got, d * (x > 0))
    uniform = rng.random((8, 5), dtype=np.float32)
    mask, out = kernels.dropout(gpu.asarray(x), gpu.asarray(uniform), 0.6, 1 / 0.6)
    np.testing.assert_array_equal(mask.get(), (uniform < 0.6) * np.float32(1 / 0.6))
    np.testing.assert_allclose(out.get(), x * mask.get())
    for dtype, smoothing in ((np.float32, 0.0), (np.float64, 0.0), (np.float32, 0.1)):
        scores, y = x.astype(dtype), rng.integers(0, 5, 8)
        loss, grad = kernels.softmax_xent(gpu.asarray(scores), gpu.asarray(y), smoothing)
        ref_loss, ref_grad = SoftmaxCrossEntropy(label_smoothing=smoothing).loss_and_grad(scores.copy(), y)
        assert grad.dtype == dtype and float(loss) == pytest.approx(ref_loss, rel=1e-5)
        np.testing.assert_allclose(grad.get(), ref_grad, rtol=1e-5, atol=1e-7)


def test_the_fake_refuses_host_device_mixing(gpu):
    """What makes the fake worth trusting: NumPy functions refuse its arrays, as CuPy's arrays refuse them,
    and so do operators given a host array beside a GPU one."""
    with pytest.raises(TypeError, match="implicit conversion"):
        np.concatenate([gpu.asarray(np.ones(2)), np.ones(2)])
    with pytest.raises(TypeError, match="host"):
        gpu.asarray(np.ones(2)) + np.ones(2)
    assert backend.is_device_array(gpu.asarray(np.ones(2)) * np.float32(2))  # scalars pass, as in CuPy


def test_the_fake_indexes_like_cupy_a_0d_view_and_0d_results():
    """CuPy's `a[i]` is a 0-d array viewing the entry, so `old = a[i]; a[i] = old + h` changes `old` too (the
    gradient check bug a real GPU showed); full reductions are 0-d device arrays, not host scalars."""
    cupy = fake_cupy.make_module()
    a = cupy.asarray(np.array([1.0, 2.0]))
    old = a[0]
    a[0] = old + 0.5
    assert float(old) == 1.5 and backend.is_device_array(old)
    assert backend.is_device_array(a.sum()) and backend.is_device_array(cupy.vdot(a, a))


def train(out, device, *sets, config="configs/quickstart.yaml"):
    from nnrun.train import train_new

    return train_new(load_config(ROOT / config, [*QUICK, f"train.device={device}", *sets]), out=out)


def metrics(run):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("sets", [
    [],
    ["model.batchnorm=true", "model.dropout=0.7", "regularization.max_norm=3", "optim.name=adam",
     "optim.lr=0.003"],
    ["loss.name=svm", "regularization.l1=0.0001", "optim.name=nesterov", "preprocess.scale=std"],
    ["preprocess.pca=20", "preprocess.whiten=true", "loss.name=hierarchical_softmax", "optim.name=rmsprop",
     "optim.lr=0.001"],
    ["augment.flip=true", "augment.translate=1", "loss.label_smoothing=0.1", "optim.name=adamw",
     "optim.weight_decay=0.01", "optim.lr=0.003", "optim.schedule=one_cycle", "optim.warmup_epochs=1"],
    ["preprocess.whiten=zca", "preprocess.eps=0.1", "augment.flip=true", "optim.name=sgdw",
     "optim.weight_decay=0.001"],
], ids=["momentum", "bn_dropout_adam_maxnorm", "svm_l1_nesterov", "whiten_hierarchical_rmsprop",
        "augment_smoothing_adamw_onecycle", "zca_flip_sgdw"])
def test_a_gpu_run_matches_the_cpu_run(gpu, run_rtol, tmp_path, sets):
    """Same config on the (fake) GPU and on the CPU: the same data, weights and steps, to float32 rounding
    (dropout masks come from the GPU's generator, so with dropout only the trend is compared)."""
    cpu_summary = train(tmp_path / "cpu", "cpu", *sets)
    gpu_summary = train(tmp_path / "gpu", "gpu", *sets)
    assert gpu_summary["status"] == "completed"
    cpu_rows, gpu_rows = metrics(tmp_path / "cpu"), metrics(tmp_path / "gpu")
    assert len(cpu_rows) == len(gpu_rows) == 3
    if any("dropout" in s for s in sets):
        assert gpu_rows[-1]["train_loss"] < gpu_rows[0]["train_loss"]
        assert abs(gpu_summary["test_accuracy"] - cpu_summary["test_accuracy"]) < 0.1
    else:
        for c, g in zip(cpu_rows, gpu_rows, strict=True):
            for key in c:
                assert g[key] == pytest.approx(c[key], rel=run_rtol, abs=run_rtol / 10), key
    with np.load(tmp_path / "gpu" / "model.npz") as z:  # written from host copies, like any run
        assert all(type(z[k]) is np.ndarray and z[k].dtype == np.float32 for k in z.files)


def test_a_gpu_run_is_deterministic_and_resumes_exactly(gpu, tmp_path):
    from nnrun.train import resume_run

    sets = ["model.batchnorm=true", "model.dropout=0.7"]
    train(tmp_path / "a", "gpu", *sets)
    train(tmp_path / "b", "gpu", *sets)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    train(tmp_path / "c", "gpu", *sets, "train.epochs=1")
    resume_run(tmp_path / "c", ["train.epochs=3"])
    assert metrics(tmp_path / "c") == metrics(tmp_path / "a")
    with np.load(tmp_path / "a" / "model.npz") as a, np.load(tmp_path / "c" / "model.npz") as c:
        for key in a.files:
            np.testing.assert_array_equal(a[key], c[key])


@pytest.mark.parametrize("sets", [
    ["optim.schedule=cosine"],
    ["model.batchnorm=true", "model.dropout=0.7", "regularization.max_norm=3", "optim.name=adam", "optim.lr=0.003",
     "regularization.l2=0.001", "regularization.l1=0.0001"],
    ["augment.flip=true", "augment.translate=1", "augment.padding=reflect", "preprocess.scale=std",
     "loss.label_smoothing=0.1", "optim.name=adamw", "optim.weight_decay=0.01", "optim.lr=0.003",
     "optim.schedule=one_cycle", "model.dropout=0.8"],
], ids=["momentum_cosine", "bn_dropout_adam_penalties", "augment_adamw_onecycle"])
def test_a_captured_gpu_run_gives_the_bytes_of_the_uncaptured_run(gpu, tmp_path, sets):
    """The step recorded once as a CUDA graph and replayed (the default) against every kernel launched each step:
    the same launches, so the same metrics and weights, with learning rates, Adam's counts, dropout masks and
    augmentation moves that change every step or epoch (a value baked into the recording would show here)."""
    captured = train(tmp_path / "graph", "gpu", *sets)
    launched = train(tmp_path / "eager", "gpu", *sets, "train.cuda_graph=false")
    assert captured["step_path"] == "cuda graph"
    assert launched["step_path"].startswith("uncaptured (train.cuda_graph: false")
    assert metrics(tmp_path / "graph") == metrics(tmp_path / "eager")
    with np.load(tmp_path / "graph" / "model.npz") as a, np.load(tmp_path / "eager" / "model.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_step_that_needs_the_host_runs_uncaptured_with_the_same_results(gpu, tmp_path, monkeypatch):
    """A step that reads a value back cannot be recorded: the run goes on launching kernels, says why, and
    trains exactly as the uncaptured run."""
    launched = train(tmp_path / "eager", "gpu", "train.cuda_graph=false")
    original = SoftmaxCrossEntropy.loss_and_grad

    def reads_back(self, scores, y):
        loss, dscores = original(self, scores, y)
        float(loss)  # a host read: refused while recording, as CUDA refuses it
        return loss, dscores

    monkeypatch.setattr(SoftmaxCrossEntropy, "loss_and_grad", reads_back)
    fallback = train(tmp_path / "fallback", "gpu")
    assert fallback["step_path"].startswith("uncaptured (recording the step failed")
    from nnrun.progress import run_line

    assert "GPU step: uncaptured (recording the step failed: RuntimeError" in run_line(fallback)
    assert metrics(tmp_path / "fallback") == metrics(tmp_path / "eager")
    assert launched["test_loss"] == fallback["test_loss"]


def test_the_fake_records_a_capture_and_replays_it_with_the_recorded_values():
    """What makes the captured-run tests above mean something without a GPU: a capture runs nothing, a replay
    repeats the recorded work with the host values of the recording, and host reads are refused meanwhile."""
    cupy = fake_cupy.make_module()
    a = cupy.zeros(3, dtype=cupy.float32)
    step = 1.5
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        a += step
        b = a * 2
        with pytest.raises(RuntimeError, match="capturing"):
            float(a[0])
        graph = stream.end_capture()
    assert a.get().tolist() == [0, 0, 0]
    step = 10.0
    graph.launch(stream)
    graph.launch(stream)
    assert a.get().tolist() == [3, 3, 3] and b.get().tolist() == [6, 6, 6] and step == 10.0


def test_the_gpu_augmentation_kernel_moves_images_as_the_cpu_augmentation(gpu):
    rng = np.random.default_rng(5)
    n, shape = 9, (3, 6, 5)
    X = rng.standard_normal((n, 90)).astype(np.float32)
    scale, shift = rng.uniform(0.5, 2, 90).astype(np.float32), rng.standard_normal(90).astype(np.float32)
    for padding, affine in (("zero", None), ("reflect", (scale, shift)), ("zero", (scale, shift))):
        aug = Augmentation(shape, flip=True, translate=2, padding=padding, pixel_affine=affine)
        want = aug(X.copy(), np.random.default_rng(1))
        flips, shifts = aug.draws(n, np.random.default_rng(1))
        moves = np.column_stack([flips, shifts[0], shifts[1]]).astype(np.int32)
        order = rng.permutation(n)
        X_sorted = np.empty_like(X)
        X_sorted[order] = X  # so that gathering by `order` gives X's rows in X's order
        out = gpu.empty((n, 90), dtype=gpu.float32)
        device_affine = tuple(gpu.asarray(a) for a in aug.pixel_affine) if affine is not None else None
        kernels.augment_rows(gpu.asarray(X_sorted), gpu.asarray(order), gpu.asarray(moves),
                             gpu.asarray(np.array([0, 0])), n, shape, padding == "reflect", device_affine, out)
        np.testing.assert_allclose(out.get(), want, rtol=1e-5, atol=1e-5, err_msg=f"{padding} {affine is not None}")


def test_counter_based_dropout_masks(gpu):
    """Masks from (key, global step, layer, element): the keep rate p, the same for the same counters, fresh for
    another step, layer or key."""
    x = gpu.asarray(np.ones((200, 500), dtype=np.float32))
    counters = gpu.asarray(np.array([3, 7]))

    def mask(key=11, layer=0, step=7):
        counters[1] = step
        return kernels.dropout_counter(x, counters, key, layer, 0.3, 1 / 0.3)[0].get()

    first = mask()
    assert set(np.unique(first).tolist()) == {0.0, np.float32(1 / 0.3)}
    assert abs((first > 0).mean() - 0.3) < 0.005
    np.testing.assert_array_equal(first, mask())
    for other in (mask(step=8), mask(layer=1), mask(key=12)):
        assert 0.05 < ((first > 0) != (other > 0)).mean() < 0.6  # independent masks differ on 2 p (1 - p) = 42 %
    _, out = kernels.dropout_counter(gpu.asarray(np.full((4, 5), 2, np.float32)), counters, 11, 0, 0.5, 2.0)
    assert set(np.unique(out.get()).tolist()) <= {0.0, 4.0}


def test_fused_batchnorm_matches_the_cpu_layer(gpu):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((64, 12)) * 3 + 1).astype(np.float32)
    dout = rng.standard_normal((64, 12)).astype(np.float32)
    cpu, dev = BatchNorm(12, 0), BatchNorm(12, 0)
    gamma = rng.uniform(0.5, 1.5, 12).astype(np.float32)
    cpu.gamma.value[...] = gamma
    dev.to(gpu)
    dev.gamma.value[...] = gpu.asarray(gamma)
    for _ in range(2):
        want = cpu.forward(x.copy(), train=True)
        got = dev.forward(gpu.asarray(x), train=True)
        np.testing.assert_allclose(got.get(), want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dev.backward(gpu.asarray(dout)).get(), cpu.backward(dout.copy()), rtol=1e-4,
                                   atol=1e-5)
    for name in ("gamma", "beta"):
        np.testing.assert_allclose(getattr(dev, name).grad.get(), getattr(cpu, name).grad, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dev.running_mean.get(), cpu.running_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dev.running_var.get(), cpu.running_var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", sorted(OPTIMIZERS))
def test_update_kernels_reading_a_step_table_match_the_cpu_rules(gpu, rule):
    """`step_scalars` filled into a device table, `step_from_table` reading row `counters[0]`: the CPU's steps,
    learning rate changing every step, decoupled weight decay where the rule has it."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    cpu, dev = OPTIMIZERS[rule](), OPTIMIZERS[rule]()
    cpu.weight_decay = dev.weight_decay = 0.1 if rule in ("adamw", "sgdw") else 0.0
    p_cpu = layers.Parameter("w", w.copy(), "weight", 0)
    p_dev = layers.Parameter("w", gpu.asarray(w), "weight", 0)
    rates = [0.05, 0.02, 0.01]
    table = gpu.asarray(np.array([dev.step_scalars(lr) for lr in rates], dtype=np.float32))
    counters = gpu.asarray(np.array([0, 0]))
    for k, lr in enumerate(rates):
        g = rng.standard_normal((6, 4)).astype(np.float32)
        p_cpu.grad[...] = g
        p_dev.grad = gpu.asarray(g)
        cpu.step([p_cpu], lr)
        counters[0] = k
        dev.step_from_table([p_dev], table, counters)
    np.testing.assert_allclose(p_dev.value.get(), p_cpu.value, rtol=1e-5, atol=1e-6)


def test_a_cpu_run_resumes_on_the_gpu(gpu, run_rtol, tmp_path):
    from nnrun.train import resume_run

    train(tmp_path / "cpu", "cpu", "train.epochs=1")
    summary = resume_run(tmp_path / "cpu", ["train.epochs=3", "train.device=gpu"])
    train(tmp_path / "ref", "cpu")
    assert summary["status"] == "completed"
    for c, g in zip(metrics(tmp_path / "ref"), metrics(tmp_path / "cpu"), strict=True):
        assert g["val_loss"] == pytest.approx(c["val_loss"], rel=run_rtol)


def test_a_diverging_gpu_run_names_the_batch_and_keeps_its_last_good_epoch(gpu, tmp_path):
    with pytest.raises(RunFailed, match=r"loss became (nan|inf) in epoch 1, batch \d+"):
        train(tmp_path / "run", "gpu", "optim.lr=1e6", "train.epochs=3")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


def test_evaluate_and_predict_read_a_gpu_run_like_any_other(gpu, tmp_path):
    train(tmp_path / "run", "gpu")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "run"), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    # evaluate recomputes on the CPU (docs/gpu.md): the GPU's metrics within float32 rounding, not bit for bit
    got = json.loads(result.stdout)["metrics"]
    assert got["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    n_test = summary["n_test"]
    assert abs(got["accuracy"] - summary["test_accuracy"]) <= 1 / n_test + 1e-12
    from nnrun.experiment import load_run

    run = load_run(tmp_path / "run")
    X, y = run.load_split("test")
    assert run.score(X, y)["accuracy"] == got["accuracy"]


def test_gradcheck_on_the_gpu_in_float64(gpu, tmp_path):
    from nnrun.gradcheck import gradcheck

    for sets in (["model.batchnorm=true", "model.dropout=0.7", "regularization.max_norm=2"],
                 ["loss.name=svm", "regularization.l1=0.001"], ["loss.name=hierarchical_softmax"]):
        cfg = load_config(ROOT / "configs/quickstart.yaml", [*QUICK, "train.device=gpu", *sets])
        result = gradcheck(cfg, max_entries=20)
        assert result["passed"], result


def test_preprocessing_fitted_on_the_gpu_matches_the_cpu_fit(gpu):
    from nnrun.preprocess import Preprocessor, PreprocessSettings

    rng = np.random.default_rng(4)
    X = (rng.standard_normal((500, 12)) @ rng.standard_normal((12, 12))).astype(np.float32)
    for settings in (PreprocessSettings(pca=5, whiten=True, eps=1e-5), PreprocessSettings(scale="std"),
                     PreprocessSettings(center="global", scale="minmax")):
        cpu = Preprocessor(settings).fit(X)
        dev = Preprocessor(settings).fit(X, xp=gpu)
        for name in ("mean", "std", "min", "max"):
            if getattr(cpu, name) is not None:
                np.testing.assert_allclose(getattr(dev, name), getattr(cpu, name), rtol=1e-6, err_msg=name)
        if cpu.eigenvalues is not None:
            np.testing.assert_allclose(dev.eigenvalues, cpu.eigenvalues, rtol=1e-6)
            np.testing.assert_allclose(dev.components, cpu.components, atol=1e-5)  # same sign convention
        on_device = dev.transform(gpu.asarray(X))
        assert backend.is_device_array(on_device)
        np.testing.assert_allclose(on_device.get(), cpu.transform(X), rtol=1e-4, atol=1e-4)
