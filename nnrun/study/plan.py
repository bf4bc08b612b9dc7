"""A study's plan: the resolved config of every (claim, arm, seed, selected values), the checks that must
pass before anything runs, and the estimated time of what is left to run.

Checks (each a `UserInputError`, exit 2, before any run directory is made): every config validates;
the arms of a claim differ (their runs are not all the same); an arm does not override a key its
selection chooses; the data of each distinct data section loads; every metric a claim reads is one
its runs produce (summary and metrics.jsonl keys of the loss, layers that exist); the estimate is
within the budget's `max_minutes`.

The estimate comes from a short calibration on this machine (`calibrate`: epochs of the training
loop and evaluations of two small networks with the BLAS threads a run gets, an eigendecomposition
and a covariance when the study uses PCA; `parallel_factor`: the same epochs in `jobs` processes at
once, which measures what running them side by side costs on this machine now) and a count of each
run's work: loading its data (timed when the data is checked), fitting its preprocessing, its
training steps and evaluations, its files. The wall time is the runs' total over `jobs`, plus the
study's own measurements; it is an estimate: the machine's load can change while the study runs.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnrun.config import apply_override, set_dotted, validate_config
from nnrun.errors import UserInputError
from nnrun.optim import OPTIMIZERS
from nnrun.study.metrics import INIT_METRICS, Produced, check_metric, parse_metric, probe, probe_key, run_outcome
from nnrun.study.spec import StudyFile, seeds_of
from nnrun.sweep.plan import SweepPlan, SweepPoint, config_hash, describe_point, plan_configs
from nnrun.sweep.search import SearchPlan, import_optuna, search_plan, trials_done
from nnrun.tables import fmt
from nnrun.workers import start_resource_tracker, use_threads

MAX_ERRORS_SHOWN = 5
"""Problems listed in one error message."""
MAX_STUDY_RUNS = 5000
"""Most runs (claims x arms x seeds x selection candidates, before identical ones are merged) one plan may
hold; counted before any is resolved (a resolved run takes milliseconds and tens of kB to plan)."""
RUN_OVERHEAD_SECONDS = 0.3
"""Per run: starting it, writing its small files and summary."""
WRITE_BYTES_PER_SECOND = 200e6
"""How fast checkpoint and model files are written (for the estimate)."""
PARALLEL_START_SECONDS = 3.0
"""How long after their start the parallel calibration workers begin together (time to import nnrun)."""
CALIBRATION_EXAMPLES = 2048
CALIBRATION_EVAL = 256
"""Examples of the calibration epochs, and of their evaluations."""


@dataclass
class Candidate:
    """One run of an arm at one seed: the selected `values` ({} without selection), its config and hash."""

    values: dict[str, Any]
    config: dict[str, Any]
    key: str


@dataclass
class ArmSeed:
    """The runs of one arm of one claim at one seed (one run, or one per selection candidate).

    With a search selection (`search`, an Optuna search planned over the arm's config at this seed) the
    candidates are the trials' runs once the search has run (`nnrun.study.run`); until then the one candidate
    is the arm's config without the searched keys, which the plan's checks (data, metrics) look at."""

    claim: str
    arm: str
    seed: int
    candidates: list[Candidate]
    search: SearchPlan | None = None


@dataclass
class Estimate:
    """The estimated wall time of what is left to run: `seconds`, the runs counted, the time of each (by run
    hash), the work of the study's own process (`own_seconds`), and the `calibration` it rests on."""

    seconds: float
    runs: int
    run_seconds: dict[str, float]
    own_seconds: float
    calibration: dict[str, float]


@dataclass
class StudyPlan:
    """Everything a study will run, and where."""

    study: StudyFile
    budget: str
    source: Path
    overrides: list[str]
    claims: list[str]
    arms: dict[str, dict[str, list[ArmSeed]]]
    sweep: SweepPlan
    produced: dict[str, Produced]
    estimate: Estimate | None = None
    points: dict[str, SweepPoint] = field(default_factory=dict)

    def produced_by(self, config: dict[str, Any]) -> Produced:
        return self.produced[probe_key(config)]

    def done_keys(self) -> set[str]:
        """The keys of the distinct runs already completed (or diverged: a finished outcome)."""
        return {p.key for p in self.sweep.points if finished(p)}

    def searches(self) -> list[ArmSeed]:
        """The arm-seeds whose selection is a search, in plan order (each search once: arms that are the same
        search share it)."""
        seen: dict[str, ArmSeed] = {}
        for by_arm in self.arms.values():
            for runs in by_arm.values():
                for run in runs:
                    if run.search is not None:
                        seen.setdefault(run.search.study_name, run)
        return list(seen.values())

    def search_trials_left(self) -> dict[str, int]:
        """Trials each search (by study name) has still to run: its trials less those its study has finished."""
        return {run.search.study_name: max(run.search.trials - trials_done(run.search), 0) for run in self.searches()}


def finished(point: SweepPoint) -> bool:
    """Whether a point's run directory holds a finished run: completed, or diverged (an outcome a claim
    measures, not a failure to retry)."""
    from nnrun.rundir import RunDir

    return run_outcome(RunDir(point.run_dir).read_summary()) in ("completed", "diverged")


def resolve_base(study_base: dict[str, Any], study: StudyFile, budget: str, overrides: list[str]) -> dict[str, Any]:
    """The config mapping every run starts from: the study's base, the budget's `set`, then `--set` items."""
    raw = copy.deepcopy(study_base)
    for key, value in study.budgets[budget].set.items():
        set_dotted(raw, key, copy.deepcopy(value), what=f"budgets.{budget}.set.{key}")
    for item in overrides:
        apply_override(raw, item)
    validate_config(copy.deepcopy(raw), source=f"the study's base config (budget {budget}, --set applied)")
    return raw


def plan_study(study: StudyFile, study_base: dict[str, Any], *, source: Path, budget: str,
               overrides: list[str] | tuple[str, ...] = (), only: list[str] | None = None,
               runs_dir: Path) -> StudyPlan:
    """Resolve and check every run of `study` under `budget`; runs nothing (see the module docstring)."""
    base = resolve_base(study_base, study, budget, list(overrides))
    base_seed = validate_config(copy.deepcopy(base), source="study base").seed
    scope = study.budgets[budget].claims  # the claims this budget measures, None for all
    claims = [c for c in study.claims if (scope is None or c.id in scope) and (only is None or c.id in only)]
    if only is not None:
        unknown = [i for i in only if i not in {c.id for c in study.claims}]
        if unknown:
            raise UserInputError(f"--only {', '.join(unknown)}: no such claim; claims: "
                                 f"{', '.join(c.id for c in study.claims)}")
        outside = [i for i in only if scope is not None and i not in scope]
        if outside:
            raise UserInputError(f"--only {', '.join(outside)}: budget {budget} measures only the claims "
                                 f"{', '.join(scope)} (budgets.{budget}.claims)")
    _check_size(study, claims, budget, base_seed)
    errors: list[str] = []
    arms: dict[str, dict[str, list[ArmSeed]]] = {}
    for claim in claims:
        claim_raw = copy.deepcopy(base)
        own = claim.budgets.get(budget)
        for key, value in [*claim.set.items(), *(own.set.items() if own else [])]:
            set_dotted(claim_raw, key, copy.deepcopy(value), what=f"claim {claim.id}: {key}")
        arms[claim.id] = {}
        for arm_name in claim.arms:
            arm = claim.arm(arm_name, budget)
            clash = sorted(set(arm.overrides) & set(arm.selected_keys))
            if clash:
                errors.append(f"claim {claim.id}, arm {arm_name}: sets {', '.join(clash)}, which its selection "
                              "chooses; remove it from the arm or from select")
                continue
            grid = [dict(zip(arm.select, combo, strict=True)) for combo in itertools.product(*arm.select.values())]
            runs: list[ArmSeed] = []
            first = arm.overrides.get("seed", claim_raw.get("seed", base_seed))  # an arm may start its own seeds
            if not isinstance(first, int) or isinstance(first, bool) or first < 0:
                errors.append(f"claim {claim.id}, arm {arm_name}: seed is the first seed of its runs, a whole "
                              f"number >= 0; got {first!r}")
                continue
            for seed in seeds_of(study, claim, budget, first):
                candidates = []
                for values in grid:
                    raw = copy.deepcopy(claim_raw)
                    where = f"claim {claim.id}, arm {arm_name}, seed {seed}" + (
                        f", {describe_point(values)}" if values else "")
                    try:
                        for key, value in [*arm.overrides.items(), *values.items()]:
                            set_dotted(raw, key, copy.deepcopy(value), what=f"{where}: {key}")
                        raw["seed"] = seed
                        cfg = validate_config(raw, source=where)
                    except UserInputError as e:
                        errors.append(str(e))
                        continue
                    resolved = cfg.model_dump(mode="json")
                    candidates.append(Candidate(values, resolved, config_hash(resolved)))
                runs.append(ArmSeed(claim.id, arm_name, seed, candidates))
                if arm.search is not None and candidates:
                    runs[-1].search = _search(arm.search, raw, where=f"claim {claim.id}, arm {arm_name}, seed {seed}",
                                              labels={"claim": claim.id, "arm": arm_name, "seed": seed},
                                              runs_dir=runs_dir, errors=errors)
            arms[claim.id][arm_name] = runs
    _raise(errors, "the study's runs are invalid; nothing was run")
    _check_pairs(study, claims, arms)
    _check_arms_differ(arms)
    produced = _probe(arms)
    _check_metrics(study, claims, arms, produced)
    labelled = []
    for claim_id, by_arm in arms.items():
        for arm_name, runs in by_arm.items():
            for run in runs:
                for c in run.candidates if run.search is None else ():  # a search's trials are made as it runs
                    arm_label = arm_name + (f" [{describe_point(c.values)}]" if c.values else "")
                    labelled.append(({"claim": claim_id, "arm": arm_label, "seed": run.seed}, c.config))
    sweep = plan_configs(labelled, runs_dir=runs_dir, source=str(source), check=False)
    plan = StudyPlan(study, budget, source, list(overrides), [c.id for c in claims], arms, sweep, produced)
    plan.points = {p.key: p for p in sweep.points}
    return plan


def _search(select: Any, raw: dict[str, Any], *, where: str, labels: dict[str, Any], runs_dir: Path,
            errors: list[str]) -> SearchPlan | None:
    """The Optuna search of a `search` selection over the config mapping `raw` (its seed set): Optuna must be
    installed and the space's values must fit the config; problems go to `errors`."""
    import_optuna(f"{where}: select search: {select.sampler}")
    try:
        return search_plan(raw, select.distributions(), source=where, sampler=select.sampler, trials=select.trials,
                           seed=raw["seed"], runs_dir=runs_dir, labels=labels, check=False)
    except UserInputError as e:
        errors.append(str(e))
        return None


def _candidates(arm: Any) -> int:
    """Runs per seed of an arm: its grid's combinations, or its search's trials."""
    return arm.search.trials if arm.search is not None else math.prod(len(v) for v in arm.select.values())


def _check_size(study: StudyFile, claims: list, budget: str, base_seed: int) -> None:
    """Refuse a plan of more than `MAX_STUDY_RUNS` runs, counted from the study file alone (nothing expanded)."""
    sizes = {c.id: len(seeds_of(study, c, budget, base_seed))
             * sum(_candidates(c.arm(a, budget)) for a in c.arms) for c in claims}
    total = sum(sizes.values())
    if total > MAX_STUDY_RUNS:
        largest = max(sizes, key=sizes.__getitem__)
        raise UserInputError(f"the study plans {total:,} runs under budget {budget} (claim {largest}: "
                             f"{sizes[largest]:,}, arms x seeds x selection candidates); at most "
                             f"{MAX_STUDY_RUNS:,}: use fewer seeds or smaller select lists")


def _raise(errors: list[str], what: str) -> None:
    if errors:
        shown = errors[:MAX_ERRORS_SHOWN]
        more = [f"... and {len(errors) - len(shown)} more"] if len(errors) > len(shown) else []
        raise UserInputError(f"{len(errors)} problems: {what}.\n" + "\n".join(shown + more))


def _check_pairs(study: StudyFile, claims: list, arms: dict[str, dict[str, list[ArmSeed]]]) -> None:
    """A paired relation matches its arms' runs seed by seed: both arms must run at the same seeds."""
    errors = []
    for claim in claims:
        for e in claim.expect:
            if study.analysis_of(e) != "paired":
                continue
            seeds = {arm: [r.seed for r in arms[claim.id].get(arm) or []] for arm in (e.a, e.b)}
            if seeds[e.a] != seeds[e.b]:
                shown = {arm: ", ".join(map(str, s[:5])) + (", ..." if len(s) > 5 else "") for arm, s in seeds.items()}
                errors.append(f"claim {claim.id}, relation `{e.label()}`: the paired analysis matches runs by seed, "
                              f"but arm {e.a} runs seeds {shown[e.a]} and arm {e.b} seeds {shown[e.b]}; give the "
                              "arms the same seeds, or set analysis: welch on the relation (or the study)")
    _raise(errors, "a paired relation needs the same seeds in both arms")


def _check_arms_differ(arms: dict[str, dict[str, list[ArmSeed]]]) -> None:
    errors = []
    for claim_id, by_arm in arms.items():
        first_runs: dict[str, frozenset[str]] = {}
        for arm_name, runs in by_arm.items():
            if not runs:
                continue
            keys = [c.key for c in runs[0].candidates]
            if runs[0].search is not None:  # the trials are not known yet: a search differs from any fixed run
                keys = [f"search {runs[0].search.study_name}"]
            if len(set(keys)) < len(keys):
                errors.append(f"claim {claim_id}, arm {arm_name}: some selected values give the same run (the "
                              "selection changes nothing there)")
            first_runs[arm_name] = frozenset(keys)
        names = list(first_runs)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if first_runs[a] == first_runs[b]:
                    errors.append(f"claim {claim_id}: arms {a} and {b} do not differ (their runs have the same "
                                  "resolved config); give them different overrides")
    _raise(errors, "arms must differ")


def _probe(arms: dict[str, dict[str, list[ArmSeed]]]) -> dict[str, Produced]:
    """Load each distinct data section once (a bad data root stops the study here) and list what its runs
    produce."""
    produced: dict[str, Produced] = {}
    for claim_id, by_arm in arms.items():
        for arm_name, runs in by_arm.items():
            for run in runs[:1]:
                for c in run.candidates:
                    key = probe_key(c.config)
                    if key not in produced:
                        cfg = validate_config(copy.deepcopy(c.config), source=f"claim {claim_id}, arm {arm_name}")
                        try:
                            produced[key] = probe(cfg)
                        except UserInputError as e:
                            raise UserInputError(f"claim {claim_id}, arm {arm_name}: {e}") from None
    return produced


def _check_metrics(study: StudyFile, claims: list, arms: dict[str, dict[str, list[ArmSeed]]],
                   produced: dict[str, Produced]) -> None:
    errors = []
    for claim in claims:
        try:
            for metric in [*claim.metrics(), *([claim.select_by] if claim.select_by else [])]:
                parse_metric(metric)
        except UserInputError as e:
            errors.append(f"claim {claim.id}: {e}")
            continue
        needs: dict[str, set[str]] = {arm: {claim.metric} for arm in claim.arms}
        for e in claim.expect:
            if e.relation != "diverges":
                for arm in (e.a, e.b):
                    if arm is not None:
                        needs[arm].add(e.metric or claim.metric)
        for arm_name, metrics in needs.items():
            runs = arms[claim.id].get(arm_name) or []
            for c in (runs[0].candidates if runs else []):
                made = produced[probe_key(c.config)]
                hidden = c.config["model"]["hidden"]
                wanted = sorted(metrics) + ([claim.select_by or made.primary] if len(runs[0].candidates) > 1 else [])
                for metric in wanted:
                    problem = check_metric(metric, made, hidden)
                    if problem:
                        errors.append(f"claim {claim.id}, arm {arm_name}: metric {metric}: {problem}")
    _raise(sorted(set(errors), key=errors.index), "a metric no run produces")


# ---- the time estimate ------------------------------------------------------------------------------

def calibrate(threads: int, with_eigh: bool) -> dict[str, float]:
    """Time this machine's work per unit, with `threads` BLAS threads (what each run gets):

    - `batch_seconds`, `step_seconds_per_mac`: an epoch of `nnrun.trainer.fit` over n examples in
      batches of b costs `n / b x batch_seconds + n x MACs x step_seconds_per_mac` (forward, backward,
      update, the epoch's evaluation and snapshots; one epoch of two network sizes on random data);
    - `eval_seconds_per_mac`: an evaluation-mode forward pass, per example and MAC;
    - with `with_eigh`: `eigh_seconds_per_cube` (a symmetric eigendecomposition of a D x D matrix costs
      this x D^3) and `covariance_seconds_per_unit` (N rows: this x N x D^2).
    """
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    with use_threads(threads):
        # Warm up: the process's one-time costs (the compiled kernels' set-up, BLAS threads, first-touch pages)
        # belong to no epoch; timed in the first epoch below, they made every run's estimate several times too long.
        _time_epoch([3072, 100, 10], 128, CALIBRATION_EXAMPLES // 4, rng)
        timings = []
        for sizes, batch in (([3072, 100, 10], 128), ([16, 8, 2], 16)):
            macs = sum(i * o for i, o in zip(sizes[:-1], sizes[1:], strict=True))
            timings.append((_time_epoch(sizes, batch, CALIBRATION_EXAMPLES, rng), CALIBRATION_EXAMPLES * macs,
                            CALIBRATION_EXAMPLES / batch))
        (big, big_work, big_batches), (small, small_work, small_batches) = timings
        per_batch = max((small - small_work * big / big_work) / (small_batches - big_batches * small_work / big_work),
                        0.0)
        out["batch_seconds"] = per_batch
        out["step_seconds_per_mac"] = max((big - big_batches * per_batch) / big_work, 1e-13)
        X = rng.standard_normal((1000, 3072), dtype=np.float32)
        W = rng.standard_normal((3072, 100), dtype=np.float32)
        out["eval_seconds_per_mac"] = _repeat(lambda: X @ W) / (1000 * 3072 * 100) * 1.3
        if with_eigh:
            from scipy.linalg import eigh

            d = 768
            A = rng.standard_normal((d, d))
            C = A @ A.T
            out["eigh_seconds_per_cube"] = _repeat(lambda: eigh(C, driver="evd", check_finite=False), 0.3) / d ** 3
            Xc = rng.standard_normal((2000, d), dtype=np.float32)
            out["covariance_seconds_per_unit"] = _repeat(lambda: Xc.T @ Xc, 0.2) / (2000 * d * d) / 2
    return out


def parallel_factor(jobs: int, threads: int) -> float:
    """How much slower an epoch goes when `jobs` runs train at once than when one does alone, measured: the
    calibration epoch in this process alone, then in `jobs` worker processes started together. It counts
    what sharing the cores, the memory bandwidth and the machine with its other processes costs now."""
    if jobs <= 1:
        return 1.0
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with use_threads(threads):
        solo = _calibration_epochs(threads, None)
    start = time.time() + PARALLEL_START_SECONDS
    start_resource_tracker()  # one a SIGHUP to the group cannot kill
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        together = list(pool.map(_calibration_epochs, [threads] * jobs, [start] * jobs))
    return max(1.0, float(np.median(together)) / solo)


def _calibration_epochs(threads: int, start: float | None) -> float:
    """The median seconds of a few calibration epochs (3072-100-10 network), begun at time `start` when given
    (so that parallel workers overlap); runs in a worker process."""
    rng = np.random.default_rng(0)
    with use_threads(threads):
        _time_epoch([3072, 100, 10], 128, CALIBRATION_EXAMPLES // 4, rng)  # warm up
        if start is not None:
            time.sleep(max(start - time.time(), 0.0))
        return float(np.median([_time_epoch([3072, 100, 10], 128, CALIBRATION_EXAMPLES, rng) for _ in range(3)]))


def calibration_config(sizes: list[int], batch: int) -> dict[str, Any]:
    """The config of a calibration epoch for an MLP of `sizes` (inputs, hidden widths, classes) in batches of
    `batch`: a run's defaults (softmax, ReLU, no BatchNorm or dropout, momentum) with small initial weights,
    a constant lr of 0.001, no preprocessing and one epoch evaluated on `CALIBRATION_EVAL` examples."""
    return {"model": {"hidden": list(sizes[1:-1]), "init": "small"}, "preprocess": {"center": "none"},
            "optim": {"name": "momentum", "lr": 0.001, "schedule": "constant"},
            "train": {"epochs": 1, "batch_size": batch, "eval_train_size": CALIBRATION_EVAL, "device": "cpu"}}


def _time_epoch(sizes: list[int], batch: int, n: int, rng: np.random.Generator) -> float:
    """Seconds of one epoch of `nnrun.trainer.fit` of an MLP of `sizes` on n random examples, the model, loss
    and training setup assembled from `calibration_config` by `nnrun.experiment.assemble` as a run's are."""
    from nnrun.datasets import Dataset
    from nnrun.experiment import assemble
    from nnrun.trainer import History, SilentReporter, fit

    X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], n)
    data = Dataset("calibration", X, y, X[:CALIBRATION_EVAL], y[:CALIBRATION_EVAL], X[:1], y[:1],
                   [str(c) for c in range(sizes[-1])], None)
    experiment = assemble(validate_config(calibration_config(sizes, batch), source="the study's calibration"),
                          data=data)
    started = time.perf_counter()
    fit(experiment.model, experiment.loss, experiment.data, experiment.setup, SilentReporter(), History())
    return time.perf_counter() - started


def _repeat(fn: Any, seconds: float = 0.15) -> float:
    """The median time of one call of `fn`, called for about `seconds` (at least 3 times)."""
    times = []
    started = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - started < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 200:
            break
    return float(np.median(times))


def run_seconds(config: dict[str, Any], made: Produced, cal: dict[str, float]) -> float:
    """The estimated seconds of one run of `config` (module docstring)."""
    pre, train, model = config["preprocess"], config["train"], config["model"]
    d = made.n_features
    n_in = pre["pca"] or d
    sizes = [n_in, *model["hidden"], made.outputs]
    macs = sum(i * o for i, o in zip(sizes[:-1], sizes[1:], strict=True))
    params = macs + sum(sizes[1:])
    n_train, n_val, n_test = made.sizes["train"], made.sizes["val"], made.sizes["test"]
    epochs = train["epochs"]
    batches = -(-n_train // train["batch_size"])
    seconds = made.load_seconds + RUN_OVERHEAD_SECONDS
    seconds += epochs * (batches * cal["batch_seconds"] + n_train * macs * cal["step_seconds_per_mac"])
    evaluated = epochs * (min(train["eval_train_size"], n_train) + n_val) + n_train + n_val + n_test
    seconds += evaluated * macs * cal["eval_seconds_per_mac"]
    if pre["pca"] is not None or pre["whiten"]:
        fitted = n_train + (n_val + n_test if pre.get("fit_on") == "all" else 0)
        subset = pre["pca"] is not None and pre["pca"] <= d // 4
        seconds += fitted * d * d * cal.get("covariance_seconds_per_unit", 0.0)
        seconds += d ** 3 * cal.get("eigh_seconds_per_cube", 0.0) * (0.6 if subset else 1.0)
        seconds += (n_train + n_val + n_test) * d * n_in * cal["eval_seconds_per_mac"]
    slots = len(OPTIMIZERS[config["optim"]["name"]].slots)
    seconds += epochs * 4 * params * (4 + 2 * slots) / WRITE_BYTES_PER_SECOND
    return seconds


def estimate(plan: StudyPlan, *, jobs: int, threads: int) -> Estimate:
    """The estimated wall time of the runs of `plan` not finished yet, run `jobs` at a time, plus the
    study's own measurements (init statistics load and preprocess their data)."""
    todo = [p for p in plan.sweep.points if not finished(p)]
    left = plan.search_trials_left()  # a search's trials, each counted as a run of the arm's config
    searched = [(run, n) for run in plan.searches() if (n := left[run.search.study_name])]
    configs = [p.config for p in todo] + [run.candidates[0].config for run, _ in searched]
    with_eigh = any(c["preprocess"]["pca"] is not None or c["preprocess"]["whiten"] for c in configs)
    cal = calibrate(threads, with_eigh) if configs else {}
    if cal:
        cal["parallel_factor"] = parallel_factor(jobs, threads)
    slower = cal.get("parallel_factor", 1.0)
    per_run = {p.key: run_seconds(p.config, plan.produced_by(p.config), cal) * slower for p in todo}
    for run, n in searched:
        config = run.candidates[0].config
        per_run.update({f"{run.search.study_name}#{i}": run_seconds(config, plan.produced_by(config), cal) * slower
                        for i in range(n)})
    wall = 0.0
    if per_run:
        wall = max(sum(per_run.values()) / max(jobs, 1), max(per_run.values()))
    own = _own_seconds(plan, cal)
    return Estimate(wall + own, len(per_run), per_run, own, cal)


def _own_seconds(plan: StudyPlan, cal: dict[str, float]) -> float:
    """The init statistics: one data load and preprocessing fit per data section and seed that needs them."""
    needed: dict[str, dict[str, Any]] = {}
    for claim in plan.study.claims:
        if claim.id not in plan.arms:
            continue
        if not any(parse_metric(m).key in INIT_METRICS for m in claim.metrics()):
            continue
        for runs in plan.arms[claim.id].values():
            for run in runs:
                for c in run.candidates:
                    key = json.dumps([c.config["data"], c.config["preprocess"], c.config["loss"], c.config["seed"]],
                                     sort_keys=True)
                    needed.setdefault(key, c.config)
    return sum(plan.produced_by(c).load_seconds + 1.0 for c in needed.values())


def check_bound(plan: StudyPlan, max_minutes: float | None) -> None:
    """Refuse a plan whose estimate exceeds `max_minutes` (the budget's bound, or the command line's)."""
    if max_minutes is None or plan.estimate is None:
        return
    minutes = plan.estimate.seconds / 60
    if minutes > max_minutes:
        raise UserInputError(
            f"the study would take about {fmt(minutes, 3)} minutes here ({plan.estimate.runs} runs left to run), "
            f"more than the {fmt(float(max_minutes), 3)} minutes budget {plan.budget} allows; nothing was run. "
            "Run fewer claims (--only), more jobs at a time (--jobs), give it more time (--max-minutes), "
            "or lower the budget's seeds or epochs in the study file")
