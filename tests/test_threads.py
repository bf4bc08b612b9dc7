"""Threads: the blocked element-wise fast paths compute what whole-array NumPy computes, results do not
depend on the thread count, and the thread policy never oversubscribes."""

import json
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from nnrun import parallel, workers
from nnrun.cli import app
from nnrun.config import OptimConfig
from nnrun.errors import UserInputError
from nnrun.experiment import build_optimizer
from nnrun.nn.layers import Parameter
from nnrun.optim import OPTIMIZERS
from nnrun.parallel import gather_rows, run_blocks


def test_blocks_cover_every_row_once():
    blocks = parallel.row_blocks(1000, 4 * 3072)
    assert blocks[0].start == 0 and blocks[-1].stop == 1000
    assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:], strict=False))
    assert all(s.stop - s.start <= max(1, parallel.BLOCK_BYTES // (4 * 3072)) for s in blocks)


def test_run_blocks_equals_the_whole_array_operation():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((700, 513), dtype=np.float32)
    b = rng.standard_normal((700, 513), dtype=np.float32)
    expected = a.copy()
    expected *= np.float32(0.9)
    expected -= b
    got = a.copy()

    def op(x, y):
        x *= np.float32(0.9)
        x -= y

    run_blocks([(op, (got, b))])
    assert got.tobytes() == expected.tobytes()


def test_gather_rows_equals_fancy_indexing():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((5000, 300), dtype=np.float32)
    idx = rng.permutation(5000)[:1200]
    assert gather_rows(X, idx).tobytes() == X[idx].tobytes()
    buf = np.empty((1200, 300), np.float32)
    assert gather_rows(X, idx, buf) is buf and buf.tobytes() == X[idx].tobytes()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_blocked_optimizer_steps_equal_whole_array_arithmetic(name):
    """The update of a large parameter, in blocks on the pool, against the same formulas on whole arrays."""
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((800, 400), dtype=np.float32)
    grads = [rng.standard_normal((800, 400), dtype=np.float32) for _ in range(3)]
    p = Parameter("w", w0.copy(), "weight", 0)
    optimizer = build_optimizer(OptimConfig(name=name))
    reference = build_optimizer(OptimConfig(name=name))
    q = Parameter("w", w0.copy(), "weight", 0)
    for g in grads:
        p.grad[...] = g
        optimizer.step([p], 0.05)
        q.grad[...] = g
        # the same rule applied to the whole arrays in one call
        reference.t = getattr(reference, "t", 0) + (1 if hasattr(reference, "t") else 0)
        reference.update(q.value, q.grad, *reference._state(q, *reference.slots), lr=0.05)
    assert p.value.tobytes() == q.value.tobytes()


def blas_products_depend_on_threads() -> bool:
    """Whether this BLAS's float32 products differ in their last bits between 1 and 2 threads (OpenBLAS's Haswell
    kernel on AMD EPYC machines: its 2-thread partition sums some entries in another order)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 512), dtype=np.float32), rng.standard_normal((512, 256), dtype=np.float32)
    with threadpool_limits(1):
        one = a @ b
    with threadpool_limits(2):
        two = a @ b
    return not np.array_equal(one, two)


def test_a_run_is_bit_identical_with_one_or_two_threads(tmp_path):
    """nnrun's own element-wise work is exact in blocks (tests above), so a run's bytes depend on the thread count
    only through the BLAS: bit for bit where its products do not, to float32 rounding where they do."""
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"t{n}"
        result = CliRunner().invoke(app, ["train", "configs/quickstart.yaml", "--set", "model.hidden=[512, 256]",
                                          "--set", "train.epochs=2", "--threads", str(n), "--out", str(out),
                                          "--quiet"])
        assert result.exit_code == 0, result.output
        with np.load(out / "model.npz") as z:
            outs[n] = {k: z[k].tobytes() for k in z.files}
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        outs[n]["rows"] = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    if not blas_products_depend_on_threads():
        assert outs[1] == outs[2]
        return
    for key, value in outs[1].items():
        if key != "rows":
            np.testing.assert_allclose(np.frombuffer(outs[2][key], np.float32), np.frombuffer(value, np.float32),
                                       rtol=1e-4, atol=1e-6, err_msg=key)
    for one, two in zip(outs[1]["rows"], outs[2]["rows"], strict=True):
        assert one.keys() == two.keys()
        for k, v in one.items():
            assert two[k] == pytest.approx(v, rel=1e-4, abs=2e-3), k  # accuracies: an example may flip


def test_requested_threads_reads_the_option_then_the_environment(monkeypatch):
    monkeypatch.setattr(workers, "available_cores", lambda: 4)
    monkeypatch.delenv(workers.THREADS_ENV, raising=False)
    assert workers.requested_threads(None) is None and workers.requested_threads(3) == 3
    monkeypatch.setenv(workers.THREADS_ENV, "2")
    assert workers.requested_threads(None) == 2 and workers.requested_threads(1) == 1
    monkeypatch.setenv(workers.THREADS_ENV, "many")
    with pytest.raises(UserInputError, match="NNRUN_THREADS"):
        workers.requested_threads(None)
    with pytest.raises(UserInputError, match="between 1 and the 4"):
        workers.requested_threads(5)


def test_the_policy_leaves_busy_cores_to_others_and_small_models_one_thread(monkeypatch):
    monkeypatch.setattr(workers, "available_cores", lambda: 8)
    monkeypatch.setattr(workers, "_runnable_tasks", lambda: (4, 1))  # 3 runnable tasks of other processes
    assert workers.choose_threads(None, 1e9).threads == 5
    assert workers.choose_threads(None, 1e5).threads == 1  # too small to gain from a second thread
    assert workers.choose_threads(6, 1e5).threads == 6  # asked for
    monkeypatch.setattr(workers, "_runnable_tasks", lambda: (40, 1))
    assert workers.choose_threads(None, 1e9).threads == 1  # at least one
    monkeypatch.setattr(workers, "_runnable_tasks", lambda: (1, 1))
    choice = workers.choose_threads(None, 1e9)
    assert choice.threads == 8 and "free" in choice.reason


def blas_threads() -> int:
    """The thread count of the process's BLAS (the first library threadpoolctl reports)."""
    from threadpoolctl import threadpool_info

    return next(info["num_threads"] for info in threadpool_info() if info.get("num_threads"))


def test_the_policy_counts_again_between_epochs(monkeypatch):
    monkeypatch.setattr(workers, "available_cores", lambda: 4)
    load = {"tasks": (1, 1)}
    monkeypatch.setattr(workers, "_runnable_tasks", lambda: load["tasks"])
    before = blas_threads()
    with workers.ThreadPolicy(None, 1e9) as policy:
        assert policy.choice.threads == 4 and blas_threads() == 4
        load["tasks"] = (6, 4)  # our 4 threads and 2 of another process
        policy.adapt()
        assert policy.choice.threads == 2 and blas_threads() == 2
    with workers.ThreadPolicy(3, 1e9) as fixed:
        load["tasks"] = (9, 1)
        fixed.adapt()
        assert fixed.choice.threads == 3 and blas_threads() == 3  # asked for: never changed
    assert blas_threads() == before


def test_use_threads_sets_blas_alone_and_restores_it():
    from nnrun.workers import use_threads

    before = blas_threads()
    with use_threads(3):
        assert blas_threads() == 3
        assert not any(t.name.startswith("nnrun-elementwise") for t in threading.enumerate())
    assert blas_threads() == before
