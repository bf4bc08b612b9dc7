"""Search: Optuna's samplers choose a sweep's points as it goes, and its pruners stop runs that fall behind.

`nnrun sweep CONFIG --search tpe|cmaes|random --trials N --space KEY=DIST(...) [--prune median|asha|hyperband]`

- The space: each `--space` distribution maps onto an Optuna distribution (`optuna_space`): `uniform` ->
  `FloatDistribution`, `loguniform` -> `FloatDistribution(log=True)`, `randint` -> `IntDistribution`,
  `choice` (and each `--grid` list) -> `CategoricalDistribution` (values that are not plain scalars, such as
  lists, stand in it as their JSON text). nnrun samples nothing itself: Optuna's sampler does.
- The study: Optuna's, stored in the SQLite file `RUNS_DIR/optuna.db` and named after the base config, the
  space, the sampler, the pruner and the seed (`plan_search`), so the same command finds the same study. A
  trial is asked (`Study.ask`), its config resolved and hashed like a sweep point's and run as an ordinary
  run directory (`RUNS_DIR/NAME-HASH12`) by the sweep's executor; its result is told (`Study.tell`): the
  run's `val_METRIC` (the loss's headline metric: accuracy maximized, rmse minimized), `PRUNED` or `FAIL`.
- Resuming: a rerun keeps the finished trials (complete, pruned, failed), resumes the trials left running
  (their runs continue from their checkpoints) and asks new ones until the study holds N trials; the
  sampler's seed is drawn from the sweep seed and the number of trials already there, so a rerun does not
  replay the first draws. Each trial's run directory is claimed with its lock before it runs, as a sweep
  point's, so concurrent sweeps over one runs-dir share the study (ask/tell through the storage) and never
  train a trial twice. A trial whose config is already another trial's run gets that run's result without
  training (a categorical space proposes a combination again); `duplicates` counts them.
- Pruning: each run reports its `val_METRIC` after every epoch to the study from its worker (`PruneHook`,
  through `run_experiment`'s `on_epoch`) and stops with status `pruned` when the pruner says so: `median`
  (below the median of earlier trials at that epoch, after 5 trials), `asha` (asynchronous successive
  halving: rungs at 1, 4, 16, ... epochs, the best quarter of the trials that reach a rung goes on),
  `hyperband` (brackets of successive halving, reduction factor 3, up to the base config's `train.epochs`).
  A run's last epoch is reported but never pruned: by then it has spent its epochs. A pruned run is an
  outcome: the sweep exits 0, and `nnrun runs` lists it as `pruned`, after the completed runs.

Optuna is an optional extra (`pip install 'nnrun[search]'`), imported only when a search runs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import warnings
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from nnrun.config import ExperimentConfig, compose_raw, flatten, set_dotted, validate_config
from nnrun.errors import UserInputError, did_you_mean
from nnrun.rundir import RunDir
from nnrun.runstore import config_headline, higher_is_better
from nnrun.signals import Interrupted, shielded
from nnrun.sweep.execute import (
    FINISHED,
    WAIT_SECONDS,
    Completions,
    RunResult,
    SweepOutcome,
    SweepProgress,
    _result_of,
    outcome_report,
    run_point,
)
from nnrun.sweep.gpu import gpu_budget, on_gpu, threads_by_device
from nnrun.sweep.plan import SweepPlan, SweepPoint, check_data, config_hash, describe_point
from nnrun.sweep.space import Distribution, parse_grid, parse_space
from nnrun.train import RunPruned
from nnrun.workers import EXECUTORS, GPU_RUN_THREADS, check_executor, open_executor, stop_workers

SAMPLERS = ("tpe", "cmaes", "random")
"""Optuna samplers `--search` names: TPESampler, CmaEsSampler, RandomSampler."""
PRUNERS = ("median", "asha", "hyperband")
"""Optuna pruners `--prune` names: MedianPruner, SuccessiveHalvingPruner, HyperbandPruner."""
INSTALL_HINT = "pip install 'nnrun[search]'"
STORAGE_FILE = "optuna.db"
"""The SQLite file in the runs-dir that holds its searches' studies."""
SQLITE_TIMEOUT_SECONDS = 60
"""How long a process waits for another's write to the study's SQLite file."""
ASHA_REDUCTION = 4
"""asha: rungs at 1, 4, 16, ... epochs, each keeping the best quarter of the trials that reach it (Optuna's
default reduction factor)."""
HYPERBAND_REDUCTION = 3
"""hyperband: the reduction factor of its brackets (Optuna's default)."""
MEDIAN_STARTUP_TRIALS = 5
"""median: trials that run to the end before any is pruned."""
SEARCH_EXECUTORS = ("local", "dask")
"""The executors a search's trials run on (ask/tell from this process, the pruner from each worker)."""
MAX_CHECKED_VALUES = 100
"""Values of a `choice` checked against the config before a search starts."""


def import_optuna(option: str) -> Any:
    """The `optuna` package (logging set to warnings), or a `UserInputError` naming `option` and how to install it."""
    try:
        import optuna
    except ImportError:
        raise UserInputError(f"{option} needs Optuna, which is not installed: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def check_search_options(*, search: str | None, trials: int | None, prune: str | None,
                         space: list[str] | tuple[str, ...] = (), n_random: int | None = None) -> None:
    """Refuse (`UserInputError`, naming the option) search options that do not go together, before anything
    is read or imported."""
    if search is None:
        if trials is not None:
            raise UserInputError("--trials is the number of trials of a search: give --search "
                                 f"{'|'.join(SAMPLERS)} with it (or --random N for random points)")
        if prune is not None:
            raise UserInputError("--prune stops the runs of a search that fall behind: give --search "
                                 f"{'|'.join(SAMPLERS)} with it")
        return
    if search not in SAMPLERS:
        raise UserInputError(f"--search {search}: unknown sampler; allowed: {', '.join(SAMPLERS)}"
                             f"{did_you_mean(search, SAMPLERS)}")
    if prune is not None and prune not in PRUNERS:
        raise UserInputError(f"--prune {prune}: unknown pruner; allowed: {', '.join(PRUNERS)}"
                             f"{did_you_mean(prune, PRUNERS)}")
    if n_random is not None:
        raise UserInputError("--search and --random both choose the points: give one of them")
    if trials is None:
        raise UserInputError(f"--search {search} needs the number of trials: --trials N")
    if trials < 1:
        raise UserInputError(f"--trials needs a number of trials >= 1, got {trials}")
    if not space:
        raise UserInputError(f"--search {search} needs the keys to search: give --space 'KEY=DIST(...)', e.g. "
                             "--space 'optim.lr=loguniform(1e-4,1e-1)'")


# ---- the space ------------------------------------------------------------------------------------


@dataclass
class OptunaSpace:
    """The search space as Optuna distributions, and how to read a trial's params back as config values."""

    distributions: dict[str, Any]
    encoded: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per categorical key whose values are not plain scalars: JSON text -> the value."""

    def decode(self, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's params as `{dotted key: config value}`, in the space's key order."""
        out = {}
        for key in self.distributions:
            if key in params:
                value = params[key]
                out[key] = copy.deepcopy(self.encoded[key][value]) if key in self.encoded else value
        return out


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def optuna_space(optuna: Any, distributions: dict[str, Distribution]) -> OptunaSpace:
    """Map nnrun's distributions onto Optuna's (module docstring)."""
    out = OptunaSpace({})
    for key, dist in distributions.items():
        if dist.name == "uniform":
            out.distributions[key] = optuna.distributions.FloatDistribution(float(dist.args[0]), float(dist.args[1]))
        elif dist.name == "loguniform":
            out.distributions[key] = optuna.distributions.FloatDistribution(float(dist.args[0]), float(dist.args[1]),
                                                                            log=True)
        elif dist.name == "randint":
            out.distributions[key] = optuna.distributions.IntDistribution(int(dist.args[0]), int(dist.args[1]))
        elif dist.name == "choice":
            values = list(dist.args)
            if all(_scalar(v) for v in values):
                out.distributions[key] = optuna.distributions.CategoricalDistribution(values)
            else:
                texts = [json.dumps(v, sort_keys=True) for v in values]
                out.distributions[key] = optuna.distributions.CategoricalDistribution(texts)
                out.encoded[key] = dict(zip(texts, values, strict=True))
        else:  # a distribution registered in nnrun.sweep.space that Optuna has no counterpart for
            raise UserInputError(f"--space {key}={dist}: {dist.name} has no Optuna distribution; use uniform, "
                                 "loguniform, randint or choice")
    return out


def search_space(grid: dict[str, list[Any]], space: dict[str, Distribution]) -> dict[str, Distribution]:
    """The `--space` distributions, with each `--grid` key a `choice` of its values (as `--random` does)."""
    both = sorted(set(grid) & set(space))
    if both:
        raise UserInputError(f"{', '.join(both)} given both as --grid and --space; choose one")
    return {**{k: Distribution("choice", tuple(v)) for k, v in grid.items()}, **space}


def _probe_values(dist: Distribution) -> list[Any]:
    """Values of `dist` to check against the config before searching: every choice (up to a limit), both ends
    of randint, and the middle of a float range (on the log scale for loguniform): a key that takes no float,
    or no value of that kind, fails there."""
    if dist.name == "choice":
        return list(dist.args[:MAX_CHECKED_VALUES])
    low, high = dist.args
    if dist.name == "randint":
        return [low, high]
    if dist.name == "loguniform":
        return [math.exp((math.log(low) + math.log(high)) / 2)]
    return [(low + high) / 2]


# ---- the plan -------------------------------------------------------------------------------------


@dataclass
class SearchPlan:
    """What a search will run: the base config (`raw` mapping and validated), the space, the sampler, the
    number of trials, the pruner, the study's name and where it is stored, the metric told to the study.
    `sweep` holds the trials' points as they are made (`sweep.total` is the number of trials)."""

    sweep: SweepPlan
    raw: dict[str, Any]
    source: str
    space: dict[str, Distribution]
    sampler: str
    trials: int
    prune: str | None
    study_name: str
    metric: str
    maximize: bool
    labels: dict[str, Any] = field(default_factory=dict)
    """Labels every trial's params start with (a study's claim, arm and seed); not part of the space."""

    @property
    def storage_path(self) -> Path:
        return self.sweep.runs_dir / STORAGE_FILE

    @property
    def epochs(self) -> int:
        return self.sweep.base.train.epochs


def plan_search(config: str | Path | None, *, overrides: list[str] | tuple[str, ...] = (),
                grid: list[str] | tuple[str, ...] = (), space: list[str] | tuple[str, ...] = (),
                sampler: str = "tpe", trials: int = 1, prune: str | None = None, seed: int | None = None,
                runs_dir: str | Path = "runs") -> SearchPlan:
    """A search from command-line style arguments (the options of `nnrun sweep`); runs nothing. The base
    config, the space's values and the data are checked (`UserInputError`) before a trial exists."""
    check_search_options(search=sampler, trials=trials, prune=prune, space=space)
    raw: dict[str, Any] = compose_raw(config, overrides).raw  # the config's defaults files merged, --set applied
    distributions = search_space(parse_grid(grid), parse_space(space))
    return search_plan(raw, distributions, source=str(config) if config is not None else "defaults",
                       sampler=sampler, trials=trials, prune=prune, seed=seed, runs_dir=runs_dir)


def search_plan(raw: dict[str, Any], distributions: dict[str, Distribution], *, source: str, sampler: str,
                trials: int, prune: str | None = None, seed: int | None = None, runs_dir: str | Path = "runs",
                labels: dict[str, Any] | None = None, check: bool = True) -> SearchPlan:
    """A search over `distributions` from the config mapping `raw` (what `plan_search` and a study's `search`
    selection build). `seed` seeds the sampler (default: the config's); `check` loads the base config's data
    once (a missing data root is an error before any trial)."""
    if sampler not in SAMPLERS:
        raise UserInputError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if not distributions:
        raise UserInputError("a search needs keys to search (--space KEY=DIST(...))")
    base = validate_config(copy.deepcopy(raw), source=source)
    _check_values(raw, distributions, source)
    resolved = base.model_dump(mode="json")
    headline = config_headline(flatten(resolved)) or "accuracy"
    sweep_seed = base.seed if seed is None else seed
    identity = {"base": resolved, "space": {k: str(d) for k, d in distributions.items()}, "sampler": sampler,
                "prune": prune, "seed": sweep_seed}
    runs_root = Path(runs_dir).expanduser().absolute()
    labels = dict(labels or {})
    sweep = SweepPlan(base, [*labels, *distributions], [], runs_root, sweep_seed, total=trials)
    if check:
        key = config_hash(resolved)
        check_data([SweepPoint(0, {}, resolved, key, runs_root / f"{base.name}-{key}")])
    return SearchPlan(sweep, raw, source, distributions, sampler, trials, prune,
                      f"{base.name}-{config_hash(identity)}", f"val_{headline}", higher_is_better(headline), labels)


def _check_values(raw: dict[str, Any], distributions: dict[str, Distribution], source: str) -> None:
    """Every probed value of each key (`_probe_values`) set alone into the base must give a valid config."""
    errors: list[str] = []
    for key, dist in distributions.items():
        for value in _probe_values(dist):
            point = copy.deepcopy(raw)
            try:
                set_dotted(point, key, copy.deepcopy(value))
                validate_config(point, source=f"{source}, --space {key}={dist} at {describe_point({key: value})}")
            except UserInputError as e:
                errors.append(str(e))
                break
    if errors:
        raise UserInputError(f"{len(errors)} keys of the search space give invalid configs; nothing was run.\n"
                             + "\n".join(errors))


# ---- Optuna's parts ---------------------------------------------------------------------------------


def storage_lock(path: Path) -> FileLock:
    """The lock around making the SQLite file's tables and a study in it (`.optuna.db.lock` beside it): two
    sweeps starting at once would both create them, and the second fail."""
    return FileLock(str(path.with_name(f".{path.name}.lock")))


def open_storage(optuna: Any, path: Path) -> Any:
    """The study storage in the SQLite file `path` (made when missing), waiting for other processes' writes."""
    with storage_lock(path):
        return optuna.storages.RDBStorage(f"sqlite:///{path}",
                                          engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}})


def make_sampler(optuna: Any, name: str, seed: int, jobs: int = 1) -> Any:
    """The Optuna sampler `name` seeded with `seed`; TPE with a constant liar when several trials run at once
    (it does not propose again what the trials in flight try)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for constant_liar
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, constant_liar=jobs > 1)
        if name == "cmaes":
            try:
                import cmaes  # noqa: F401  (Optuna's CmaEsSampler needs it)
            except ImportError:
                raise UserInputError(f"--search cmaes needs the cmaes package, which is not installed: "
                                     f"{INSTALL_HINT}") from None
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(optuna: Any, name: str | None, epochs: int) -> Any:
    """The Optuna pruner `name` (None: none) for runs of `epochs` epochs (module docstring)."""
    if name is None:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=ASHA_REDUCTION)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1),
                                          reduction_factor=HYPERBAND_REDUCTION)


def sampler_seed(seed: int, trials_before: int) -> int:
    """The sampler's seed in a session that finds `trials_before` trials in the study: a rerun draws anew
    instead of replaying the first session's draws (which would propose its first trials again)."""
    return int(np.random.SeedSequence([seed, trials_before]).generate_state(1)[0])


@dataclass
class PruneHook:
    """Called in a run's worker after each epoch (`run_experiment`'s `on_epoch`): reports the epoch's
    `metric` to trial `trial_id` of the study and raises `RunPruned` when the pruner says so. Picklable: the
    study is opened in the worker on the first epoch. `epochs`: the pruner's longest run (hyperband's brackets);
    `last_epoch`: this run's last, reported but never pruned (the run has spent its epochs by then)."""

    storage: str
    study_name: str
    trial_id: int
    pruner: str
    epochs: int
    metric: str
    last_epoch: int
    _trial: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_trial": None}

    def __call__(self, row: dict[str, Any]) -> None:
        value = row.get(self.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        trial = self._trial or self._open()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an epoch reported before an interruption is reported again
            trial.report(float(value), step=int(row["epoch"]))
            prune = int(row["epoch"]) < self.last_epoch and trial.should_prune()
        if prune:
            raise RunPruned(f"pruned by the {self.pruner} pruner after epoch {row['epoch']} "
                            f"({self.metric} {value:.4g})")

    def _open(self) -> Any:
        optuna = import_optuna("--prune")
        study = optuna.load_study(study_name=self.study_name, storage=open_storage(optuna, Path(self.storage)),
                                  sampler=optuna.samplers.RandomSampler(),
                                  pruner=make_pruner(optuna, self.pruner, self.epochs))
        self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial


# ---- running --------------------------------------------------------------------------------------


@dataclass
class SearchOutcome(SweepOutcome):
    """A search's results (one per distinct run, by trial number) and the study's state after it: trials by
    state, the best complete trial (`number`, `value`, `params`, `run_dir`), the epochs its runs trained."""

    study_name: str = ""
    storage: str = ""
    sampler: str = ""
    prune: str | None = None
    metric: str = ""
    trials: int = 0
    states: dict[str, int] = field(default_factory=dict)
    best: dict[str, Any] | None = None

    @property
    def epochs(self) -> int:
        """Epochs the search's runs trained (a pruned run's until it stopped)."""
        return sum(int(r.summary.get("epochs") or 0) for r in self.results)


def check_search_executor(executor: str) -> None:
    """A search's trials run on local workers or Dask (`UserInputError` otherwise, before anything runs)."""
    if executor not in SEARCH_EXECUTORS:
        known = f"unknown executor; allowed: {', '.join(EXECUTORS)}" if executor not in EXECUTORS else \
            "a search runs its trials on local worker processes or Dask, not SLURM jobs (yet)"
        raise UserInputError(f"--executor {executor}: {known}")


def run_search(plan: SearchPlan, *, jobs: int = 1, threads: int | None = None, executor: str = "local",
               scheduler: str | None = None, progress: SweepProgress | None = None,
               pool: Executor | None = None) -> SearchOutcome:
    """Run the search `plan` until its study holds `plan.trials` trials, `jobs` trials at a time (module
    docstring); Ctrl-C stops it, the runs in progress saving their state for the next session. `pool`: an
    executor of kind `executor` opened already (a study's searches share one), else one is opened here."""
    optuna = import_optuna(f"--search {plan.sampler}")
    remote = executor == "dask" and bool(scheduler)
    check_search_executor(executor)
    check_executor(executor, scheduler)
    if jobs < 1:
        raise UserInputError(f"--jobs needs a number >= 1, got {jobs}")
    base = plan.sweep.base.model_dump(mode="json")
    base_point = SweepPoint(0, {}, base, config_hash(base), plan.sweep.runs_dir / "base")
    per_run = ({"cpu": threads, "gpu": threads or GPU_RUN_THREADS} if remote
               else threads_by_device([base_point], jobs, threads))
    gpu = None if remote else gpu_budget([base_point], jobs)
    plan.sweep.runs_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(optuna, plan.storage_path)
    with shielded(), storage_lock(plan.storage_path):
        study = optuna.create_study(study_name=plan.study_name, storage=storage, load_if_exists=True,
                                    direction="maximize" if plan.maximize else "minimize",
                                    sampler=optuna.samplers.RandomSampler(),
                                    pruner=make_pruner(optuna, plan.prune, plan.epochs))
        if not study.user_attrs:
            study.set_user_attr("nnrun", {"config": plan.source, "space": {k: str(d) for k, d in plan.space.items()},
                                          "sampler": plan.sampler, "prune": plan.prune, "seed": plan.sweep.seed,
                                          "metric": plan.metric})
    before = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(optuna, plan.sampler, sampler_seed(plan.sweep.seed, before), jobs)
    outcome = SearchOutcome(plan.sweep, [], executor=executor, gpu=gpu, study_name=plan.study_name,
                            storage=str(plan.storage_path), sampler=plan.sampler, prune=plan.prune,
                            metric=plan.metric, trials=plan.trials)
    driver = _Driver(plan, optuna, study, storage, outcome, per_run, jobs)
    driver.load()
    started = time.time()
    if progress:
        progress.start(plan.sweep, driver.results, started)
    try:
        with open_executor(executor, jobs, scheduler) if pool is None else contextlib.nullcontext(pool) as opened:
            driver.run(opened, progress)
    except BaseException:
        if progress:
            progress.close()
        raise
    outcome.results = [driver.results[n] for n in sorted(driver.results)]
    outcome.states, outcome.best = driver.summary()
    if progress:
        progress.finish(outcome)
    return outcome


class _Driver:
    """Asks trials, runs them through the executor and tells their results (`run_search`)."""

    def __init__(self, plan: SearchPlan, optuna: Any, study: Any, storage: Any, outcome: SearchOutcome,
                 per_run: dict[str, int | None], jobs: int) -> None:
        self.plan, self.optuna, self.study, self.storage, self.outcome = plan, optuna, study, storage, outcome
        self.per_run, self.jobs = per_run, jobs
        self.states = optuna.trial.TrialState
        self.full = False  # the study holds all its trials (their count only grows): storage is not asked again
        self.space = optuna_space(optuna, plan.space)
        self.ids: dict[int, int] = {}
        """Trial number -> the storage's trial id."""
        self.points: dict[int, SweepPoint] = {}
        self.owner: dict[str, int] = {}
        """Run hash -> the trial whose run it is; other trials of that config take its result."""
        self.twins: dict[int, list[int]] = {}
        self.results: dict[int, RunResult] = {}
        self.todo: list[int] = []
        self.claims: dict[int, RunDir] = {}
        self.futures: dict[Future, int] = {}
        self.pending: set[Future] = set()
        self.finished = Completions()

    # -- trials and their points

    def _point(self, number: int, params: dict[str, Any]) -> SweepPoint | str:
        """The trial's point (config resolved and hashed like a sweep point's), or why its config is invalid."""
        raw = copy.deepcopy(self.plan.raw)
        try:
            for key, value in params.items():
                set_dotted(raw, key, copy.deepcopy(value))
            cfg: ExperimentConfig = validate_config(raw, source=f"{self.plan.source}, trial {number}: "
                                                                f"{describe_point(params)}")
        except UserInputError as e:
            return str(e)
        resolved = cfg.model_dump(mode="json")
        key = config_hash(resolved)
        return SweepPoint(number, {**self.plan.labels, **params}, resolved, key,
                          self.plan.sweep.runs_dir / f"{cfg.name}-{key}")

    def _own(self, number: int, point: SweepPoint) -> None:
        self.owner[point.key] = number
        self.points[number] = point
        self.plan.sweep.points.append(point)

    def load(self) -> None:
        """Take in the trials of earlier sessions: finished ones as results, running ones to resume."""
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state == self.states.WAITING:
                continue  # enqueued by someone else: `ask` hands it out
            self.ids[trial.number] = trial._trial_id
            point = self._point(trial.number, self.space.decode(trial.params))
            if isinstance(point, str) or set(trial.params) != set(self.space.distributions):
                if not trial.state.is_finished():  # interrupted while asked, or its config no longer validates
                    self._tell_state(trial.number, "failed")
                continue
            owner = self.owner.get(point.key)
            if owner is None:
                self._own(trial.number, point)
                if trial.state.is_finished():
                    self.results[trial.number] = self._earlier(point, trial.state)
                else:
                    self.todo.append(trial.number)
            elif trial.state.is_finished():
                self.outcome.plan.duplicates += 1
            else:
                self._twin(trial.number, owner)

    def _earlier(self, point: SweepPoint, state: Any) -> RunResult:
        """The result of a trial finished before: its run's summary, or the trial's state without one."""
        summary = RunDir(point.run_dir).read_summary() or {}
        status = summary.get("status")
        if status not in (*FINISHED, "failed"):
            status = {self.states.COMPLETE: "completed", self.states.PRUNED: "pruned"}.get(state, "failed")
        return RunResult(point, status, skipped=True, reason=summary.get("reason"), summary=summary)

    def _twin(self, number: int, owner: int) -> None:
        """Trial `number` has the config of trial `owner`'s run: it takes that run's result."""
        self.outcome.plan.duplicates += 1
        with shielded():
            self.storage.set_trial_user_attr(self.ids[number], "same_run_as", owner)
        if owner in self.results:
            self._tell(number, self.results[owner], like=owner)
        else:
            self.twins.setdefault(owner, []).append(number)

    def _ask(self) -> int | None:
        """Ask the study for a new trial; None when it holds all its trials. Returns the trial's number: in
        `todo` when it is to run, else handled already (a twin, or an invalid config told as failed)."""
        if self.full or len(self.study.get_trials(deepcopy=False)) >= self.plan.trials:
            self.full = True
            return None
        with shielded(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask(self.space.distributions)
        number = trial.number
        self.ids[number] = trial._trial_id
        params = self.space.decode(trial.params)
        point = self._point(number, params)
        if isinstance(point, str):
            bad = SweepPoint(number, {**self.plan.labels, **params}, {}, "",
                             self.plan.sweep.runs_dir / f"{self.plan.sweep.base.name}-trial-{number}")
            result = RunResult(bad, "failed", reason=point, summary={"status": "failed", "reason": point})
            self.plan.sweep.points.append(bad)
            self.results[number] = result
            self._tell(number, result)
            return number
        with shielded():
            trial.set_user_attr("run_dir", point.run_dir.name)
        owner = self.owner.get(point.key)
        if owner is not None:
            self._twin(number, owner)
            return number
        self._own(number, point)
        self.todo.append(number)
        return number

    # -- telling

    def _tell(self, number: int, result: RunResult, like: int | None = None) -> None:
        """Tell the study what became of trial `number`'s run; an interrupted or cancelled one stays running
        (the next session resumes it). `like`: the trial whose run it is, when another (its pruned curve is
        copied, so that the sampler ranks both alike)."""
        status = result.status
        if status == "pruned" and like is not None:
            with shielded():
                for step, value in self.storage.get_trial(self.ids[like]).intermediate_values.items():
                    self.storage.set_trial_intermediate_value(self.ids[number], step, value)
        if status == "completed":
            value = result.summary.get(self.plan.metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                with shielded():
                    self.study.tell(number, float(value), skip_if_finished=True)
                return
            status = "failed"
        if status in ("pruned", "failed"):
            self._tell_state(number, status)

    def _tell_state(self, number: int, status: str) -> None:
        state = self.states.PRUNED if status == "pruned" else self.states.FAIL
        with shielded(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna warns of every failed trial
            self.study.tell(number, state=state, skip_if_finished=True)

    def _finished(self, number: int, result: RunResult) -> None:
        self.results[number] = result
        self._tell(number, result)
        for twin in self.twins.pop(number, []):
            self._tell(twin, result, like=number)

    # -- running

    def _start(self, number: int, pool: Any) -> bool:
        """Claim trial `number`'s run directory and submit its run; False when another process holds it."""
        point = self.points[number]
        run = RunDir(point.run_dir)
        run.path.mkdir(parents=True, exist_ok=True)
        if not run.try_claim():
            return False
        state = self.storage.get_trial(self.ids[number]).state
        summary = run.read_summary()
        if state.is_finished():  # another session told it while this one waited
            run.release()
            self._finished(number, self._earlier(point, state))
            return True
        done = ("completed", "pruned") if self.plan.prune is not None else ("completed",)
        if summary is not None and summary.get("status") in done:  # ran to its end, not told yet
            run.release()
            self._finished(number, RunResult(point, summary["status"], skipped=True, reason=summary.get("reason"),
                                             summary=summary))
            return True
        self.claims[number] = run
        gpu = on_gpu(point)
        hook = None
        if self.plan.prune is not None:
            hook = PruneHook(str(self.plan.storage_path), self.plan.study_name, self.ids[number], self.plan.prune,
                             self.plan.epochs, self.plan.metric, int(point.config["train"]["epochs"]))
        payload = {"config": point.config, "run_dir": str(point.run_dir),
                   "blas_threads": self.per_run.get("gpu" if gpu else "cpu"),
                   "gpu_pool_bytes": self.outcome.gpu.share if gpu and self.outcome.gpu else None,
                   "epoch_hook": hook}
        with shielded():  # see Completions
            future = pool.submit(run_point, payload)
            self.finished.watch(future)
            self.futures[future] = number
            self.pending.add(future)
        return True

    def _fill(self, pool: Any) -> None:
        """Start trials until `jobs` run: those to resume first, then new ones asked from the study."""
        held: list[int] = []
        while len(self.pending) < self.jobs:
            if self.todo:
                number = self.todo.pop(0)
            else:
                number = self._ask()
                if number is None:
                    break
                if number not in self.todo:
                    continue
                self.todo.remove(number)
            if not self._start(number, pool):
                held.append(number)
        self.todo[:0] = held

    def run(self, pool: Any, progress: SweepProgress | None) -> None:
        """Run trials until the study holds all of them and none is in flight (or a stop signal)."""
        try:
            while True:
                self._fill(pool)
                if not self.pending:
                    if not self.todo:
                        break
                    time.sleep(WAIT_SECONDS)  # only trials whose runs another process holds are left
                    continue
                done = self.finished.wait_first(self.pending)
                for future in done:  # each stays pending until collected: a stop in between still collects it
                    self._collect(future)
                if progress:
                    progress.update(self.results, [self.points[self.futures[f]] for f in self.pending]
                                    + [self.points[n] for n in self.todo])
        except KeyboardInterrupt as e:
            self.outcome.interrupted = True
            if self.outcome.executor == "local":
                stop_workers(e.signal_name if isinstance(e, Interrupted) else "SIGINT")
            for future in self.pending:
                future.cancel()
            for future in list(self.pending):
                if not future.cancelled():
                    self._collect(future)
            for number in [*self.todo, *(self.futures[f] for f in self.pending if f.cancelled())]:
                if number not in self.results:
                    self.results[number] = RunResult(self.points[number], "cancelled",
                                                     reason="the search was interrupted first")
        finally:
            for run in self.claims.values():
                run.release()

    def _collect(self, future: Future) -> None:
        number = self.futures[future]
        with shielded():
            result = _result_of(self.points[number], future)
            claim = self.claims.pop(number, None)
            if claim is not None:
                claim.release()
            self._finished(number, result)
            self.pending.discard(future)

    def summary(self) -> tuple[dict[str, int], dict[str, Any] | None]:
        """The study's trials by state, and its best complete trial."""
        trials = self.study.get_trials(deepcopy=False)
        states: dict[str, int] = {}
        for trial in trials:
            states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
        complete = [t for t in trials if t.state == self.states.COMPLETE]
        if not complete:
            return states, None
        best = (max if self.plan.maximize else min)(complete, key=lambda t: (t.value, -t.number))
        owner = self.owner.get(self.points[best.number].key) if best.number in self.points else None
        run_dir = (self.plan.sweep.runs_dir / best.user_attrs["run_dir"] if "run_dir" in best.user_attrs
                   else self.points[owner].run_dir if owner is not None else None)
        return states, {"trial": best.number, "index": best.number + 1, "value": best.value,
                        "params": self.space.decode(best.params),
                        "run_dir": str(run_dir) if run_dir else None}


# ---- reports --------------------------------------------------------------------------------------


def search_report(outcome: SearchOutcome) -> dict[str, Any]:
    """A finished search as one JSON-ready object: the sweep's (`outcome_report`) plus `search`."""
    return {**outcome_report(outcome),
            "search": {"sampler": outcome.sampler, "prune": outcome.prune, "trials": outcome.trials,
                       "metric": outcome.metric, "study": outcome.study_name, "storage": outcome.storage,
                       "states": outcome.states, "epochs": outcome.epochs, "best": outcome.best}}


def trial_states(plan: SearchPlan) -> dict[str, int]:
    """The trials the study of `plan` holds, by state (`complete`, `pruned`, `fail`, `running`); empty before the
    study exists (its storage file is not made here)."""
    states: dict[str, int] = {}
    if not plan.storage_path.is_file():
        return states
    optuna = import_optuna(f"--search {plan.sampler}")
    try:
        study = optuna.load_study(study_name=plan.study_name, storage=open_storage(optuna, plan.storage_path))
    except KeyError:  # no such study in the file yet
        return states
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    return states


def trials_done(plan: SearchPlan) -> int:
    """The trials of `plan`'s study that are finished (complete, pruned or failed: a rerun keeps them)."""
    states = trial_states(plan)
    return sum(n for state, n in states.items() if state in ("complete", "pruned", "fail"))


def search_plan_report(plan: SearchPlan) -> dict[str, Any]:
    """The search before it runs (for --dry-run): its space, study and how many trials it holds already."""
    states = trial_states(plan)
    return {"runs_dir": str(plan.sweep.runs_dir), "seed": plan.sweep.seed, "keys": list(plan.space),
            "space": {k: str(d) for k, d in plan.space.items()}, "sampler": plan.sampler, "prune": plan.prune,
            "trials": plan.trials, "metric": plan.metric, "direction": "maximize" if plan.maximize else "minimize",
            "study": plan.study_name,
            "storage": str(plan.storage_path), "states": states,
            "to_ask": max(plan.trials - sum(states.values()), 0)}


def plan_lines(report: dict[str, Any]) -> list[str]:
    """`search_plan_report` as lines for the terminal."""
    done = ", ".join(f"{n} {state}" for state, n in report["states"].items()) or "none yet"
    pruning = f" with {report['prune']} pruning" if report["prune"] else ""
    return [f"search: {report['sampler']}{pruning}, {report['trials']} trials, {report['direction']} "
            f"{report['metric']}",
            *(f"  {k} = {d}" for k, d in report["space"].items()),
            f"study {report['study']} in {report['storage']}: trials {done}; {report['to_ask']} to ask"]
