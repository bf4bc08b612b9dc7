"""A study's results: per claim, the chosen run of each arm and seed, the arms' metrics, and each relation's
interval and verdict (everything `study.json` holds, and what the report shows).

Per arm and seed, the run is its only run, or with a selection the candidate with the best
validation metric among those that completed (`choose`); when none completed but one diverged, the
arm diverged at that seed. A selected numeric value that is the smallest or largest of its grid is
flagged (`grid_edges`: the best value may lie beyond the grid).

A metric's values are those of the chosen runs; a diverged run counts as the claim's
`diverged_value` when it has one. Without it a diverged run has no value, and it is never silently
dropped: a relation whose arms have such runs gets no interval and is not resolved, with the reason
and the counts (the runs that survived would be a biased sample). Each relation's interval, tests,
effect size and seeds needed, and the claim's verdict with Holm's correction, are as
`nnrun.study.stats` states (`relation_results`).
"""

from __future__ import annotations

from collections.abc import Callable
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
    CONTRADICTED,
    NOT_RESOLVED,
    ONE_SAMPLE,
    combine,
    describe,
    divergence_seeds_needed,
    divergence_test,
    effect_size,
    holm_verdicts,
    one_sample_interval,
    p_values,
    paired_interval,
    seeds_needed,
    verdict,
    verdict_label,
    verdict_of_tests,
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
        arm = claim.arm(arm_name, plan.budget)
        metrics = {metric: _arm_metric(metric, chosen_runs, summaries, measurer, claim.diverged_value)
                   for metric in claim.metrics()}
        arms[arm_name] = {"overrides": arm.overrides, "select": arm.select,
                          "search": arm.search.report() if arm.search is not None else None,
                          "seeds": [r["seed"] for r in chosen_runs],
                          "runs": chosen_runs, "metrics": metrics, "grid_edges": grid_edges(arm.select, chosen_runs),
                          "curve": _curves(chosen_runs, plan),
                          "layers": _layers(claim, chosen_runs, summaries, measurer)}
    relations = relation_results(claim, arms, plan.study.analysis_of)
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


def grid_edges(select: dict[str, list[Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where a selection chose the smallest or largest value of a numeric grid (two values or more): per key
    and edge, the value, the grid and the seeds (of runs that completed) that chose it."""
    edges = []
    for key, values in select.items():
        if len(values) < 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        for edge, value in (("smallest", min(values)), ("largest", max(values))):
            seeds = [r["seed"] for r in runs if r["outcome"] == "completed" and r["selected"].get(key) == value]
            if seeds:
                edges.append({"key": key, "edge": edge, "value": value, "grid": list(values), "seeds": seeds})
    return edges


def relation_results(claim: Claim, arms: dict[str, Any],
                     analysis_of: Callable[[Expectation], str | None]) -> list[dict[str, Any]]:
    """Every relation of `claim` from its `arms` (each with `runs`: seed and outcome, and `metrics`: values per
    seed and the diverged runs left out): interval, tests, effect, the verdict within the claim (Holm's
    correction of contradictions) and, where not resolved, the reason and the seeds needed."""
    entries = [_relation(e, claim, arms, analysis_of(e)) for e in claim.expect]
    alone = [entry.pop("verdict_alone") for entry in entries]
    final, adjusted = holm_verdicts(alone, [entry["p_contradict"] for entry in entries])
    for entry, before, result, q in zip(entries, alone, final, adjusted, strict=True):
        entry["p_contradict_holm"] = q
        if before == CONTRADICTED and result != CONTRADICTED:
            entry["reason"] = (f"contradicted by its own test (p = {entry['p_contradict']:.3g}), but not after Holm's "
                               f"correction over the claim's {len(entries)} relations (adjusted p = {q:.3g})")
        power = entry.pop("power")
        if result == NOT_RESOLVED and power is not None:
            entry["seeds_needed"], entry["seeds_needed_note"] = power()
        entry.update(verdict=result, verdict_label=verdict_label(entry["relation"], result))
    return entries


def _relation(e: Expectation, claim: Claim, arms: dict[str, Any], analysis: str | None) -> dict[str, Any]:
    """One relation alone: its numbers, its verdict before Holm's correction (`verdict_alone`) and `power`, a
    function giving its seeds needed (None where no figure applies)."""
    metric = e.metric or claim.metric
    entry: dict[str, Any] = {"label": e.label(), "a": e.a, "b": e.b, "value": e.value, "relation": e.relation,
                             "margin": e.margin, "metric": None if e.relation == "diverges" else metric,
                             "analysis": analysis, "interval": None, "p_support": None, "p_contradict": None,
                             "effect": None, "seeds_needed": None, "seeds_needed_note": None, "reason": None,
                             "power": None}
    if e.relation == "diverges":
        counts = {role: _diverged(arms[arm]["runs"]) for role, arm in (("a", e.a), ("b", e.b)) if arm is not None}
        args = (*counts["a"], *(counts.get("b") or (None, None)))
        test = divergence_test(*args)
        entry.update(diverged=counts, test=test.as_dict() if test else None)
        if test is None:
            entry.update(reason="an arm has no finished run", verdict_alone=NOT_RESOLVED)
            return entry
        entry.update(p_support=test.p_support, p_contradict=test.p_contradict,
                     effect={"difference": test.effect, "kind": "rate difference" if e.b else "rate - 1/2"},
                     verdict_alone=verdict_of_tests((test.p_support, test.p_contradict)),
                     power=lambda: divergence_seeds_needed(*args))
        return entry
    by_seed = {arm: _values_by_seed(arms[arm], metric) for arm in (e.a, e.b) if arm is not None}
    values_a = list(by_seed[e.a].values())
    entry["a_stats"] = describe(values_a)
    if e.b is not None:
        values_b = list(by_seed[e.b].values())
        entry["b_stats"] = describe(values_b)
    if analysis == "paired":
        seeds = [s for s in by_seed[e.a] if s in by_seed[e.b]]
        xs, ys = [by_seed[e.a][s] for s in seeds], [by_seed[e.b][s] for s in seeds]
        entry["pairs"] = len(seeds)
        interval = paired_interval(xs, ys)
        effect = effect_size("paired", xs, ys)
        spreads = (describe([x - y for x, y in zip(xs, ys, strict=True)])["std"],)
    elif analysis == "welch":
        interval, effect = welch_interval(values_a, values_b), effect_size("welch", values_a, values_b)
        spreads = (entry["a_stats"]["std"], entry["b_stats"]["std"])
    else:
        interval, effect = one_sample_interval(values_a, e.value), effect_size(ONE_SAMPLE, values_a, value=e.value)
        spreads = (entry["a_stats"]["std"],)
    left_out = [(arm, arms[arm]["metrics"][metric]["diverged_left_out"], len(arms[arm]["runs"]))
                for arm in by_seed if arms[arm]["metrics"][metric]["diverged_left_out"]]
    if left_out:
        entry.update(diverged_left_out={arm: k for arm, k, _ in left_out},
                     reason="; ".join(f"{k} of {n} runs of {arm} diverged" for arm, k, n in left_out)
                     + " and the claim sets no diverged_value: their metric is unknown, and the runs that survived "
                       "are a biased sample; set diverged_value (chance accuracy, say) to count them",
                     verdict_alone=NOT_RESOLVED)
        return entry
    if interval is None:
        entry.update(reason="fewer than two seed-matched pairs" if analysis == "paired" else
                     "fewer than two values in an arm", verdict_alone=NOT_RESOLVED)
        return entry
    p = p_values(e.relation, interval, e.margin)
    entry.update(interval=interval.as_dict(), p_support=p[0] if p else None, p_contradict=p[1] if p else None,
                 effect={"difference": interval.estimate, **(effect or {"standardized": None, "kind": None})},
                 verdict_alone=verdict(e.relation, interval, e.margin),
                 power=lambda: seeds_needed(e.relation, e.margin, interval.estimate, analysis or ONE_SAMPLE,
                                            tuple(s or 0.0 for s in spreads)))
    return entry


def _diverged(runs: list[dict[str, Any]]) -> list[int]:
    """`[diverged, finished]`: the runs that diverged, of those that completed or diverged."""
    return [sum(r["outcome"] == "diverged" for r in runs), sum(r["outcome"] in ("completed", "diverged") for r in runs)]


def _values_by_seed(arm: dict[str, Any], metric: str) -> dict[int, float]:
    """An arm's counted values of `metric` by seed (seeds without a value left out)."""
    return {r["seed"]: v for r, v in zip(arm["runs"], arm["metrics"][metric]["values"], strict=True)
            if v is not None}


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
