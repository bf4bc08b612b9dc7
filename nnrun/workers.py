"""Where parallel work runs: local worker processes or a Dask cluster, with BLAS threads capped.

`open_executor` gives a `concurrent.futures` executor (spawned local processes, or a Dask
cluster's); `thread_budget` splits the cores between jobs so that jobs x BLAS threads never
exceeds them (runs on a GPU take one thread each and may outnumber the cores: their host side
launches kernels and waits, and the GPU's memory bounds them instead). Sweeps and compare-inits
share this module.

Threads: `choose_threads` decides how many BLAS threads a computation uses (set by `use_threads`;
nnrun's element-wise blocks run on the calling thread, `nnrun.parallel`): the `--threads` option or
`$NNRUN_THREADS` when given; else one for a model too small to gain from more, else the cores
that other processes leave free, counted from the runnable tasks of the whole machine minus this
process's own. `ThreadPolicy.adapt` counts again between epochs, so two trainings started at once
settle on sharing the cores instead of oversubscribing them. Results do not depend on the thread
count where the BLAS splits a product's rows and columns, not its sums (docs/performance.md; the
element-wise blocks are exact).

Local workers stop the way the main process does: SIGINT, SIGTERM or SIGHUP interrupt the run in
progress (`active_run`), which saves its state; an idle worker stays while its sweep lives (the sweep
shuts the pool down once its runs have saved) and starts no run it is handed after that. A worker whose parent dies
(SIGKILL included) gets SIGTERM (Linux `PR_SET_PDEATHSIG`, and a watchdog thread elsewhere), so
no worker outlives its sweep or keeps its caller's stdout open. `stop_workers` forwards a stop
signal the parent received to its workers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from threadpoolctl import threadpool_limits

from nnrun import cpu_kernels, signals
from nnrun.errors import UserInputError, did_you_mean

EXECUTORS = ("local", "dask", "slurm")
"""Where runs can execute: local worker processes, a Dask distributed cluster, or SLURM jobs
(`nnrun.sweep.slurm`, through submitit)."""
DASK_INSTALL_HINT = "install the Dask extra: pip install 'nnrun[dask]' (or pip install 'dask[distributed]')"
SLURM_INSTALL_HINT = "install the SLURM extra: pip install 'nnrun[slurm]' (or pip install submitit)"

_IN_RUN = False
"""True while a worker process is inside a run; its stop signals interrupt only then."""
_PARENT: int | None = None
"""The process that started this worker (set by `init_local_worker`)."""
_STOPPED_IDLE: str | None = None
"""The stop signal an idle worker got while its sweep lives: the sweep is stopping, so a run handed to this
worker just before the stop does not start (`active_run` raises `RunCancelled`)."""
PARENT_POLL_SECONDS = 1.0
"""How often a worker's watchdog checks that its parent is alive."""
_PR_SET_PDEATHSIG = 1


class RunCancelled(Exception):
    """The sweep stopped before this worker started the run it was handed; the run directory is untouched."""


def _worker_signal(signum: int, frame: Any) -> None:
    global _STOPPED_IDLE
    if _IN_RUN:
        signals.handle(signum, frame)
    elif _PARENT is not None and os.getppid() != _PARENT:
        os._exit(128 + signum)  # an idle worker of a sweep that is gone
    else:  # an idle worker of a live sweep stays (the sweep shuts its pool down when its runs have saved)
        _STOPPED_IDLE = _STOPPED_IDLE or signal.Signals(signum).name


def _die_with_parent(parent: int) -> None:
    """Ask for SIGTERM when `parent` dies: the kernel's parent-death signal on Linux, and a watchdog thread that
    repeats it every `PARENT_POLL_SECONDS` (a single signal can arrive while an interrupted run is still saving,
    where it is absorbed, and would leave the worker waiting for tasks from a sweep that is gone)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name and hasattr(signal, "SIGTERM"):
        try:
            ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        while True:  # until the worker is gone: a run that is saving lets one signal wait, an idle worker exits
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(PARENT_POLL_SECONDS)

    threading.Thread(target=watch, name="nnrun-parent-watchdog", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the kernel could be asked
        os.kill(os.getpid(), signal.SIGTERM)


def init_local_worker(parent: int) -> None:
    """Pool worker start-up: stop signals interrupt the run in progress (saved as interrupted), leave an idle
    worker alone while `parent` (the sweep) lives, and end the worker when it has died. A signal the parent
    ignores (started with nohup) stays ignored."""
    global _PARENT
    _PARENT = parent
    signals.reset(quiet=True)
    for s in signals.STOP_SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, _worker_signal)
    _die_with_parent(parent)


def in_run() -> bool:
    """Whether this process is inside a run (`active_run`): its stop signals then interrupt the run."""
    return _IN_RUN


@contextmanager
def active_run() -> Iterator[None]:
    """Mark this worker as inside a run while the block executes (a stop signal then interrupts it). Raises
    `RunCancelled` on entry when the worker got a stop signal while idle: its sweep is stopping, and the run
    was handed over just before (a signal from then on interrupts the run instead)."""
    global _IN_RUN
    signals.reset(quiet=True)
    _IN_RUN = True
    try:
        if _STOPPED_IDLE is not None:
            raise RunCancelled(f"the sweep was stopped by {_STOPPED_IDLE} before this run started")
        yield
    finally:
        _IN_RUN = False


def stop_workers(signal_name: str) -> None:
    """Send `signal_name` (SIGINT, SIGTERM, SIGHUP) to this process's local worker processes, so that their
    runs save their state; a worker that is gone already is skipped."""
    signum = getattr(signal, signal_name, signal.SIGTERM)
    for child in multiprocessing.active_children():
        try:
            os.kill(child.pid, signum)
        except (ProcessLookupError, TypeError):
            pass


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:
        return os.cpu_count() or 1


THREADS_ENV = "NNRUN_THREADS"
"""Environment variable with the default of `--threads`."""
SMALL_STEP_FLOPS = 2e7
"""Below this many floating-point operations per training step, a second thread costs more than it gives."""
LOAD_SAMPLES = 5
"""Samples of the machine's runnable tasks taken (10 ms apart) to count the cores others use."""
def requested_threads(option: int | None) -> int | None:
    """The thread count asked for: `option` (`--threads`), else `$NNRUN_THREADS`, else None; more than the
    cores available, or less than 1, is a `UserInputError`, as is a `$NNRUN_NUMBA` `nnrun.cpu_kernels` does
    not know."""
    cpu_kernels.setting()  # a bad $NNRUN_NUMBA is refused before anything trains
    where = "--threads"
    if option is None:
        text = os.environ.get(THREADS_ENV, "").strip()
        if not text:
            return None
        where = f"${THREADS_ENV}"
        try:
            option = int(text)
        except ValueError:
            raise UserInputError(f"{where} must be a whole number of threads, got {text[:40]!r}") from None
    cores = available_cores()
    if not 1 <= option <= cores:
        raise UserInputError(f"{where} must be between 1 and the {cores} CPU cores available, got {option}")
    return option


def _runnable_tasks() -> tuple[int, int] | None:
    """(runnable tasks of the whole machine, runnable threads of this process) now; None off Linux."""
    try:
        total = int(open("/proc/loadavg").read().split()[3].split("/")[0])
        own = 0
        for stat in os.scandir(f"/proc/{os.getpid()}/task"):
            try:
                with open(f"{stat.path}/stat") as f:
                    own += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:
                continue
        return total, own
    except (OSError, ValueError, IndexError):
        return None


def busy_cores(own_threads: int = 1) -> int:
    """Cores other processes keep busy now: the median over `LOAD_SAMPLES` of the machine's runnable tasks
    minus this process's (Linux), else the 1-minute load average minus `own_threads`."""
    samples = []
    for i in range(LOAD_SAMPLES):
        counts = _runnable_tasks()
        if counts is None:
            break
        samples.append(max(counts[0] - max(counts[1], 1), 0))
        if i < LOAD_SAMPLES - 1:
            time.sleep(0.01)
    if samples:
        return sorted(samples)[len(samples) // 2]
    try:
        return max(round(os.getloadavg()[0] - own_threads), 0)
    except OSError:
        return 0


@dataclass
class ThreadChoice:
    """How many threads a computation uses and why (shown in a run's header and provenance)."""

    threads: int
    reason: str
    fixed: bool = False


def choose_threads(requested: int | None, step_flops: float | None = None, own_threads: int = 1) -> ThreadChoice:
    """The thread count for a computation: `requested` when given (`requested_threads`); else one when a step of
    `step_flops` is too small to gain from more; else the cores other processes leave free (at least one)."""
    if requested is not None:
        return ThreadChoice(requested, "as asked", fixed=True)
    cores = available_cores()
    if step_flops is not None and step_flops < SMALL_STEP_FLOPS:
        return ThreadChoice(1, f"a small model: {step_flops:.1e} flops per step")
    busy = min(busy_cores(own_threads), cores - 1)
    if busy:
        return ThreadChoice(cores - busy, f"{busy} of {cores} cores busy with other work")
    return ThreadChoice(cores, f"all {cores} cores free")


@contextmanager
def use_threads(n: int) -> Iterator[None]:
    """Run the block with `n` BLAS threads."""
    before = cpu_kernels.threads()
    cpu_kernels.set_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        cpu_kernels.set_threads(before)


class ThreadPolicy:
    """The threads of one computation, applied while it runs and counted again when asked (between epochs).

    `with ThreadPolicy(requested, step_flops) as policy:` uses `choose_threads`; `policy.adapt()` re-counts
    the busy cores (unless the count was asked for or the model is small) and changes the BLAS threads.
    """

    def __init__(self, requested: int | None, step_flops: float | None = None) -> None:
        self.step_flops = step_flops
        self.choice = choose_threads(requested, step_flops)
        self._limits: Any = None

    def __enter__(self) -> ThreadPolicy:
        self._kernel_threads_before = cpu_kernels.threads()
        self._apply(self.choice.threads)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
        cpu_kernels.set_threads(self._kernel_threads_before)

    def _apply(self, n: int) -> None:
        cpu_kernels.set_threads(n)
        if self._limits is None:
            self._limits = threadpool_limits(limits=n)
        else:
            threadpool_limits(limits=n)

    def adapt(self) -> None:
        """Count the busy cores again and use what is free (nothing when the count is fixed or the model small)."""
        if self.choice.fixed or (self.step_flops is not None and self.step_flops < SMALL_STEP_FLOPS):
            return
        choice = choose_threads(None, self.step_flops, own_threads=self.choice.threads)
        if choice.threads != self.choice.threads:
            self.choice = choice
            self._apply(choice.threads)


def dask_worker_threads() -> int:
    """BLAS threads for a Dask task: the worker machine's cores shared by the worker's task threads."""
    try:
        from distributed import get_worker

        worker = get_worker()
        nthreads = getattr(getattr(worker, "state", None), "nthreads", None) or worker.nthreads
    except (ImportError, ValueError, AttributeError):
        nthreads = 1
    return max(available_cores() // max(int(nthreads), 1), 1)


def blas_threads_in_use() -> int | None:
    """The largest thread count the loaded BLAS/OpenMP libraries report (None when none is loaded)."""
    from threadpoolctl import threadpool_info

    counts = [info.get("num_threads") for info in threadpool_info() if info.get("num_threads")]
    return max(counts) if counts else None


GPU_RUN_THREADS = 1
"""BLAS threads of a run on a GPU by default: its host side is one thread launching kernels and waiting on them."""


def thread_budget(jobs: int, threads: int | None, cores: int | None = None, *, gpu: bool = False) -> int:
    """BLAS threads per job: `threads`, or cores // jobs (`GPU_RUN_THREADS` for runs on a GPU, `gpu`); jobs x
    threads may not exceed the cores, except for GPU runs of one thread each, which may outnumber the cores."""
    cores = cores or available_cores()
    if jobs < 1:
        raise UserInputError(f"--jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise UserInputError(f"--threads must be >= 1, got {threads}")
    if gpu:
        per_job = threads if threads is not None else GPU_RUN_THREADS
        if per_job > 1 and jobs * per_job > cores:
            raise UserInputError(f"--jobs {jobs} x --threads {per_job} exceeds the {cores} CPU cores available; "
                                 f"GPU runs need one thread each: leave --threads out (or use --threads 1) to run "
                                 f"{jobs} of them at once" + (f", or use at most --threads {cores // jobs}"
                                                              if cores // jobs > 1 else ""))
        return per_job
    per_job = threads if threads is not None else cores // jobs
    if jobs * max(per_job, 1) > cores:
        if threads is None:
            advice = f"use at most --jobs {cores}"
        else:  # combinations that fit, each keeping one of the two numbers asked for when it can
            fits = [f"--jobs {j} --threads {t}" for j, t in ((cores // threads, threads), (jobs, cores // jobs))
                    if j >= 1 and t >= 1]
            advice = "use " + " or ".join(dict.fromkeys(fits or [f"--jobs {cores} --threads 1"]))
        raise UserInputError(f"--jobs {jobs} x --threads {max(per_job, 1)} exceeds the {cores} CPU cores available; "
                             f"{advice} (jobs x threads at most {cores})")
    return per_job


def import_distributed() -> Any:
    """The `distributed` package, or a `UserInputError` telling how to install it."""
    try:
        import distributed
    except ImportError:
        raise UserInputError(f"--executor dask needs Dask distributed, which is not installed: {DASK_INSTALL_HINT}") \
            from None
    return distributed


def import_submitit() -> Any:
    """The `submitit` package (SLURM jobs), or a `UserInputError` telling how to install it."""
    try:
        import submitit
    except ImportError:
        raise UserInputError(f"--executor slurm needs submitit, which is not installed: {SLURM_INSTALL_HINT}") \
            from None
    return submitit


def check_executor(kind: str, scheduler: str | None = None) -> None:
    """Refuse (`UserInputError`) an executor nnrun does not have, Dask or submitit when it is not installed, a
    `scheduler` address for an executor other than Dask, or a `$NNRUN_NUMBA` the workers would refuse: before
    any work, so that a typo costs nothing."""
    cpu_kernels.setting()
    if scheduler and kind != "dask":
        raise UserInputError("--scheduler is for --executor dask")
    if kind not in EXECUTORS:
        raise UserInputError(f"--executor {kind}: unknown executor; allowed: {', '.join(EXECUTORS)}"
                             f"{did_you_mean(kind, EXECUTORS)}")
    if kind == "dask":
        import_distributed()
    if kind == "slurm":
        import_submitit()


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (the process that unlinks the pools' semaphores) now, with SIGHUP
    blocked, so that it keeps its parent's group's SIGHUP blocked for life: it ignores SIGINT and SIGTERM by
    itself but died on a SIGHUP to the group (a closed terminal), and the one relaunched for the pool's shutdown
    printed a `KeyError` traceback for each semaphore the dead one had registered, leaving those semaphores to
    leak into /dev/shm (named `sem.loky-*`: joblib, which scikit-learn imports, renames them). The signal stays
    pending in this thread while blocked, so nnrun still receives it. A no-op once the tracker runs."""
    hup = getattr(signal, "SIGHUP", None)
    if hup is None or not hasattr(signal, "pthread_sigmask"):
        return
    from multiprocessing import resource_tracker

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {hup})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def open_executor(kind: str, jobs: int, scheduler: str | None) -> Iterator[Executor]:
    """A `concurrent.futures` executor: local spawn processes, or a Dask cluster's (existing or local)."""
    start_resource_tracker()
    if kind == "local":
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_local_worker, initargs=(os.getpid(),))
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    if kind != "dask":
        raise UserInputError(f"unknown executor {kind!r}; allowed: {', '.join(EXECUTORS)}")
    import logging

    distributed = import_distributed()
    cluster = None
    try:
        if scheduler:
            client = distributed.Client(scheduler, timeout="10s")
        else:
            cluster = distributed.LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=None,
                                               silence_logs=logging.ERROR)
            client = distributed.Client(cluster)
    except (OSError, TimeoutError, ValueError) as e:
        if cluster is not None:
            cluster.close()
        where = f"the Dask scheduler at {scheduler}" if scheduler else "a local Dask cluster"
        raise UserInputError(f"cannot connect to {where}: {e}") from None
    executor = client.get_executor(pure=False)
    try:
        yield executor
    finally:
        executor.shutdown(wait=False)
        client.close()
        if cluster is not None:
            cluster.close()
