"""A study's results: per claim, the chosen run of each arm and seed, the arms' metrics, and each relation's
interval and verdict (everything `study.json` holds, and what the report shows).

Per arm and seed, the run is its only run, or with a selection the candidate with the best
validation metric among those that completed (`choose`); when none completed but one diverged, the
arm diverged at that seed. A metric's values are those of the chosen runs; a diverged run counts as
the claim's `diverged_value` when it has one and is left out (and counted) otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nnrun.study.metrics import (
    INIT_METRICS,
    LAYER_METRICS,
    Measurer,
    Produced,
    curve,
    higher_is_better,
    parse_metric,
    run_outcome,
)
from nnrun.study.plan import ArmSeed, Candidate, StudyPlan
from nnrun.study.spec import Claim, Expectation
from nnrun.study.stats import (
    combine,
    describe,
    divergence_verdict,
    one_sample_interval,
    verdict,
    verdict_label,
    welch_interval,
)


def choose(run: ArmSeed, summaries: dict[str, dict[str, Any] | None], select_by: str,
           higher: bool) -> tuple[Candidate | None, str]:
    """The candidate that stands for `run` and its outcome (`completed`, `diverged`, `failed`, `missing`):
    the best completed one by `select_by` (`higher`: larger is better), else a diverged one, else the first."""
    outcomes = [(c, run_outcome(summaries.get(c.key))) for c in run.candidates]
    completed = [c for c, o in outcomes if o == "completed"]
    if len(run.candidates) == 1:
        return outcomes[0] if outcomes else (None, "missing")
    if completed:
        def score(c: Candidate) -> float:
            value = (summaries.get(c.key) or {}).get(select_by)
            if not isinstance(value, (int, float)) or not np.isfinite(value):
                return -np.inf
            return value if higher else -value
        return max(completed, key=score), "completed"
    for wanted in ("diverged", "failed", "missing"):
        for c, o in outcomes:
            if o == wanted:
                return c, o
    return None, "missing"


def claim_results(plan: StudyPlan, claim: Claim, summaries: dict[str, dict[str, Any] | None],
                  measurer: Measurer) -> dict[str, Any]:
    """The results of one claim as a JSON-ready dict (module docstring); figures read the `curves` and
    `layers` of each arm."""
    runs_of = plan.arms[claim.id]
    chosen_of: dict[str, list[dict[str, Any]]] = {}
    for arm_name, runs in runs_of.items():
        chosen_runs = chosen_of[arm_name] = []
        for run in runs:
            made = plan.produced_by(run.candidates[0].config)
            select_by = claim.select_by or made.primary
            higher = made.higher_is_better if select_by == made.primary else higher_is_better(select_by)
            chosen, outcome = choose(run, summaries, select_by, higher)
            chosen_runs.append({"seed": run.seed, "outcome": outcome, "key": chosen.key if chosen else None,
                                "run_dir": str(plan.points[chosen.key].run_dir) if chosen else None,
                                "selected": chosen.values if chosen else {},
                                "candidates": len(run.candidates), "config": chosen.config if chosen else None})
    if any(parse_metric(m).key in INIT_METRICS for m in claim.metrics()):
        measurer.prefetch_init([(r["key"], r["config"]) for runs in chosen_of.values() for r in runs
                                if r["key"] is not None])
    arms: dict[str, Any] = {}
    for arm_name, chosen_runs in chosen_of.items():
        arm = claim.arm(arm_name)
        metrics = {metric: _arm_metric(metric, chosen_runs, summaries, measurer, claim.diverged_value)
                   for metric in claim.metrics()}
        arms[arm_name] = {"overrides": arm.overrides, "select": arm.select, "runs": chosen_runs, "metrics": metrics,
                          "curve": _curves(chosen_runs, plan),
                          "layers": _layers(claim, chosen_runs, summaries, measurer)}
    relations = [_relation(e, claim, arms) for e in claim.expect]
    for entry in arms.values():
        for run in entry["runs"]:
            run.pop("config", None)
    return {"id": claim.id, "statement": claim.statement, "source": claim.source, "note": claim.note,
            "metric": claim.metric, "set": claim.set, "seeds": [r.seed for r in next(iter(runs_of.values()))],
            "diverged_value": claim.diverged_value, "select_by": claim.select_by, "arms": arms,
            "relations": relations, "verdict": combine([r["verdict"] for r in relations])}


def _arm_metric(metric: str, runs: list[dict[str, Any]], summaries: dict[str, dict[str, Any] | None],
                measurer: Measurer, diverged_value: float | None) -> dict[str, Any]:
    """One metric of one arm: the value per seed (None where the run has none), the values counted (a
    diverged run as `diverged_value`), their n, mean and std, and the diverged runs left out."""
    per_seed: list[float | None] = []
    counted: list[float] = []
    left_out = 0
    for run in runs:
        value = None
        if run["key"] is not None:
            point_config = run["config"]
            value = measurer.value(metric, key=run["key"], config=point_config, run_dir=Path(run["run_dir"]),
                                   summary=summaries.get(run["key"]))
        if value is None and run["outcome"] == "diverged":
            if diverged_value is not None:
                value = float(diverged_value)
            else:
                left_out += 1
        per_seed.append(value)
        if value is not None:
            counted.append(value)
    return {"values": per_seed, **describe(counted), "diverged_left_out": left_out,
            "diverged": sum(r["outcome"] == "diverged" for r in runs),
            "missing": sum(r["outcome"] in ("failed", "missing") for r in runs)}


def _relation(e: Expectation, claim: Claim, arms: dict[str, Any]) -> dict[str, Any]:
    metric = e.metric or claim.metric
    entry: dict[str, Any] = {"label": e.label(), "a": e.a, "b": e.b, "value": e.value, "relation": e.relation,
                             "margin": e.margin, "metric": None if e.relation == "diverges" else metric}
    if e.relation == "diverges":
        runs_a = arms[e.a]["runs"]
        counts = {"a": [sum(r["outcome"] == "diverged" for r in runs_a),
                        sum(r["outcome"] in ("completed", "diverged") for r in runs_a)]}
        if e.b is not None:
            runs_b = arms[e.b]["runs"]
            counts["b"] = [sum(r["outcome"] == "diverged" for r in runs_b),
                           sum(r["outcome"] in ("completed", "diverged") for r in runs_b)]
        result = divergence_verdict(*counts["a"], *(counts.get("b") or [None, None]))
        entry.update(diverged=counts, interval=None, verdict=result, verdict_label=verdict_label(e.relation, result))
        return entry
    values_a = [v for v in arms[e.a]["metrics"][metric]["values"] if v is not None]
    entry["a_stats"] = describe(values_a)
    if e.b is not None:
        values_b = [v for v in arms[e.b]["metrics"][metric]["values"] if v is not None]
        entry["b_stats"] = describe(values_b)
        interval = welch_interval(values_a, values_b)
    else:
        interval = one_sample_interval(values_a, e.value)
    result = verdict(e.relation, interval, e.margin)
    entry.update(interval=interval.as_dict() if interval else None, verdict=result,
                 verdict_label=verdict_label(e.relation, result))
    return entry


def _curves(runs: list[dict[str, Any]], plan: StudyPlan) -> dict[str, Any] | None:
    """The validation metric per epoch of the chosen runs: key, mean and std over seeds per epoch."""
    configs = [r["config"] for r in runs if r["config"] is not None]
    if not configs:
        return None
    made: Produced = plan.produced_by(configs[0])
    key = made.primary
    series = [curve(Path(r["run_dir"]), key) for r in runs if r["run_dir"] is not None]
    return {"key": key, **_per_position(series)}


def _layers(claim: Claim, runs: list[dict[str, Any]], summaries: dict[str, dict[str, Any] | None],
            measurer: Measurer) -> dict[str, Any] | None:
    """For a claim whose metric is a layer metric: its value at every hidden layer, mean and std over seeds."""
    name = parse_metric(claim.metric)
    if name.key not in LAYER_METRICS:
        return None
    series = []
    for run in runs:
        if run["key"] is None:
            continue
        values = measurer.layers(claim.metric, key=run["key"], config=run["config"], run_dir=Path(run["run_dir"]),
                                 summary=summaries.get(run["key"]))
        if values is not None:
            series.append(values)
    return {"metric": name.key, **_per_position(series)} if series else None


def _per_position(series: list[list[float | None]]) -> dict[str, list[float | None]]:
    """Mean and std (ddof 0) over the series at each position (epoch or layer), ignoring missing values."""
    length = max((len(s) for s in series), default=0)
    mean: list[float | None] = []
    std: list[float | None] = []
    for i in range(length):
        values = [s[i] for s in series if i < len(s) and s[i] is not None]
        mean.append(float(np.mean(values)) if values else None)
        std.append(float(np.std(values)) if values else None)
    return {"mean": mean, "std": std, "n": len(series)}
