"""Sweeps: many runs of one config with some keys varied, each in its own run directory.

A sweep starts from one experiment (YAML file + `--set` overrides) and varies dotted keys:
- grid: `--grid optim.lr=1e-3,1e-2 --grid regularization.l2=0,1e-4` runs the cartesian
  product of the listed values (2 x 2 = 4 points here);
- random: `--random N --space 'optim.lr=loguniform(1e-4,1e-1)'` draws N points; each key of
  `--space` from its distribution (see `DISTRIBUTIONS`) and each `--grid` key uniformly from its
  list. The draws come from the `sweep` stream of the sweep seed (`--seed`, default the config's
  `seed`) and are made point by point, so `--random 20` starts with the 10 points of `--random 10`.

Every point's config is resolved and validated before anything runs. A point runs in
`RUNS_DIR/<name>-<hash12>`, where `hash12` is the first 12 hex digits of the SHA-256 of its
resolved config as canonical JSON (`config_hash`): the same config always lands in the same
folder, so a point whose folder holds a `summary.json` with status `completed` is skipped and
rerunning an interrupted sweep runs only what is missing. Identical points are run once.

Executors: `local` runs each point in a worker process (`ProcessPoolExecutor`, spawn start
method) with BLAS threads capped so that jobs x threads <= cores; `dask` runs them as tasks on a
Dask distributed cluster (an existing scheduler, or a `LocalCluster` on 127.0.0.1). Workers
receive the resolved config as a plain dict and validate it again (`run_point`). A run that
fails (divergence, bad data) is recorded with its reason and does not stop the others.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import re
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from nnrun.config import ExperimentConfig, apply_override, read_yaml_mapping, set_dotted, validate_config
from nnrun.errors import RunFailed, UserInputError
from nnrun.report import fmt, stderr_console
from nnrun.rng import stream
from nnrun.runs import RunDir, parse_value, split_top_level

EXECUTORS = ("local", "dask")
DASK_INSTALL_HINT = "install the Dask extra: pip install 'nnrun[dask]' (or pip install 'dask[distributed]')"
MAX_ERRORS_SHOWN = 5
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
CALL_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.DOTALL)


# ---------------------------------------------------------------------------------------------
# Distributions and expansion


def _bounds(name: str, args: tuple[Any, ...]) -> tuple[float, float]:
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise UserInputError(f"{name} takes two numbers (low, high), got {args!r}")
    low, high = args
    if not low < high:
        raise UserInputError(f"{name}(low, high) needs low < high, got {low}, {high}")
    return float(low), float(high)


def sample_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A float drawn uniformly from [low, high)."""
    return float(rng.uniform(low, high))


def sample_loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A float whose log is uniform on [log low, log high): `exp(uniform(log low, log high))`, 0 < low."""
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def sample_randint(rng: np.random.Generator, low: int, high: int) -> int:
    """An integer drawn uniformly from low..high, both ends included."""
    return int(rng.integers(low, high, endpoint=True))


def sample_choice(rng: np.random.Generator, *values: Any) -> Any:
    """One of `values`, each with the same probability."""
    return copy.deepcopy(values[int(rng.integers(len(values)))])


def _check_uniform(args: tuple[Any, ...]) -> None:
    _bounds("uniform", args)


def _check_loguniform(args: tuple[Any, ...]) -> None:
    low, _ = _bounds("loguniform", args)
    if low <= 0:
        raise UserInputError(f"loguniform(low, high) needs 0 < low, got low={low}")


def _check_randint(args: tuple[Any, ...]) -> None:
    if len(args) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args) or args[0] > args[1]:
        raise UserInputError(f"randint takes two integers low <= high (both included), got {args!r}")


def _check_choice(args: tuple[Any, ...]) -> None:
    if not args:
        raise UserInputError("choice needs at least one value")


DISTRIBUTIONS: dict[str, tuple[Callable[..., Any], Callable[[tuple[Any, ...]], None]]] = {
    "uniform": (sample_uniform, _check_uniform),
    "loguniform": (sample_loguniform, _check_loguniform),
    "randint": (sample_randint, _check_randint),
    "choice": (sample_choice, _check_choice),
}
"""Registry: distribution name -> (sampler(rng, *args), argument check raising UserInputError)."""


@dataclass(frozen=True)
class Distribution:
    """A named distribution over one config value, e.g. `Distribution("loguniform", (1e-4, 1e-1))`."""

    name: str
    args: tuple[Any, ...]

    def __post_init__(self) -> None:
        if self.name not in DISTRIBUTIONS:
            raise UserInputError(f"unknown distribution {self.name!r}; allowed: {', '.join(DISTRIBUTIONS)}")
        DISTRIBUTIONS[self.name][1](self.args)

    def sample(self, rng: np.random.Generator) -> Any:
        """One draw from `rng`."""
        return DISTRIBUTIONS[self.name][0](rng, *self.args)

    def __str__(self) -> str:
        return f"{self.name}({', '.join(json.dumps(a) for a in self.args)})"


def _split_key(item: str, option: str, example: str) -> tuple[str, str]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not KEY_RE.match(key) or not text.strip():
        raise UserInputError(f"{option} expects KEY=VALUES with a dotted key, e.g. {example}; got {item!r}")
    return key, text


def parse_grid(items: list[str] | tuple[str, ...]) -> dict[str, list[Any]]:
    """`['optim.lr=1e-3,1e-2', 'model.hidden=[64],[64,32]']` -> `{key: [values]}`.

    Values are split on commas outside brackets and quotes and parsed like `--set` values
    (YAML, with `1e-3` read as a number). A key given twice is an error.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, text = _split_key(item, "--grid", "--grid optim.lr=1e-3,1e-2")
        if key in grid:
            raise UserInputError(f"--grid {key} is given twice; list all its values in one --grid option")
        parts = split_top_level(text)
        if any(not p.strip() for p in parts):
            raise UserInputError(f"--grid {item!r}: empty value in the list")
        grid[key] = [parse_value(p) for p in parts]
    return grid


def parse_distribution(text: str) -> Distribution:
    """`'loguniform(1e-4, 1e-1)'` -> `Distribution('loguniform', (0.0001, 0.1))`."""
    match = CALL_RE.match(text)
    if not match:
        raise UserInputError(f"expected NAME(ARGS) with NAME one of {', '.join(DISTRIBUTIONS)}, got {text!r}")
    name, inner = match.groups()
    args = tuple(parse_value(p) for p in split_top_level(inner)) if inner.strip() else ()
    return Distribution(name, args)


def parse_space(items: list[str] | tuple[str, ...]) -> dict[str, Distribution]:
    """`['optim.lr=loguniform(1e-4,1e-1)']` -> `{key: Distribution}`; a key given twice is an error."""
    space: dict[str, Distribution] = {}
    for item in items:
        key, text = _split_key(item, "--space", "--space 'optim.lr=loguniform(1e-4,1e-1)'")
        if key in space:
            raise UserInputError(f"--space {key} is given twice")
        try:
            space[key] = parse_distribution(text)
        except UserInputError as e:
            raise UserInputError(f"--space {item!r}: {e}") from None
    return space


def expand_points(grid: dict[str, list[Any]], space: dict[str, Distribution] | None = None,
                  n_random: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The sweep's points, each a `{dotted key: value}` dict.

    Without `n_random`: the cartesian product of the grid lists, the last key varying fastest
    (`[{}]`, one point, for an empty grid). With `n_random`: that many points drawn from the
    `sweep` stream of `seed`, space keys from their distribution and grid keys uniformly from
    their lists, point by point in key order.
    """
    space = space or {}
    both = sorted(set(grid) & set(space))
    if both:
        raise UserInputError(f"{', '.join(both)} given both as --grid and --space; choose one")
    if n_random is None:
        if space:
            raise UserInputError("--space draws random points: give their number with --random N")
        return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    if n_random < 1:
        raise UserInputError(f"--random needs a number of points >= 1, got {n_random}")
    distributions = {**{k: Distribution("choice", tuple(v)) for k, v in grid.items()}, **space}
    if not distributions:
        raise UserInputError("--random N needs keys to vary: give --space KEY=DIST(...) or --grid KEY=V1,V2")
    rng = stream(seed, "sweep")
    return [{k: d.sample(rng) for k, d in distributions.items()} for _ in range(n_random)]


# ---------------------------------------------------------------------------------------------
# Planning: points -> resolved configs -> run directories


def config_hash(resolved: dict[str, Any]) -> str:
    """First 12 hex digits of the SHA-256 of `resolved` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def describe_point(params: dict[str, Any]) -> str:
    """`optim.lr=0.001, regularization.l2=0` (values shortened like tables show them)."""
    return ", ".join(f"{k}={show(v)}" for k, v in params.items()) or "(base config)"


def plural(n: int, noun: str) -> str:
    """`1 run`, `2 runs`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def show(value: Any) -> str:
    """A value for a table cell: floats to 4 significant digits, lists as JSON."""
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return fmt(value)


@dataclass
class SweepPoint:
    """One point: the varied values, its resolved config (JSON-ready dict) and its run directory."""

    index: int
    params: dict[str, Any]
    config: dict[str, Any]
    key: str
    run_dir: Path

    @property
    def label(self) -> str:
        return describe_point(self.params)


@dataclass
class SweepPlan:
    """What a sweep will run: the base config, its distinct points and where they go."""

    base: ExperimentConfig
    keys: list[str]
    points: list[SweepPoint]
    runs_dir: Path
    seed: int
    duplicates: int = 0


def plan_sweep(config: str | Path | None, *, overrides: list[str] | tuple[str, ...] = (),
               grid: list[str] | tuple[str, ...] = (), space: list[str] | tuple[str, ...] = (),
               n_random: int | None = None, seed: int | None = None, runs_dir: str | Path = "runs") -> SweepPlan:
    """Expand and validate a sweep from command-line style arguments; runs nothing.

    `config` + `overrides` (`--set` items) give the base; `grid`/`space` items give the varied
    keys (see `parse_grid`, `parse_space`); `seed` defaults to the base config's seed. Every
    point's config is validated: any bad point raises one `UserInputError` listing them.
    """
    raw: dict[str, Any] = read_yaml_mapping(Path(config)) if config is not None else {}
    for item in overrides:
        apply_override(raw, item)
    source = str(config) if config is not None else "defaults"
    base = validate_config(copy.deepcopy(raw), source=source)
    grid_values, distributions = parse_grid(grid), parse_space(space)
    sweep_seed = base.seed if seed is None else seed
    params_list = expand_points(grid_values, distributions, n_random, sweep_seed)
    runs_root = Path(runs_dir).expanduser().absolute()
    points: list[SweepPoint] = []
    errors: list[str] = []
    seen: set[str] = set()
    duplicates = 0
    for i, params in enumerate(params_list):
        point_raw = copy.deepcopy(raw)
        try:
            for key, value in params.items():
                set_dotted(point_raw, key, copy.deepcopy(value))
            cfg = validate_config(point_raw, source=f"{source}, sweep point {i + 1}: {describe_point(params)}")
        except UserInputError as e:
            errors.append(str(e))
            continue
        resolved = cfg.model_dump(mode="json")
        key = config_hash(resolved)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        points.append(SweepPoint(len(points), params, resolved, key, runs_root / f"{cfg.name}-{key}"))
    if errors:
        shown = errors[:MAX_ERRORS_SHOWN]
        more = len(errors) - len(shown)
        tail = [f"... and {more} more invalid points"] if more else []
        raise UserInputError(f"{len(errors)} of {len(params_list)} sweep points are invalid; nothing was run.\n"
                             + "\n".join(shown + tail))
    return SweepPlan(base, [*grid_values, *distributions], points, runs_root, sweep_seed, duplicates)


# ---------------------------------------------------------------------------------------------
# Workers


_IN_RUN = False
"""True while a worker process is inside a run; its SIGINT handler interrupts only then."""


def _sigint_in_run(signum: int, frame: Any) -> None:
    if _IN_RUN:
        raise KeyboardInterrupt


def init_local_worker() -> None:
    """Pool worker start-up: Ctrl-C interrupts the run in progress (saved as interrupted), never an idle worker.

    A worker of a sweep that ignores SIGINT (started in the background, nohup) keeps ignoring it.
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _sigint_in_run)


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:
        return os.cpu_count() or 1


def _dask_worker_threads() -> int:
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


@contextmanager
def _active_run() -> Iterator[None]:
    global _IN_RUN
    _IN_RUN = True
    try:
        yield
    finally:
        _IN_RUN = False


def run_point(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one sweep point in this process; never raises for a failed run.

    `payload`: `config` (resolved config, a plain dict, validated again here), `run_dir` (absolute
    path), `blas_threads` (cap on BLAS threads, None: this worker's cores / its task threads).
    Returns `{"status", "reason", "summary", "blas_threads"}`; status is `completed`, `failed` or
    `interrupted`, and every outcome also leaves a `summary.json` in the run directory.
    """
    from threadpoolctl import threadpool_limits

    from nnrun.train import SilentReporter, run_experiment

    threads = payload.get("blas_threads") or _dask_worker_threads()
    result: dict[str, Any] = {"status": "failed", "reason": None, "summary": None}
    run = RunDir(Path(payload["run_dir"]))
    with threadpool_limits(limits=threads), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result["blas_threads"] = blas_threads_in_use()
        try:
            with _active_run():
                run = RunDir.create(payload["run_dir"], overwrite=True)
                cfg = validate_config(payload["config"], source=str(run.path / "config.yaml"))
                result["summary"] = run_experiment(cfg, run, SilentReporter())
                result["status"] = "completed"
        except RunFailed as e:
            summary = run.read_summary() or {}
            result.update(status=summary.get("status", "failed"), reason=summary.get("reason") or str(e),
                          summary=summary)
        except KeyboardInterrupt:
            result.update(status="interrupted", reason="interrupted by the user")
        except UserInputError as e:
            result["reason"] = str(e)
        except Exception as e:  # a run must not take the sweep down: record the error as its reason
            result["reason"] = f"{type(e).__name__}: {e}"
    if result["status"] != "completed" and result["summary"] is None:
        result["summary"] = _write_failure(run, payload["config"], result["status"], result["reason"])
    return result


def _write_failure(run: RunDir, config: dict[str, Any], status: str, reason: str) -> dict[str, Any]:
    summary = {"status": status, "name": config.get("name"), "seed": config.get("seed"), "reason": reason}
    try:
        run.write_summary(summary)
    except OSError:
        pass
    return summary


# ---------------------------------------------------------------------------------------------
# Running a plan


@dataclass
class RunResult:
    """What became of one point: status `completed`, `failed`, `interrupted` or `cancelled` (never started).

    `skipped`: completed by an earlier sweep, not run now; `blas_threads`: the BLAS thread cap the run saw.
    """

    point: SweepPoint
    status: str
    skipped: bool = False
    reason: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    blas_threads: int | None = None

    def metric(self, name: str) -> Any:
        return self.summary.get(name)


@dataclass
class SweepOutcome:
    """All points' results (in plan order) and whether the sweep was interrupted."""

    plan: SweepPlan
    results: list[RunResult]
    interrupted: bool = False
    executor: str = "local"

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.results if r.status != "completed"]


def completed_summary(point: SweepPoint) -> dict[str, Any] | None:
    """The point's summary when its run directory already holds a completed run."""
    summary = RunDir(point.run_dir).read_summary()
    return summary if summary and summary.get("status") == "completed" else None


def thread_budget(jobs: int, threads: int | None, cores: int | None = None) -> int:
    """BLAS threads per job: `threads`, or cores // jobs; jobs x threads may not exceed the cores."""
    cores = cores or available_cores()
    if jobs < 1:
        raise UserInputError(f"--jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise UserInputError(f"--threads must be >= 1, got {threads}")
    per_job = threads if threads is not None else cores // jobs
    if jobs * max(per_job, 1) > cores:
        raise UserInputError(f"--jobs {jobs} x --threads {max(per_job, 1)} exceeds the {cores} CPU cores available; "
                             f"use at most --jobs {cores}" + (f" and --threads {cores // jobs}" if threads else ""))
    return per_job


def import_distributed() -> Any:
    """The `distributed` package, or a `UserInputError` telling how to install it."""
    try:
        import distributed
    except ImportError:
        raise UserInputError(f"--executor dask needs Dask distributed, which is not installed: {DASK_INSTALL_HINT}") \
            from None
    return distributed


@contextmanager
def open_executor(kind: str, jobs: int, scheduler: str | None) -> Iterator[Executor]:
    """A `concurrent.futures` executor: local spawn processes, or a Dask cluster's (existing or local)."""
    if kind == "local":
        import multiprocessing

        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init_local_worker)
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


def run_sweep(plan: SweepPlan, *, jobs: int = 1, threads: int | None = None, executor: str = "local",
              scheduler: str | None = None, progress: SweepProgress | None = None) -> SweepOutcome:
    """Run every point of `plan` that has no completed run directory yet; returns all results.

    `jobs`: runs at a time (local worker processes, or LocalCluster workers); `threads`: BLAS
    threads per run (default cores // jobs; on a remote `scheduler`'s cluster, each worker's cores
    divided by its task threads). `progress` shows the sweep while it runs. Ctrl-C stops the sweep:
    runs in progress save their state as `interrupted`, the others are `cancelled`.
    """
    remote = executor == "dask" and bool(scheduler)
    if executor not in EXECUTORS:
        raise UserInputError(f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if executor == "dask":
        import_distributed()
    elif scheduler:
        raise UserInputError("--scheduler is for --executor dask")
    per_run = threads if remote else thread_budget(jobs, threads)
    results: dict[int, RunResult] = {}
    todo: list[SweepPoint] = []
    for point in plan.points:
        summary = completed_summary(point)
        if summary is not None:
            results[point.index] = RunResult(point, "completed", skipped=True, summary=summary)
        else:
            todo.append(point)
    outcome = SweepOutcome(plan, [], executor=executor)
    started = time.time()
    if progress:
        progress.start(plan, results, started)
    try:
        _execute(todo, results, outcome, progress, jobs=jobs, per_run=per_run, executor=executor, scheduler=scheduler)
    except BaseException:
        if progress:
            progress.close()
        raise
    outcome.results = [results[p.index] for p in plan.points]
    if progress:
        progress.finish(outcome)
    return outcome


def _execute(todo: list[SweepPoint], results: dict[int, RunResult], outcome: SweepOutcome,
             progress: SweepProgress | None, *, jobs: int, per_run: int | None, executor: str,
             scheduler: str | None) -> None:
    """Submit `todo` to the executor and fill `results` as runs finish.

    Local pools get one run per free worker at a time, so that Ctrl-C leaves nothing queued
    behind the runs in progress; a Dask cluster gets every run at once and schedules them itself.
    """
    if not todo:
        return
    workers = min(jobs, len(todo))
    in_flight = workers if executor == "local" else len(todo)
    queue = list(reversed(todo))
    with open_executor(executor, workers, scheduler) as pool:
        futures: dict[Future, SweepPoint] = {}

        pending: set[Future] = set()
        try:
            while queue or pending:
                while queue and len(pending) < in_flight:
                    point = queue.pop()
                    payload = {"config": point.config, "run_dir": str(point.run_dir), "blas_threads": per_run}
                    fut = pool.submit(run_point, payload)
                    futures[fut] = point
                    pending.add(fut)
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    results[futures[fut].index] = _result_of(futures[fut], fut)
                if progress:
                    progress.update(results, [futures[f] for f in pending] + queue[::-1])
        except KeyboardInterrupt:
            outcome.interrupted = True
            for fut in pending:
                fut.cancel()
            for fut in pending:
                if not fut.cancelled():
                    results[futures[fut].index] = _result_of(futures[fut], fut)
            for point in todo:
                if point.index not in results:
                    results[point.index] = RunResult(point, "cancelled", reason="the sweep was interrupted first")


def _result_of(point: SweepPoint, fut: Future) -> RunResult:
    try:
        out = fut.result()
    except KeyboardInterrupt:
        return RunResult(point, "interrupted", reason="interrupted")
    except Exception as e:  # the worker process itself died (killed, out of memory) or the cluster lost it
        reason = f"worker error: {type(e).__name__}: {e}"
        return RunResult(point, "failed", reason=reason,
                         summary=_write_failure(RunDir(point.run_dir), point.config, "failed", reason))
    return RunResult(point, out["status"], reason=out.get("reason"), summary=out.get("summary") or {},
                     blas_threads=out.get("blas_threads"))


# ---------------------------------------------------------------------------------------------
# Reporting


METRIC_COLUMNS = ("val_accuracy", "val_loss", "train_accuracy", "epochs", "seconds")
"""Summary metrics the sweep tables show, when runs have them."""


def sort_results(results: list[RunResult]) -> list[RunResult]:
    """Completed runs first, best validation accuracy first (lowest val_loss without accuracy); then the rest."""
    def key(r: RunResult) -> tuple:
        acc, loss = r.metric("val_accuracy"), r.metric("val_loss")
        done = r.status == "completed"
        return (not done, -acc if isinstance(acc, (int, float)) else math.inf,
                loss if isinstance(loss, (int, float)) else math.inf, r.point.index)
    return sorted(results, key=key)


def status_text(result: RunResult) -> Text:
    styles = {"completed": "green", "failed": "bold red", "interrupted": "yellow", "cancelled": "dim"}
    label = "skipped (done)" if result.skipped else result.status
    return Text(label, style=styles.get(result.status, ""))


def results_table(outcome: SweepOutcome, title: str | None = None) -> Table:
    """All runs of a finished sweep, best first: varied keys, status, metrics, run directory, reason."""
    results = sort_results(outcome.results)
    metrics = [m for m in METRIC_COLUMNS if any(r.metric(m) is not None for r in results)]
    with_reason = any(r.reason for r in results)
    n_failed = len(outcome.failed)
    table = Table(title=title or f"sweep: {plural(len(results), 'run')}, {len(results) - n_failed} completed, "
                                 f"{n_failed} failed or not run")
    table.add_column("#", justify="right")
    for key in outcome.plan.keys:
        table.add_column(key, justify="right")
    table.add_column("status")
    for m in metrics:
        table.add_column(m, justify="right")
    table.add_column("run dir", overflow="fold")
    if with_reason:
        table.add_column("reason", overflow="fold")
    for r in results:
        cells = [str(r.point.index + 1), *(show(r.point.params.get(k)) for k in outcome.plan.keys), status_text(r),
                 *(show(r.metric(m)) for m in metrics), r.point.run_dir.name]
        if with_reason:
            cells.append(r.reason or "")
        table.add_row(*cells)
    return table


def print_table(table: Table, console: Console = stderr_console) -> None:
    """Print `table`; off a terminal (logs, pipes) at its natural width rather than rich's default 80 columns."""
    if not console.is_terminal:
        natural = Measurement.get(console, console.options.update_width(1000), table).maximum
        if natural > console.width:
            console = Console(file=console.file, width=natural, no_color=console.no_color)
    console.print(table)


def plan_table(plan: SweepPlan) -> Table:
    """The points of a plan and whether each still has to run (for --dry-run)."""
    table = Table(title=f"sweep plan: {plural(len(plan.points), 'run')} in {plan.runs_dir}")
    table.add_column("#", justify="right")
    for key in plan.keys:
        table.add_column(key, justify="right")
    table.add_column("state")
    table.add_column("run dir", overflow="fold")
    for p in plan.points:
        done = completed_summary(p) is not None
        table.add_row(str(p.index + 1), *(show(p.params.get(k)) for k in plan.keys),
                      Text("done", style="green") if done else Text("to run"), p.run_dir.name)
    return table


def plan_report(plan: SweepPlan) -> dict[str, Any]:
    """The plan as one JSON-ready object (for --dry-run --json)."""
    return {"runs_dir": str(plan.runs_dir), "seed": plan.seed, "keys": plan.keys, "points": len(plan.points),
            "duplicates": plan.duplicates,
            "runs": [{"index": p.index + 1, "params": p.params, "hash": p.key, "run_dir": str(p.run_dir),
                      "done": completed_summary(p) is not None} for p in plan.points]}


def outcome_report(outcome: SweepOutcome) -> dict[str, Any]:
    """A finished sweep as one JSON-ready object, runs sorted like the final table."""
    results = sort_results(outcome.results)
    return {"runs_dir": str(outcome.plan.runs_dir), "executor": outcome.executor, "seed": outcome.plan.seed,
            "keys": outcome.plan.keys, "points": len(results), "duplicates": outcome.plan.duplicates,
            "completed": sum(r.status == "completed" for r in results),
            "failed": len(outcome.failed), "skipped": sum(r.skipped for r in results),
            "interrupted": outcome.interrupted,
            "runs": [{"index": r.point.index + 1, "params": r.point.params, "status": r.status, "skipped": r.skipped,
                      "reason": r.reason, "hash": r.point.key, "run_dir": str(r.point.run_dir),
                      "blas_threads": r.blas_threads, "summary": r.summary} for r in results]}


def _epochs_done(run_dir: Path) -> int:
    try:
        with open(run_dir / "metrics.jsonl", "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


class SweepProgress:
    """Shows a sweep while it runs.

    On a terminal: a live table of the runs in progress (epoch read from each run's
    `metrics.jsonl`) and the latest finished ones, under a count of what is done. Elsewhere
    (logs, CI): one line per finished run. The final table is printed by the caller.
    """

    def __init__(self, console: Console = stderr_console) -> None:
        self.console = console
        self.live: Live | None = None
        self.plan: SweepPlan | None = None
        self.started = 0.0
        self.reported: set[int] = set()

    def start(self, plan: SweepPlan, results: dict[int, RunResult], started: float) -> None:
        self.plan, self.started = plan, started
        skipped = len(results)
        self.console.print(f"sweep: {plural(len(plan.points), 'run')} in {plan.runs_dir}"
                           + (f", {skipped} already completed (skipped)" if skipped else "")
                           + (f", {plan.duplicates} duplicate points merged" if plan.duplicates else ""))
        self.reported = set(results)
        if self.console.is_terminal:
            self.live = Live(self._render(results, []), console=self.console, refresh_per_second=2,
                             transient=True)
            self.live.start()

    def update(self, results: dict[int, RunResult], pending: list[SweepPoint]) -> None:
        if self.live is not None:
            self.live.update(self._render(results, pending))
            return
        for index, result in sorted(results.items()):
            if index not in self.reported:
                self.reported.add(index)
                acc = result.metric("val_accuracy")
                extra = f" val_accuracy={show(acc)}" if acc is not None else f" ({result.reason})"
                self.console.print(f"[{len(self.reported)}/{len(self.plan.points)}] {result.status} "
                                   f"{result.point.label}{extra}", markup=False, highlight=False, soft_wrap=True)

    def finish(self, outcome: SweepOutcome) -> None:
        if self.live is None:
            self.update({r.point.index: r for r in outcome.results}, [])
        self.close()

    def close(self) -> None:
        """Stop the live display (also when the sweep stops on an error)."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _render(self, results: dict[int, RunResult], pending: list[SweepPoint]) -> Group:
        plan = self.plan
        running = [p for p in pending if _started_since(p.run_dir, self.started)]
        n_failed = sum(r.status != "completed" for r in results.values())
        head = Text(f"{len(results)}/{len(plan.points)} done, {n_failed} failed, {len(running)} running, "
                    f"{len(pending) - len(running)} queued  ({time.time() - self.started:.0f} s)")
        table = Table()
        table.add_column("#", justify="right")
        for key in plan.keys:
            table.add_column(key, justify="right")
        table.add_column("status")
        table.add_column("epoch", justify="right")
        table.add_column("val_accuracy", justify="right")
        room = max(self.console.height - 8, 4)
        finished = sorted((r for r in results.values() if not r.skipped), key=lambda r: r.point.index)
        finished = finished[-max(room - len(running), 0):] if room > len(running) else []
        epochs = self.plan.base.train.epochs
        for p in running[:room]:
            total = p.config.get("train", {}).get("epochs", epochs)
            table.add_row(str(p.index + 1), *(show(p.params.get(k)) for k in plan.keys), Text("running", "cyan"),
                          f"{_epochs_done(p.run_dir)}/{total}", "")
        for r in finished:
            table.add_row(str(r.point.index + 1), *(show(r.point.params.get(k)) for k in plan.keys), status_text(r),
                          show(r.metric("epochs")), show(r.metric("val_accuracy")))
        return Group(head, table)


def _started_since(run_dir: Path, since: float) -> bool:
    try:
        return (run_dir / "config.yaml").stat().st_mtime >= since - 1
    except OSError:
        return False
