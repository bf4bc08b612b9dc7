"""Sweeps that share a runs-dir, die, and come back: each point trained once, no orphans, resumed not restarted.

Every training of these subprocess sweeps (worker processes included) is counted through a
`sitecustomize` module on PYTHONPATH that logs each `nnrun.train.run_experiment` call.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from nnrun import workers
from nnrun.config import validate_config
from nnrun.signals import Interrupted, stop_on_signals
from nnrun.sweep.execute import Completions, _result_of, run_point
from nnrun.sweep.plan import SweepPoint

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--set", "model.hidden=[16]", "--set", "train.epochs=2"]
SLOW = ["--set", "model.hidden=[1024, 1024]", "--set", "train.batch_size=8", "--set", "train.epochs=6"]


@pytest.fixture
def logged_env(tmp_path):
    """Environment for subprocesses whose every training appends `RUN_DIR resumed|fresh` to a log."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""
        import os
        if os.environ.get("NNRUN_TEST_TRAIN_LOG"):
            import nnrun.train as train
            real = train.run_experiment
            def logged(cfg, run, *args, **kw):
                with open(os.environ["NNRUN_TEST_TRAIN_LOG"], "a") as f:
                    f.write(f"{run.path} {'resumed' if kw.get('resume') is not None else 'fresh'}\\n")
                return real(cfg, run, *args, **kw)
            train.run_experiment = logged
    """))
    log = tmp_path / "trainings.log"
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "NNRUN_TEST_TRAIN_LOG": str(log)}
    return env, log


def sweep(runs_dir: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nnrun", "sweep", "configs/quickstart.yaml", "--runs-dir",
                             str(runs_dir), "--quiet", *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_three_concurrent_sweeps_train_each_point_once(tmp_path, logged_env):
    env, log = logged_env
    runs = tmp_path / "runs"
    grid = ["--grid", "optim.lr=0.01,0.02,0.03,0.04,0.05", *QUICK]
    procs = [sweep(runs, env, *grid) for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    trained = log.read_text().splitlines()
    folders = [line.split()[0] for line in trained]
    assert len(trained) == 5 and len(set(folders)) == 5, trained  # 5 points, each trained exactly once
    for folder in folders:
        assert json.loads((Path(folder) / "summary.json").read_text())["status"] == "completed"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
def test_sigkill_of_a_sweep_leaves_no_worker_and_a_rerun_resumes(tmp_path, logged_env):
    env, log = logged_env
    runs = tmp_path / "runs"
    args = ["--grid", "optim.lr=0.01,0.02", "--jobs", "2", *SLOW]
    proc = sweep(runs, env, *args)
    deadline = time.monotonic() + 120
    while len(list(runs.glob("*/checkpoint.npz"))) < 2:  # both runs are training (one epoch done)
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
        time.sleep(0.1)
    workers = children(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)  # returns: no worker holds the sweep's stdout and stderr open
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, [pid for pid in workers if alive(pid)]
        time.sleep(0.1)
    rerun = sweep(runs, env, *args)  # the same points: their checkpoints are resumed, not restarted
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    lines = log.read_text().splitlines()
    assert sorted(line.split()[1] for line in lines) == ["fresh", "fresh", "resumed", "resumed"], lines
    for folder in runs.iterdir():
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["epochs"] == 6


def test_a_stopped_sweep_exits_1_and_its_runs_save_their_state(tmp_path, logged_env):
    env, _ = logged_env
    runs = tmp_path / "runs"
    proc = sweep(runs, env, "--grid", "optim.lr=0.01,0.02", "--jobs", "2", *SLOW)
    deadline = time.monotonic() + 120
    while len(list(runs.glob("*/checkpoint.npz"))) < 2:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # the sweep alone, as a scheduler would: it forwards it to its workers
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err, err
    for folder in runs.iterdir():
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["checkpoint_epoch"] >= 1, summary


def test_a_sighup_to_the_group_leaves_the_resource_tracker_alive():
    """SIGHUP to a study's process group (a closed terminal) killed multiprocessing's resource tracker, which
    ignores only SIGINT and SIGTERM: the one relaunched when the pool shut down printed a KeyError traceback for
    each semaphore of the dead one, and those were left in /dev/shm as sem.loky-* (joblib, imported with
    scikit-learn, renames them). The tracker nnrun's executors start keeps SIGHUP blocked."""
    code = textwrap.dedent("""
        import os, signal, time
        import sklearn.datasets  # joblib renames the pools' semaphores, as in a study on digits
        from multiprocessing import resource_tracker
        from nnrun.workers import open_executor
        with open_executor("local", 2, None) as pool:
            assert pool.submit(abs, -1).result() == 1
            tracker = resource_tracker._resource_tracker._pid
            os.kill(tracker, signal.SIGHUP)
            time.sleep(0.5)
            alive = os.waitpid(tracker, os.WNOHANG) == (0, 0)
        print("alive" if alive else "dead", flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "alive" and "Traceback" not in out.stderr and "KeyError" not in out.stderr, \
        out.stderr


class _SignalledRead(Future):
    """A finished run's future whose reading is hit by a SIGTERM to this process (the sweep's own stop)."""

    def exception(self, timeout=None):
        os.kill(os.getpid(), signal.SIGTERM)
        return super().exception(timeout)

    def result(self, timeout=None):
        os.kill(os.getpid(), signal.SIGTERM)
        return super().result(timeout)


def test_completions_return_the_finished_futures_and_let_a_stop_signal_through_at_once():
    """The sweep's wait for its runs: it returns the futures that finished (a callback from another thread wakes
    it), and a stop signal interrupts it without waiting out its timeout (a shielded wait deferred the stop, and a
    run about to finish then completed instead of saving its state)."""
    finished = Completions()
    first, second, never = Future(), Future(), Future()
    for fut in (first, second, never):
        finished.watch(fut)
    assert finished.wait_first({first, second, never}, timeout=0.01) == set()
    threading.Timer(0.05, first.set_result, [1]).start()
    assert finished.wait_first({first, second, never}, timeout=60) == {first}
    second.set_result(2)
    assert finished.wait_first({second, never}, timeout=60) == {second}

    # A SIGTERM from another process reaches the main thread (os.kill from a thread of this one would go to
    # that thread). The loop is the sweep's: a wake-up left by `second` may return nothing once.
    threading.Timer(0.05, signal.pthread_kill, [threading.main_thread().ident, signal.SIGTERM]).start()
    start = time.monotonic()
    with pytest.raises(Interrupted, match="SIGTERM"), stop_on_signals():
        while time.monotonic() - start < 30:
            assert finished.wait_first({never}, timeout=60) == set()
    assert time.monotonic() - start < 30  # interrupted in the wait, not when its 60 s timeout ran out
    never.set_result(3)  # nothing is left locked: the future still finishes and is seen
    assert finished.wait_first({never}, timeout=60) == {never}


def test_a_stop_signal_while_a_result_is_read_stops_the_sweep_not_the_run(tmp_path):
    """A signal to the sweep as it reads a completed run's result was taken for that run's interruption: the
    sweep went on to the end and exited 0, with every later signal ignored as a repeat."""
    point = SweepPoint(0, {}, {}, "k", tmp_path / "run")
    read = _SignalledRead()
    read.set_result({"status": "completed", "summary": {"val_accuracy": 0.5}})
    with pytest.raises(Interrupted, match="SIGTERM"), stop_on_signals():
        _result_of(point, read)


@pytest.mark.parametrize(("error", "status"), [(Interrupted("SIGTERM"), "interrupted"),
                                               (RuntimeError("worker died"), "failed")])
def test_what_a_worker_raised_is_its_runs_outcome(tmp_path, error, status):
    point = SweepPoint(0, {}, {"name": "x"}, "k", tmp_path / "run")
    (tmp_path / "run").mkdir()
    fut = Future()
    fut.set_exception(error)
    with stop_on_signals():
        result = _result_of(point, fut)
    assert result.status == status
    assert status == "interrupted" or "worker error: RuntimeError: worker died" in result.reason


def test_a_worker_stopped_while_idle_starts_no_run_it_is_handed(tmp_path, monkeypatch):
    """The sweep submits the next run and is stopped before the worker picks it up: the worker, idle when the
    forwarded signal came, trained that whole run while the stopped sweep waited for it."""
    monkeypatch.setattr(workers, "_PARENT", os.getppid())
    monkeypatch.setattr(workers, "_STOPPED_IDLE", None)
    workers._worker_signal(signal.SIGTERM, None)  # idle: recorded, nothing raised
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "notes.txt").write_text("kept")
    config = validate_config({"name": "tiny", "data": {"dataset": "digits"}, "model": {"hidden": [8]},
                              "train": {"epochs": 1}}).model_dump(mode="json")
    out = run_point({"config": config, "run_dir": str(folder), "blas_threads": 1})
    assert out["status"] == "cancelled" and "SIGTERM" in out["reason"], out
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and not workers.in_run()
