"""`nnrun study`: plan a study's runs, run what is missing through the sweep store, measure, write the report.

`run_study(path, ...)` is what the command runs:

1. read the study file (`spec.load_study`) and plan every run (`plan.plan_study`): all checks pass
   before anything runs, runs on the GPU must fit its free memory `jobs` at a time
   (`nnrun.sweep.gpu.gpu_budget`), and the estimate must be within the budget's bound;
2. with `dry_run`, return the plan; else run the runs that have not finished (completed, or
   diverged: a diverged run is an outcome, not a failure to retry) with `nnrun.sweep.execute.run_sweep`
   (worker processes or Dask; each run claims its directory's lock; an interrupted run resumes from its
   checkpoint when the study runs again);
3. measure each claim (`results.claim_results`; derived measurements cached in `measurements.json`),
   draw its figure, and write `report.md`, `report.html` and `study.json` into the output folder.

The output folder holds one study under one budget; its `sessions.json` lists every command that
worked on it (start, wall time, runs trained), so the report can give the whole wall time of a study
finished in several sessions. While a study writes there it holds the folder's lock (`.lock`).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from nnrun.errors import UserInputError
from nnrun.io import write_json, write_text
from nnrun.rundir import RunDir
from nnrun.study import figures, stats
from nnrun.study.metrics import Measurer, run_outcome
from nnrun.study.plan import ArmSeed, Candidate, StudyPlan, check_bound, estimate, finished, plan_study
from nnrun.study.report import FIGURES_DIR, build_document, to_html, to_markdown
from nnrun.study.results import claim_results
from nnrun.study.scales import load_beside
from nnrun.study.spec import load_study
from nnrun.sweep.execute import SweepProgress, run_sweep
from nnrun.sweep.gpu import GpuBudget, gpu_budget, threads_by_device
from nnrun.sweep.plan import SweepPlan
from nnrun.sweep.search import SearchOutcome, check_search_executor, run_search
from nnrun.sweep.slurm import SlurmSettings, check_slurm
from nnrun.workers import available_cores, check_executor, open_executor

REPORT_FILES = {"markdown": "report.md", "html": "report.html", "json": "study.json"}
"""What a study writes into its output folder, besides `figures/`, `measurements.json` and `sessions.json`."""
MEASUREMENTS_FILE = "measurements.json"
SESSIONS_FILE = "sessions.json"
LOCK_FILE = ".lock"


def default_out(name: str, budget: str) -> Path:
    """The output folder when none is given: `runs/study-NAME-BUDGET` (the same on every call, so that a
    rerun finds its runs)."""
    return Path("runs") / f"study-{name}-{budget}"


def run_study(path: str | Path, *, budget: str | None = None, overrides: list[str] | tuple[str, ...] = (),
              out: Path | None = None, runs_dir: Path | None = None, jobs: int = 1, threads: int | None = None,
              executor: str = "local", scheduler: str | None = None, only: list[str] | None = None,
              max_minutes: float | None = None, dry_run: bool = False, overwrite: bool = False,
              progress: SweepProgress | None = None, on_plan: Any = None,
              slurm: SlurmSettings | None = None, beside: list[Path] | tuple[Path, ...] = ()) -> dict[str, Any]:
    """Run the study in `path` under `budget` (module docstring). Returns the plan (`dry_run`) or the report
    object written to `study.json`, with `files` (what was written), `interrupted` and `failed` (runs that
    failed other than by diverging). `on_plan(plan_report)` is called once the plan is checked. `slurm`: the
    jobs of `executor="slurm"` (`nnrun.sweep.slurm`), checked before the study plans or calibrates anything.
    `beside`: output folders of this study at other budgets, read before anything runs; the report then shows
    each relation at every budget (`nnrun.study.scales`)."""
    started = time.time()
    check_executor(executor, scheduler)
    if executor == "slurm":
        slurm = check_slurm(slurm or SlurmSettings(cpus_per_task=threads))
    elif slurm is not None:
        raise UserInputError(f"--slurm is for --executor slurm (given: --executor {executor})")
    path = Path(path)
    study, base = load_study(path)
    budget = study.budget_name(budget)
    others = {}
    for folder in beside:
        record = load_beside(folder, study.name, budget)
        if record["budget"] in others:
            raise UserInputError(f"--beside {folder}: budget {record['budget']!r} is given twice")
        others[record["budget"]] = record
    out = Path(out) if out is not None else default_out(study.name, budget)
    runs_dir = Path(runs_dir) if runs_dir is not None else out / "runs"
    if not dry_run:
        _check_out(out, study.name, budget, overwrite)
    plan = plan_study(study, base, source=path, budget=budget, overrides=overrides, only=only, runs_dir=runs_dir)
    if plan.searches() and not dry_run:
        check_search_executor(executor)  # before the calibration and the lock, as every executor check
    remote = executor == "dask" and bool(scheduler) or executor == "slurm"
    per_run = ((threads or (slurm.threads(False) if slurm else 1)) if remote
               else max(threads_by_device(plan.sweep.points, jobs, threads).values()))
    gpu = None if remote or dry_run else gpu_budget([p for p in plan.sweep.points if not finished(p)], jobs)
    plan.estimate = estimate(plan, jobs=jobs, threads=per_run)
    bound = max_minutes if max_minutes is not None else study.budgets[budget].max_minutes
    report = plan_report(plan, bound)
    if on_plan is not None:
        on_plan(report)
    check_bound(plan, bound)
    if dry_run:
        return report
    lock = FileLock(out / LOCK_FILE)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except Timeout:
        raise UserInputError(f"{out} is in use by another nnrun study; wait for it to finish") from None
    except OSError as e:
        raise UserInputError(f"cannot use the output folder {out}: {e.strerror or e}") from None
    try:
        return _run(plan, out=out, started=started, jobs=jobs, threads=threads, per_run=per_run, executor=executor,
                    scheduler=scheduler, progress=progress, gpu=gpu, slurm=slurm, others=list(others.values()))
    finally:
        lock.release()


def _check_out(out: Path, name: str, budget: str, overwrite: bool) -> None:
    """Refuse an output folder that holds another study's report, or report files a study did not write."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} exists and is not a folder")
    if overwrite or not out.is_dir():
        return
    previous = out / REPORT_FILES["json"]
    if previous.is_file():
        try:
            old = json.loads(previous.read_text())
        except (OSError, ValueError):
            old = {}
        if not isinstance(old, dict) or old.get("study") != name or old.get("budget") != budget:
            raise UserInputError(f"{out} holds the report of another study ({old.get('study')}, budget "
                                 f"{old.get('budget')}); choose another --out or pass --overwrite")
        return
    clash = [f for f in (REPORT_FILES["markdown"], REPORT_FILES["html"]) if (out / f).exists()]
    if clash:
        raise UserInputError(f"{out} already holds {', '.join(clash)}, not written by this study; choose another "
                             "--out or pass --overwrite")


def plan_report(plan: StudyPlan, bound: float | None) -> dict[str, Any]:
    """The plan as one JSON-ready object: runs per claim, distinct, done and left, and the estimate."""
    done = plan.done_keys()
    left = plan.search_trials_left()  # a search's trials count as runs: its trials, done or left
    claims = []
    for claim_id in plan.claims:
        by_arm = plan.arms[claim_id]
        runs_of = [run for runs in by_arm.values() for run in runs]
        keys = {c.key for run in runs_of if run.search is None for c in run.candidates}
        searches = {run.search.study_name: run.search.trials for run in runs_of if run.search is not None}
        entries = sum(run.search.trials if run.search else len(run.candidates) for run in runs_of)
        seeds = len(next(iter(by_arm.values())))
        claims.append({"id": claim_id, "arms": len(by_arm), "seeds": seeds, "runs": entries,
                       "distinct": len(keys) + sum(searches.values()),
                       "done": len(keys & done) + sum(n - left[name] for name, n in searches.items())})
    entries = sum(c["runs"] for c in claims)
    trials = {run.search.study_name: run.search.trials for run in plan.searches()}
    distinct = len(plan.sweep.points) + sum(trials.values())
    est = plan.estimate
    return {"study": plan.study.name, "budget": plan.budget, "file": str(plan.source),
            "runs_dir": str(plan.sweep.runs_dir), "claims": claims, "entries": entries,
            "distinct": distinct, "shared": entries - distinct,
            "done": len(done) + sum(trials.values()) - sum(left.values()),
            "to_run": len(plan.sweep.points) - len(done) + sum(left.values()),
            "searches": {"count": len(trials), "trials": sum(trials.values()), "left": sum(left.values())},
            "estimate_seconds": est.seconds if est else None, "estimate_own_seconds": est.own_seconds if est else None,
            "max_minutes": bound, "calibration": est.calibration if est else None}


def _run(plan: StudyPlan, *, out: Path, started: float, jobs: int, threads: int | None, per_run: int, executor: str,
         scheduler: str | None, progress: SweepProgress | None, gpu: GpuBudget | None,
         slurm: SlurmSettings | None = None, others: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    todo = [p for p in plan.sweep.points if not finished(p)]
    sweep = SweepPlan(plan.sweep.base, plan.sweep.keys, todo, plan.sweep.runs_dir, plan.sweep.seed,
                      plan.sweep.duplicates)
    trained = 0
    interrupted = False
    if todo:
        outcome = run_sweep(sweep, jobs=jobs, threads=threads if executor == "local" else None,
                            executor=executor, scheduler=scheduler, progress=progress, gpu=gpu, slurm=slurm)
        interrupted = outcome.interrupted
        trained = sum(not r.skipped and r.status in ("completed", "failed") for r in outcome.results)
    if not interrupted:
        searched, interrupted = _run_searches(plan, jobs=jobs, threads=threads if executor == "local" else None,
                                              executor=executor, scheduler=scheduler, progress=progress)
        trained += searched
    estimate_seconds = plan.estimate.seconds if plan.estimate else None
    if interrupted:
        _record_session(out, started, trained, estimate_seconds, interrupted=True)
        return {"study": plan.study.name, "budget": plan.budget, "interrupted": True, "failed": [], "files": {},
                "out": str(out)}
    summaries = {p.key: RunDir(p.run_dir).read_summary() for p in plan.sweep.points}
    measurer = Measurer(out / MEASUREMENTS_FILE)
    claims = []
    (out / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    for claim in plan.study.claims:
        if claim.id not in plan.arms:
            continue
        result = claim_results(plan, claim, summaries, measurer)
        measurer.save()
        figure = f"{FIGURES_DIR}/{claim.id}.png"
        figures.claim_figure(result, out / figure)
        result["figure"] = figure
        claims.append(result)
    outcomes = [run_outcome(summaries[p.key]) for p in plan.sweep.points]
    failed = [str(p.run_dir) for p, o in zip(plan.sweep.points, outcomes, strict=True)
              if o in ("failed", "missing")]
    sessions = _record_session(out, started, trained, estimate_seconds)
    report = {
        "study": plan.study.name, "title": plan.study.title, "description": plan.study.description,
        "file": str(plan.source), "budget": plan.budget, "budgets": list(plan.study.budgets),
        "budget_settings": plan.study.budgets[plan.budget].model_dump(mode="json"),
        "overrides": plan.overrides, "command": shlex.join(["nnrun", *sys.argv[1:]]),
        "machine": machine_record(), "jobs": jobs, "threads_per_run": per_run, "executor": executor,
        "wall_seconds": time.time() - started, "sessions": sessions,
        "estimate_seconds": estimate_seconds,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "runs": {"entries": sum(len(r.candidates) for by_arm in plan.arms.values() for runs in by_arm.values()
                                for r in runs),
                 "distinct": len(plan.sweep.points), "trained_now": trained,
                 "reused": len(plan.sweep.points) - trained, "diverged": outcomes.count("diverged"),
                 "failed": len(failed), "runs_dir": str(plan.sweep.runs_dir)},
        "statistics": stats.settings(plan.study.analysis),
        "claims": claims,
        "other_budgets": others or [],
    }
    report["wall_seconds"] = time.time() - started
    sessions[-1]["wall_seconds"] = report["wall_seconds"]
    write_json(out / SESSIONS_FILE, sessions)
    files = {"json": str(write_json(out / REPORT_FILES["json"], report))}
    blocks = build_document(report)
    files["markdown"] = str(write_text(out / REPORT_FILES["markdown"], to_markdown(blocks)))
    files["html"] = str(write_text(out / REPORT_FILES["html"], to_html(blocks, out, report["title"] or
                                                                         report["study"])))
    return {**report, "interrupted": False, "failed": failed, "files": files, "out": str(out)}


def _run_searches(plan: StudyPlan, *, jobs: int, threads: int | None, executor: str, scheduler: str | None,
                  progress: SweepProgress | None) -> tuple[int, bool]:
    """Run the search of every arm and seed that selects by one (`nnrun.sweep.search`, its study in the runs
    folder's optuna.db, continued by a rerun), and make the trials' runs its candidates. Returns the runs trained
    and whether a stop signal interrupted it."""
    trained = 0
    runs = [r for by_arm in plan.arms.values() for arm_runs in by_arm.values() for r in arm_runs if r.search]
    if not runs:
        return 0, False
    with open_executor(executor, jobs, scheduler) as pool:  # one pool for all the searches
        for run in runs:
            outcome = run_search(run.search, jobs=jobs, threads=threads, executor=executor, scheduler=scheduler,
                                 progress=progress, pool=pool)
            trained += sum(not r.skipped and r.status in ("completed", "failed", "pruned") for r in outcome.results)
            if outcome.interrupted:
                return trained, True
            _take_trials(plan, run, outcome)
    return trained, False


def _take_trials(plan: StudyPlan, run: ArmSeed, outcome: SearchOutcome) -> None:
    """The runs of a finished search become the candidates of its arm and seed, and points of the plan."""
    labels = set(run.search.labels)
    run.candidates = []
    for result in outcome.results:
        point = result.point
        if not point.config:  # a trial whose config did not validate: no run
            continue
        run.candidates.append(Candidate({k: v for k, v in point.params.items() if k not in labels}, point.config,
                                        point.key))
        if point.key not in plan.points:
            plan.points[point.key] = point
            plan.sweep.points.append(point)


def _record_session(out: Path, started: float, trained: int, estimate: float | None,
                    interrupted: bool = False) -> list[dict[str, Any]]:
    """Append this command to the folder's sessions.json and return the list."""
    try:
        sessions = json.loads((out / SESSIONS_FILE).read_text())
        sessions = sessions if isinstance(sessions, list) else []
    except (OSError, ValueError):
        sessions = []
    sessions.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                     "wall_seconds": time.time() - started, "estimate_seconds": estimate, "trained": trained,
                     "interrupted": interrupted,
                     "command": shlex.join(["nnrun", *sys.argv[1:]])})
    write_json(out / SESSIONS_FILE, sessions)
    return sessions


def machine_record() -> dict[str, Any]:
    """Where the study ran: host, processor, cores, kernel, BLAS, versions and the source commit."""
    from nnrun.provenance import start_record

    record = start_record()
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    keys = ("hostname", "kernel", "architecture", "blas", "blas_kernel", "nnrun_version", "python", "numpy",
            "git_commit", "git_dirty")
    return {**{k: record.get(k) for k in keys}, "cpu": cpu, "cores": available_cores()}
