"""Running a sweep's plan: one `nnrun train` run per point, in worker processes or on a Dask cluster.

Executors: `local` runs each point in a worker process (spawn start method) with BLAS threads
capped so that jobs x threads <= cores (one thread per GPU run, `nnrun.sweep.gpu`); `dask` runs
them as tasks on a Dask distributed cluster (an existing scheduler, or a `LocalCluster` on
127.0.0.1). Workers receive the resolved config as a plain dict and validate it again
(`run_point`). A run that fails (divergence, bad data) is recorded with its reason and does not
stop the others.

Claims: before a point runs, the sweep takes its run directory's lock (`RunDir.try_claim`) and
holds it until the run ends, so any number of sweeps and `nnrun train` runs over one runs-dir
train each point once: a point another process holds is waited for, and skipped when that
process completes it. A point with a checkpoint (an interrupted run) is resumed, not restarted.
A stop signal to the sweep is forwarded to its local workers, whose runs save their state.

GPU points: before anything runs, their estimated memory must fit the GPU's free memory `jobs` at a
time (`nnrun.sweep.gpu.gpu_budget`, exit 2 otherwise), and each worker caps CuPy's memory pool at
its share while it runs one.
"""

from __future__ import annotations

import contextlib
import queue
import time
import warnings
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from yaml import YAMLError

from nnrun.config import ExperimentConfig, flatten, validate_config
from nnrun.errors import RunFailed, UserInputError
from nnrun.rundir import RunDir
from nnrun.runstore import best_first, config_headline, higher_is_better, most_common_metric
from nnrun.safeyaml import safe_load
from nnrun.signals import Interrupted, shielded
from nnrun.sweep.gpu import GpuBudget, gpu_budget, limit_pool, on_gpu, release_pool, threads_by_device
from nnrun.sweep.plan import SweepPlan, SweepPoint, completed_summary
from nnrun.sweep.slurm import SlurmSettings, check_slurm, open_slurm_executor
from nnrun.trainer import Checkpoint
from nnrun.workers import (
    GPU_RUN_THREADS,
    RunCancelled,
    active_run,
    blas_threads_in_use,
    check_executor,
    dask_worker_threads,
    open_executor,
    stop_workers,
    use_threads,
)

FINISHED = ("completed", "pruned")
"""Run statuses that are an outcome (a sweep with only these exits 0)."""
WAIT_SECONDS = 0.5
"""How often the sweep looks at finished runs and at points other processes hold."""


class SweepProgress(Protocol):
    """Receives a running sweep's state (`nnrun.sweep.display.SweepProgress` draws it)."""

    def start(self, plan: SweepPlan, results: dict[int, RunResult], started: float) -> None: ...
    def update(self, results: dict[int, RunResult], pending: list[SweepPoint]) -> None: ...
    def finish(self, outcome: SweepOutcome) -> None: ...
    def close(self) -> None: ...


def run_point(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one sweep point in this process; never raises for a failed run.

    `payload`: `config` (resolved config, a plain dict, validated again here), `run_dir` (absolute
    path; the sweep holds its lock), `blas_threads` (cap on BLAS threads, None: this worker's cores /
    its task threads), `gpu_pool_bytes` (a GPU run's cap on CuPy's memory pool, its share of the GPU;
    None: no cap), `epoch_hook` (optional, picklable: called with each epoch's metric row, it may stop the run
    as `pruned`, `nnrun.sweep.search.PruneHook`). A run directory with a checkpoint of this config is resumed;
    anything else in it is cleared first. Returns `{"status", "reason", "summary", "blas_threads", "gpu_pool_bytes"}`;
    status is `completed`, `failed`, `interrupted` or `pruned`, each of which leaves a `summary.json`, or
    `cancelled` (the sweep stopped before the run started: its folder is left as it was).
    """
    from nnrun.train import run_experiment

    threads = payload.get("blas_threads") or dask_worker_threads()
    pool_limit = payload.get("gpu_pool_bytes")
    result: dict[str, Any] = {"status": "failed", "reason": None, "summary": None, "gpu_pool_bytes": None}
    run = RunDir(Path(payload["run_dir"]))
    with use_threads(threads), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result["blas_threads"] = blas_threads_in_use()
        try:
            with active_run():
                if pool_limit:
                    result["gpu_pool_bytes"] = limit_pool(pool_limit)
                run.path.mkdir(parents=True, exist_ok=True)
                cfg = validate_config(payload["config"], source=str(run.path / "config.yaml"))
                checkpoint = _resumable(run, payload["config"], cfg)
                if checkpoint is None:
                    run.reset()
                else:
                    run.remove_temporaries()
                    (run.path / "summary.json").unlink(missing_ok=True)
                result["summary"] = run_experiment(cfg, run, resume=checkpoint, on_epoch=payload.get("epoch_hook"))
                result["status"] = "completed"
        except RunFailed as e:
            summary = run.read_summary() or {}
            result.update(status=summary.get("status", "failed"), reason=summary.get("reason") or str(e),
                          summary=summary)
        except KeyboardInterrupt as e:
            name = e.signal_name if isinstance(e, Interrupted) else "SIGINT"
            result.update(status="interrupted", reason=f"interrupted by {name}")
        except RunCancelled as e:  # never started: nothing to save, its folder stays as it was
            result.update(status="cancelled", reason=str(e), summary={})
        except UserInputError as e:
            result["reason"] = str(e)
        except Exception as e:  # a run must not take the sweep down: record the error as its reason
            result["reason"] = f"{type(e).__name__}: {e}"
        with contextlib.suppress(Exception):  # the next run of this worker starts with the GPU memory free
            release_pool()
    if result["status"] != "completed" and result["summary"] is None:
        result["summary"] = _write_failure(run, payload["config"], result["status"], result["reason"])
    return result


def _resumable(run: RunDir, config: dict[str, Any], cfg: ExperimentConfig) -> Checkpoint | None:
    """The checkpoint of an earlier, unfinished run of exactly `config` (validated: `cfg`) in `run`, or None (an
    unreadable one too: the point starts again). `run_experiment` holds it against the model before using it."""
    from nnrun.train import read_checkpoint

    text = run.read_config_text()
    try:
        if text is None or safe_load(text) != config:
            return None
        return read_checkpoint(run, cfg)
    except (YAMLError, UserInputError):
        return None


def _write_failure(run: RunDir, config: dict[str, Any], status: str, reason: str) -> dict[str, Any]:
    summary = {"status": status, "name": config.get("name"), "seed": config.get("seed"), "reason": reason}
    try:
        run.write_summary(summary)
    except OSError:
        pass
    return summary


@dataclass
class RunResult:
    """What became of one point: status `completed`, `failed`, `interrupted`, `pruned` (stopped by a search's
    pruner: an outcome, not a failure) or `cancelled` (never started).

    `skipped`: completed by an earlier sweep, not run now; `blas_threads`: the BLAS thread cap the run saw;
    `gpu_pool_bytes`: the cap on its CuPy memory pool (GPU runs of a local sweep).
    """

    point: SweepPoint
    status: str
    skipped: bool = False
    reason: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    blas_threads: int | None = None
    gpu_pool_bytes: int | None = None

    def metric(self, name: str) -> Any:
        return self.summary.get(name)


@dataclass
class SweepOutcome:
    """All points' results (in plan order), whether the sweep was interrupted, and how its GPU runs shared
    the GPU (None without GPU runs to run here)."""

    plan: SweepPlan
    results: list[RunResult]
    interrupted: bool = False
    executor: str = "local"
    gpu: GpuBudget | None = None

    @property
    def failed(self) -> list[RunResult]:
        """The runs that did not finish: neither completed nor pruned."""
        return [r for r in self.results if r.status not in FINISHED]


def run_sweep(plan: SweepPlan, *, jobs: int = 1, threads: int | None = None, executor: str = "local",
              scheduler: str | None = None, progress: SweepProgress | None = None,
              gpu: GpuBudget | None = None, slurm: SlurmSettings | None = None) -> SweepOutcome:
    """Run every point of `plan` that has no completed run directory yet; returns all results.

    `jobs`: runs at a time (local worker processes, or LocalCluster workers); `threads`: BLAS
    threads per run (default cores // jobs, one for a GPU run; on a remote `scheduler`'s cluster,
    each worker's cores divided by its task threads, one for a GPU run). GPU points to run must fit
    the GPU's memory `jobs` at a time (`gpu_budget`, a `UserInputError` before anything runs; `gpu`:
    a budget computed already). `progress` shows the sweep while it runs. Ctrl-C stops the sweep:
    runs in progress save their state as `interrupted`, the others are `cancelled`. `executor="slurm"`: each
    run is a SLURM job with `slurm`'s settings (`nnrun.sweep.slurm`, checked before anything runs), `jobs` of
    them queued or running at once, each with `threads` (or `slurm.cpus_per_task`, else one) cpus.
    """
    remote = executor == "dask" and bool(scheduler) or executor == "slurm"
    if slurm is not None and executor != "slurm":
        raise UserInputError(f"--slurm is for --executor slurm (given: --executor {executor})")
    check_executor(executor, scheduler)
    if executor == "slurm":
        slurm = check_slurm(slurm or SlurmSettings(cpus_per_task=threads))
        per_run = {"cpu": threads or slurm.threads(False), "gpu": threads or slurm.threads(True)}
    elif remote:
        per_run = {"cpu": threads, "gpu": threads or GPU_RUN_THREADS}
    else:
        per_run = threads_by_device(plan.points, jobs, threads)
    results: dict[int, RunResult] = {}
    todo: list[SweepPoint] = []
    for point in plan.points:
        summary = completed_summary(point)
        if summary is not None:
            results[point.index] = RunResult(point, "completed", skipped=True, summary=summary)
        else:
            todo.append(point)
    if gpu is None and not remote:
        gpu = gpu_budget(todo, jobs)
    outcome = SweepOutcome(plan, [], executor=executor, gpu=None if remote else gpu)
    started = time.time()
    if progress:
        progress.start(plan, results, started)
    try:
        _execute(todo, results, outcome, progress, jobs=jobs, per_run=per_run, executor=executor,
                 scheduler=scheduler, slurm=slurm)
    except BaseException:
        if progress:
            progress.close()
        raise
    outcome.results = [results[p.index] for p in plan.points]
    if progress:
        progress.finish(outcome)
    return outcome


def _execute(todo: list[SweepPoint], results: dict[int, RunResult], outcome: SweepOutcome,
             progress: SweepProgress | None, *, jobs: int, per_run: dict[str, int | None], executor: str,
             scheduler: str | None, slurm: SlurmSettings | None = None) -> None:
    """Claim and submit `todo` to the executor and fill `results` as runs finish. `per_run`: BLAS threads per
    run by device (`cpu`, `gpu`); GPU runs get `outcome.gpu`'s pool share.

    Local pools get one run per free worker at a time, so that a stop leaves nothing queued behind
    the runs in progress; a Dask cluster gets every claimable run at once and schedules them itself; SLURM
    gets `jobs` jobs at a time (queued or running).
    Points whose lock another process holds wait until it is released: done by then (skipped) or
    not (run here, resuming what the other process saved).
    """
    if not todo:
        return
    workers = min(jobs, len(todo))
    in_flight = workers if executor in ("local", "slurm") else len(todo)
    queue = list(reversed(todo))
    claims: dict[int, RunDir] = {}
    opened = (open_slurm_executor(slurm or SlurmSettings()) if executor == "slurm"
              else open_executor(executor, workers, scheduler))
    with opened as pool:
        futures: dict[Future, SweepPoint] = {}
        pending: set[Future] = set()
        finished = Completions()
        try:
            while queue or pending:
                held_elsewhere: list[SweepPoint] = []
                while queue and len(pending) < in_flight:
                    point = queue.pop()
                    run = RunDir(point.run_dir)
                    run.path.mkdir(parents=True, exist_ok=True)
                    if not run.try_claim():
                        held_elsewhere.append(point)
                        continue
                    summary = completed_summary(point)
                    if summary is not None:  # another process completed it while this sweep waited
                        run.release()
                        results[point.index] = RunResult(point, "completed", skipped=True, summary=summary)
                        continue
                    claims[point.index] = run
                    gpu = on_gpu(point)
                    payload = {"config": point.config, "run_dir": str(point.run_dir),
                               "blas_threads": per_run["gpu" if gpu else "cpu"],
                               "gpu_pool_bytes": outcome.gpu.share if gpu and outcome.gpu else None}
                    with shielded():  # see Completions
                        fut = pool.submit(run_point, payload)
                        finished.watch(fut)
                        futures[fut] = point
                        pending.add(fut)
                queue.extend(reversed(held_elsewhere))
                if pending:
                    done = finished.wait_first(pending)
                else:
                    done = set()
                    time.sleep(WAIT_SECONDS)  # only points other processes hold are left
                for fut in done:  # each stays pending until recorded: a stop in between still collects it
                    with shielded():
                        _record(_result_of(futures[fut], fut), results, claims)
                        pending.discard(fut)
                if progress:
                    progress.update(results, [futures[f] for f in pending] + queue[::-1])
        except KeyboardInterrupt as e:
            outcome.interrupted = True
            if executor == "local":
                stop_workers(e.signal_name if isinstance(e, Interrupted) else "SIGINT")
            elif executor == "slurm":
                pool.stop_runs(e.signal_name if isinstance(e, Interrupted) else "SIGINT")
            for fut in pending:
                fut.cancel()
            for fut in pending:
                if not fut.cancelled():
                    _record(_result_of(futures[fut], fut), results, claims)
            for point in todo:
                if point.index not in results:
                    results[point.index] = RunResult(point, "cancelled", reason="the sweep was interrupted first")
        finally:
            for run in claims.values():
                run.release()


class Completions:
    """Wakes a sweep the moment one of its runs' futures finishes, and lets a stop signal through at once.

    `concurrent.futures.wait` is not safe to interrupt: an `Interrupted` raised inside it can leave the lock
    of its waiter held, and the pool's thread that finishes a future then blocks on that lock for good (the
    stopped sweep hangs reading the future; seen under load in stress loops). Here each future, once
    `watch`ed, puts itself on a `queue.SimpleQueue` when it finishes, and `wait_first` blocks on that queue:
    a C call that a signal interrupts without leaving anything held. Which futures are done is read from the
    futures themselves, so a wake-up lost to a signal loses nothing.
    """

    def __init__(self) -> None:
        self._woken: queue.SimpleQueue[Future] = queue.SimpleQueue()

    def watch(self, fut: Future) -> None:
        """Wake `wait_first` when `fut` finishes (call it shielded, as `submit`: it takes the future's lock)."""
        fut.add_done_callback(self._woken.put)

    def wait_first(self, pending: set[Future], timeout: float = WAIT_SECONDS) -> set[Future]:
        """The futures of `pending` done within `timeout` seconds (at least one when any of them finishes in
        time; all of them must be `watch`ed)."""
        with shielded():
            done = {f for f in pending if f.done()}
        if done:
            return done
        try:
            self._woken.get(timeout=timeout)
        except queue.Empty:
            return set()
        with shielded():
            with contextlib.suppress(queue.Empty):
                while True:  # the wake-ups of other futures that finished meanwhile: read below
                    self._woken.get_nowait()
            done = {f for f in pending if f.done()}
        return done


def _record(result: RunResult, results: dict[int, RunResult], claims: dict[int, RunDir]) -> None:
    """Keep a finished point's result and give its run directory's lock back."""
    results[result.point.index] = result
    claim = claims.pop(result.point.index, None)
    if claim is not None:
        claim.release()


def _result_of(point: SweepPoint, fut: Future) -> RunResult:
    """What became of the run of a finished future. Only an interruption raised in the worker is the run's
    `interrupted`; a stop signal to this process while it reads the result propagates and stops the sweep."""
    try:
        error = fut.exception()
    except CancelledError as e:
        error = e
    if isinstance(error, KeyboardInterrupt):
        return RunResult(point, "interrupted", reason="interrupted")
    if error is not None:  # the worker process itself died (killed, out of memory) or the cluster lost it
        reason = f"worker error: {type(error).__name__}: {error}"
        return RunResult(point, "failed", reason=reason,
                         summary=_write_failure(RunDir(point.run_dir), point.config, "failed", reason))
    out = fut.result()
    return RunResult(point, out["status"], reason=out.get("reason"), summary=out.get("summary") or {},
                     blas_threads=out.get("blas_threads"), gpu_pool_bytes=out.get("gpu_pool_bytes"))


def sort_results(results: list[RunResult]) -> list[RunResult]:
    """Best first, in the one order `nnrun runs` lists the run directories in too (`runstore.best_first`):
    completed runs first, the best headline validation metric (highest accuracy, lowest rmse), the lowest
    val_loss, then the run folder's name."""
    metric = most_common_metric([config_headline(flatten(r.point.config)) for r in results])
    higher = higher_is_better(metric)
    return sorted(results, key=lambda r: best_first(r.status, r.summary, r.point.run_dir.name, metric=metric,
                                                    higher_is_better=higher))


def outcome_report(outcome: SweepOutcome) -> dict[str, Any]:
    """A finished sweep as one JSON-ready object, runs sorted like the final table."""
    results = sort_results(outcome.results)
    return {"runs_dir": str(outcome.plan.runs_dir), "executor": outcome.executor, "seed": outcome.plan.seed,
            "keys": outcome.plan.keys, "points": len(results), "duplicates": outcome.plan.duplicates,
            "completed": sum(r.status == "completed" for r in results),
            "failed": len(outcome.failed), "skipped": sum(r.skipped for r in results),
            "interrupted": outcome.interrupted, "gpu": outcome.gpu.report() if outcome.gpu else None,
            "runs": [{"index": r.point.index + 1, "params": r.point.params, "status": r.status, "skipped": r.skipped,
                      "reason": r.reason, "hash": r.point.key, "run_dir": str(r.point.run_dir),
                      "blas_threads": r.blas_threads, "gpu_pool_bytes": r.gpu_pool_bytes, "summary": r.summary}
                     for r in results]}
