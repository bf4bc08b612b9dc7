"""`nnrun study`'s pre-registered analysis (paired or Welch per relation, Holm within a claim, exact tests for
divergence, diverged runs counted, grid-edge flags, effect sizes and seeds needed), checked from outside: a
small real study on digits runs to a report (with a `diverges` relation without `b`, which once died in
`Expectation.label`), and every interval, p-value and verdict of its `study.json` is recomputed here with
scipy.stats and the rule docs/study.md states, without nnrun's stats code. The study's runs train in this
process (no worker start-up) and the machine's calibration is skipped, so the file takes seconds."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.errors import UserInputError
from nnrun.study.report import build_document, to_markdown
from nnrun.study.results import relation_results
from nnrun.study.spec import validate_study
from nnrun.study.stats import (
    CONTRADICTED,
    NOT_RESOLVED,
    SUPPORTED,
    divergence_seeds_needed,
    divergence_test,
    holm,
    paired_interval,
    seeds_needed,
    verdict_of_tests,
)

runner = CliRunner()
ALPHA, POWER = 0.05, 0.8  # docs/study.md


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def fast_study(monkeypatch):
    """Skip the machine's calibration and train the study's runs one after another in this process."""
    from nnrun.study import run as study_run
    from nnrun.study.plan import Estimate
    from nnrun.sweep.execute import RunResult, SweepOutcome, run_point

    def in_process(plan, **kw):
        results = []
        for point in plan.points:
            r = run_point({"config": point.config, "run_dir": str(point.run_dir), "blas_threads": 1})
            results.append(RunResult(point, r["status"], reason=r["reason"], summary=r["summary"] or {}))
        return SweepOutcome(plan, results)

    monkeypatch.setattr(study_run, "estimate", lambda plan, **kw: Estimate(1.0, 0, {}, 0.0, {}))
    monkeypatch.setattr(study_run, "run_sweep", in_process)


def write(tmp_path, raw):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


BASE = {"data": {"dataset": "digits"}, "model": {"hidden": [16]}, "optim": {"name": "momentum", "lr": 0.05},
        "train": {"epochs": 1, "batch_size": 64}}
ONE_ARM = {
    "name": "one-arm", "base": BASE, "budgets": {"quick": {"seeds": 2}},
    "claims": [{"id": "blowup", "statement": "A huge rate diverges.", "metric": "test_accuracy",
                "arms": {"huge": {"optim.lr": 1000.0}, "base": {}},
                "expect": [{"a": "huge", "relation": "diverges"}]}]}


def test_a_diverges_relation_without_b_runs_to_a_report(tmp_path, fast_study):
    out = tmp_path / "out"
    result = invoke("study", write(tmp_path, ONE_ARM), "--out", out, "--json")
    assert result.exit_code == 0, result.output
    relation = json.loads(result.stdout)["claims"][0]["relations"][0]
    assert relation["label"] == "huge diverges" and relation["b"] is None
    assert relation["diverged"] == {"a": [2, 2]} and relation["test"]["method"] == "exact binomial"
    assert relation["verdict"] == NOT_RESOLVED and relation["p_support"] == pytest.approx(0.5)  # 2 of 2: 2 x 1/4
    assert "`huge diverges`" in (out / "report.md").read_text()
    assert (out / "report.html").is_file() and (out / "figures" / "blowup.png").read_bytes()[:4] == b"\x89PNG"
    again = invoke("study", write(tmp_path, ONE_ARM), "--out", out)  # the terminal's summary table, nothing trained
    assert again.exit_code == 0 and "exact binomial" in again.output and "huge: 2/2 diverged (p = 0.5)" in " ".join(
        again.output.split())


# ---- the statistics against scipy -----------------------------------------------------------------------

def test_paired_interval_and_tests_match_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(0.5, 0.02, 5)
    b = a - 0.01 + rng.normal(0, 0.005, 5)
    ours = paired_interval(a, b)
    theirs = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (ours.low, ours.high, ours.df) == pytest.approx((theirs.low, theirs.high, 4.0), abs=1e-12)
    assert paired_interval([0.5], [0.4]) is None
    with pytest.raises(ValueError, match="same length"):
        paired_interval([0.5, 0.6], [0.4])


def test_divergence_tests_are_exact():
    three = divergence_test(3, 3, 0, 3)  # the example: Fisher p = 0.1, not supported at 0.05
    assert three.p_support == pytest.approx(scipy_stats.fisher_exact([[3, 0], [0, 3]]).pvalue)
    assert three.p_support == pytest.approx(0.1) and verdict_of_tests((three.p_support, three.p_contradict)) \
        == NOT_RESOLVED
    five = divergence_test(5, 5, 0, 5)
    assert five.p_support == pytest.approx(2 / 252) and five.rates["b"]["high"] == pytest.approx(1 - 0.025 ** 0.2)
    assert verdict_of_tests((five.p_support, five.p_contradict)) == SUPPORTED
    reverse = divergence_test(0, 5, 5, 5)
    assert verdict_of_tests((reverse.p_support, reverse.p_contradict)) == CONTRADICTED
    # one arm: against half its runs; 5 of 5 is p = 2/32, 6 of 6 is 2/64
    assert verdict_of_tests(_p(divergence_test(5, 5))) == NOT_RESOLVED
    assert verdict_of_tests(_p(divergence_test(6, 6))) == SUPPORTED
    assert verdict_of_tests(_p(divergence_test(0, 6))) == CONTRADICTED
    assert divergence_test(0, 0) is None
    # seeds needed: 3 of 3 against 0 of 3 resolves at 4 per arm (p = 2/70); equal rates point nowhere
    assert divergence_seeds_needed(3, 3, 0, 3) == (4, None)
    assert divergence_seeds_needed(3, 3) == (6, None)
    assert divergence_seeds_needed(1, 3, 1, 3)[0] is None


def _p(test):
    return test.p_support, test.p_contradict


def test_holm_adjusts_within_the_family():
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.04, 0.09, None, 0.09])
    assert holm([0.2]) == [0.2] and holm([]) == []


@pytest.mark.parametrize("analysis, spreads, distance", [("paired", (0.01,), 0.005), ("welch", (0.01, 0.02), 0.02),
                                                          ("one-sample", (0.03,), 0.01)])
def test_seeds_needed_give_about_80_percent_power_by_the_noncentral_t(analysis, spreads, distance):
    n, why = seeds_needed("greater", None, distance, analysis, spreads)
    assert why is None and n > 2

    def power(k):  # the exact power of the one-sided test at 0.025, by the noncentral t distribution
        if analysis == "welch":
            va, vb = spreads[0] ** 2 / k, spreads[1] ** 2 / k
            se, df = math.sqrt(va + vb), (va + vb) ** 2 / ((va ** 2 + vb ** 2) / (k - 1))
        else:
            se, df = spreads[0] / math.sqrt(k), k - 1
        return scipy_stats.nct.sf(scipy_stats.t.ppf(0.975, df), df, distance / se)

    assert power(n) > 0.78 and power(n - 1) < 0.8
    assert seeds_needed("about_equal", 0.01, 0.01, "paired", (0.01,))[0] is None  # on the threshold
    n, why = seeds_needed("greater", None, 0.0, "paired", (0.0,))  # arms identical at every seed
    assert n is None and why.startswith("the two arms gave the same value at every seed")
    assert seeds_needed("greater", None, 0.0, "paired", (0.01,))[1].startswith("the difference sits on")
    assert seeds_needed("greater", None, 1e-9, "paired", (1.0,)) == (None, "more than 10,000 seeds")


# ---- the study file ----------------------------------------------------------------------------------------

CLAIM = {"id": "c", "statement": "s", "metric": "test_accuracy", "arms": {"a": {"model.init": "zeros"}, "b": {}},
         "expect": [{"a": "b", "relation": "greater", "b": "a"}]}


@pytest.mark.parametrize("expect, message", [
    ({"a": "b", "relation": "greater", "value": 0.5, "analysis": "paired"}, "analysis (paired or welch) is for"),
    ({"a": "b", "relation": "diverges", "analysis": "welch"}, "metric and analysis do not apply"),
    ({"a": "b", "relation": "greater", "b": "a", "analysis": "ranks"}, "Input should be 'paired' or 'welch'"),
])
def test_analysis_keys_are_checked(expect, message):
    raw = {"name": "s", "base": BASE, "budgets": {"quick": {"seeds": 2}}, "claims": [{**CLAIM, "expect": [expect]}]}
    with pytest.raises(UserInputError, match="invalid study") as e:
        validate_study(raw)
    assert message in str(e.value)


def test_a_paired_relation_needs_the_same_seeds_in_both_arms(tmp_path, fast_study):
    claim = {**CLAIM, "arms": {"a": {"model.init": "zeros", "seed": 10}, "b": {}}}
    raw = {"name": "s", "base": BASE, "budgets": {"quick": {"seeds": 2}}, "claims": [claim]}
    result = invoke("study", write(tmp_path, raw), "--dry-run", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert ("relation `b > a`: the paired analysis matches runs by seed, but arm b runs seeds 0, 1 and arm a seeds "
            "10, 11; give the arms the same seeds, or set analysis: welch") in " ".join(result.output.split())
    for welch in ({**raw, "analysis": "welch"},
                  {**raw, "claims": [{**claim, "expect": [{**CLAIM["expect"][0], "analysis": "welch"}]}]}):
        result = invoke("study", write(tmp_path, welch), "--dry-run", "--out", tmp_path / "out")
        assert result.exit_code == 0, result.output
    bad = {**raw, "claims": [{**claim, "arms": {"a": {"seed": "x"}, "b": {}}}]}
    result = invoke("study", write(tmp_path, bad), "--dry-run", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "seed is the first seed of its runs" in " ".join(result.output.split())


# ---- a real study, checked from outside ---------------------------------------------------------------------

STUDY = {
    "name": "outside", "base": BASE, "budgets": {"quick": {"seeds": 3}},
    "claims": [
        {"id": "init", "statement": "He beats zeros; small is not much worse.", "metric": "test_accuracy",
         "arms": {"he": {}, "zeros": {"model.init": "zeros"}, "small": {"model.init": "small"}},
         "expect": [{"a": "he", "relation": "greater", "b": "zeros"},
                    {"a": "he", "relation": "greater", "b": "zeros", "analysis": "welch"},
                    {"a": "small", "relation": "at_least", "b": "he", "margin": 0.05},
                    {"a": "he", "relation": "about_equal", "value": 0.5, "margin": 0.05},
                    {"a": "zeros", "relation": "less", "b": "small", "metric": "train_loss"}]},
        {"id": "blowup", "statement": "A huge rate diverges.", "metric": "test_accuracy",
         "arms": {"huge": {"optim.lr": 1000.0}, "base": {}},
         "expect": [{"a": "huge", "relation": "diverges"}, {"a": "huge", "relation": "diverges", "b": "base"},
                    {"a": "base", "relation": "greater", "b": "huge"}]},
        {"id": "chance", "statement": "A diverged run counts as chance.", "metric": "test_accuracy",
         "diverged_value": 0.1, "arms": {"huge": {"optim.lr": 1000.0}, "base": {}},
         "expect": [{"a": "base", "relation": "greater", "b": "huge"}]},
        {"id": "tuned", "statement": "A tuned rate is at least as good.", "metric": "test_accuracy",
         "arms": {"tuned": {"select": {"optim.lr": [0.05, 0.01]}}, "zeros": {"model.init": "zeros"}},
         "expect": [{"a": "tuned", "relation": "at_least", "b": "zeros", "margin": 0.01}]},
    ]}


def test_every_interval_and_verdict_of_a_real_study_recomputed_with_scipy(tmp_path, fast_study, monkeypatch):
    from nnrun.study import figures

    monkeypatch.setattr(figures, "claim_figure", lambda result, path: path.write_bytes(b"\x89PNG"))  # seconds each
    out = tmp_path / "out"
    result = invoke("study", write(tmp_path, STUDY), "--out", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "study.json").read_text())
    assert report["statistics"]["analysis"] == "paired" and report["statistics"]["alpha"] == ALPHA
    checked = {"paired": 0, "welch": 0, "one-sample": 0, "diverges": 0, "diverged left out": 0}
    for claim in report["claims"]:
        verdicts = check_claim(claim, checked)
        assert claim["verdict"] == verdicts
    assert all(checked.values()), checked
    claims = {c["id"]: c for c in report["claims"]}
    # diverged runs are counted, never dropped: without diverged_value the relation is not resolved, with it counted
    base_vs_huge = claims["blowup"]["relations"][2]
    assert base_vs_huge["interval"] is None and base_vs_huge["verdict"] == NOT_RESOLVED
    assert "3 of 3 runs of huge diverged and the claim sets no diverged_value" in base_vs_huge["reason"]
    assert claims["chance"]["arms"]["huge"]["metrics"]["test_accuracy"]["values"] == [0.1, 0.1, 0.1]
    assert claims["blowup"]["relations"][1]["p_support"] == pytest.approx(0.1)  # 3 of 3 against 0 of 3
    # a two-value grid: every choice is at an edge, and flagged
    edges = claims["tuned"]["arms"]["tuned"]["grid_edges"]
    chosen = [r["selected"]["optim.lr"] for r in claims["tuned"]["arms"]["tuned"]["runs"]]
    assert sorted(s for e in edges for s in e["seeds"]) == [0, 1, 2]
    assert all(chosen[e["seeds"][0]] == e["value"] == {"smallest": 0.01, "largest": 0.05}[e["edge"]] for e in edges)
    markdown = (out / "report.md").read_text()
    assert "**Grid edge**: arm tuned chose the" in markdown and "Selections at a grid edge" in markdown
    assert "Holm's correction" in markdown and "| paired t |" in markdown and "| Welch t |" in markdown


def check_claim(claim, checked):
    """Recompute each relation of a study.json claim with scipy and the documented rule; returns the claim's
    verdict by that rule."""
    arms = claim["arms"]
    raw, p_contra = [], []
    for r in claim["relations"]:
        if r["relation"] == "diverges":
            (ka, na), counts_b = r["diverged"]["a"], r["diverged"].get("b")
            if counts_b:
                kb, nb = counts_b
                table = [[ka, na - ka], [kb, nb - kb]]
                ps = 2 * scipy_stats.fisher_exact(table, alternative="greater").pvalue
                pc = 2 * scipy_stats.fisher_exact(table, alternative="less").pvalue
            else:
                ps = 2 * scipy_stats.binomtest(ka, na, 0.5, alternative="greater").pvalue
                pc = 2 * scipy_stats.binomtest(ka, na, 0.5, alternative="less").pvalue
            ps, pc = min(ps, 1.0), min(pc, 1.0)
            assert (r["p_support"], r["p_contradict"]) == pytest.approx((ps, pc), abs=1e-12)
            raw.append(SUPPORTED if ps < ALPHA else CONTRADICTED if pc < ALPHA else NOT_RESOLVED)
            p_contra.append(pc)
            checked["diverges"] += 1
            continue
        metric = r["metric"]
        values = {arm: {run["seed"]: v for run, v in zip(arms[arm]["runs"], arms[arm]["metrics"][metric]["values"],
                                                         strict=True) if v is not None}
                  for arm in (r["a"], r["b"]) if arm is not None}
        if any(arms[arm]["metrics"][metric]["diverged_left_out"] for arm in values):
            assert r["interval"] is None and r["p_contradict"] is None and r["reason"]
            raw.append(NOT_RESOLVED)
            p_contra.append(None)
            checked["diverged left out"] += 1
            continue
        verdict, contra = check_t_relation(r, values)
        checked[r["analysis"]] += 1
        raw.append(verdict)
        p_contra.append(contra)
    adjusted = _holm(p_contra)
    final = [NOT_RESOLVED if v == CONTRADICTED and not (q is not None and q < ALPHA) else v
             for v, q in zip(raw, adjusted, strict=True)]
    assert [r["verdict"] for r in claim["relations"]] == final
    for r, q in zip(claim["relations"], adjusted, strict=True):
        assert r["p_contradict_holm"] == (None if q is None else pytest.approx(q))
    if all(v == SUPPORTED for v in final):
        return SUPPORTED
    return CONTRADICTED if CONTRADICTED in final else NOT_RESOLVED


def check_t_relation(r, values):
    """One relation's interval, p-values and effect recomputed with scipy; returns its verdict alone (by the
    interval rule) and its p of contradiction. Values without any spread (se = 0) follow the documented rule:
    the interval is the point, a test's p is 0 beyond its threshold and 1 otherwise, and there is no effect."""
    a = np.array(list(values[r["a"]].values()))
    m = r["margin"] or 0.0
    if r["b"] is None:
        assert r["analysis"] == "one-sample"
        x, y = a - r["value"], None
    elif r["analysis"] == "paired":
        seeds = [s for s in values[r["a"]] if s in values[r["b"]]]
        x = np.array([values[r["a"]][s] - values[r["b"]][s] for s in seeds])
        y = None
        assert r["pairs"] == len(seeds)
    else:
        assert r["analysis"] == "welch"
        x, y = a, np.array(list(values[r["b"]].values()))
    flat = np.ptp(x) == 0 and (y is None or np.ptp(y) == 0)
    d = x.mean() - (0.0 if y is None else y.mean())
    if flat:
        low = high = d
        assert r["effect"]["standardized"] is None
    elif y is None:
        low, high = scipy_stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
        assert r["effect"]["standardized"] == pytest.approx(x.mean() / x.std(ddof=1))
    else:
        low, high = scipy_stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
        assert r["effect"]["standardized"] == pytest.approx((x.mean() - y.mean())
                                                            / math.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2))
    assert (r["interval"]["low"], r["interval"]["high"]) == pytest.approx((low, high), abs=1e-10)

    def p(theta, alternative):  # twice the one-sided p of the difference against theta
        if flat:
            return 0.0 if (d > theta if alternative == "greater" else d < theta) else 1.0
        test = (scipy_stats.ttest_1samp(x - theta, 0.0, alternative=alternative) if y is None else
                scipy_stats.ttest_ind(x - theta, y, equal_var=False, alternative=alternative))
        return min(1.0, 2 * test.pvalue)

    support, contra = {
        "greater": (p(0, "greater"), p(0, "less")), "less": (p(0, "less"), p(0, "greater")),
        "at_least": (p(-m, "greater"), p(-m, "less")), "at_most": (p(m, "less"), p(m, "greater")),
        "about_equal": (max(p(-m, "greater"), p(m, "less")), min(p(m, "greater"), p(-m, "less")))}[r["relation"]]
    assert (r["p_support"], r["p_contradict"]) == pytest.approx((support, contra), abs=1e-10)
    rule = {"greater": (low > 0, high < 0), "less": (high < 0, low > 0),
            "about_equal": (-m < low and high < m, low > m or high < -m),
            "at_least": (low > -m, high < -m), "at_most": (high < m, low > m)}[r["relation"]]
    return (SUPPORTED if rule[0] else CONTRADICTED if rule[1] else NOT_RESOLVED), contra


def _holm(p):
    """Holm's step-down adjusted p-values, written from the textbook: a missing p counts as 1."""
    k, filled = len(p), [1.0 if x is None else x for x in p]
    order = np.argsort(filled, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate([(k - i) * filled[j] for i, j in enumerate(order)]))
    out = [0.0] * k
    for i, j in enumerate(order):
        out[j] = float(adjusted[i])
    return [None if x is None else q for x, q in zip(p, out, strict=True)]


# ---- Holm on synthetic claims: a contradiction must survive the correction ----------------------------------

def test_holm_turns_a_lone_contradiction_among_many_relations_into_not_resolved():
    claim = validate_study({"name": "s", "budgets": {"quick": {"seeds": 3}}, "claims": [{
        "id": "c", "statement": "s", "metric": "m", "arms": {"a": {}, "b": {}, "c": {}},
        "expect": [{"a": "a", "relation": "greater", "b": "b"}, {"a": "a", "relation": "greater", "b": "c"},
                   {"a": "b", "relation": "about_equal", "b": "c", "margin": 0.5}]}]}).claims[0]
    seeds = [0, 1, 2, 3, 4]

    def arm(values):
        return {"runs": [{"seed": s, "outcome": "completed"} for s in seeds],
                "metrics": {"m": {"values": values, "diverged_left_out": 0}}}

    # a - b: -0.1 on average (sd 0.067: contradicted alone, p = 0.029, not at 3 x 0.029); a - c far less clear
    arms = {"a": arm([1.0, 1.1, 0.9, 1.05, 0.95]), "b": arm([1.18, 1.15, 1.0, 1.2, 0.97]),
            "c": arm([1.2, 0.9, 1.3, 0.8, 1.2])}
    relations = relation_results(claim, arms, lambda e: "paired")
    first = relations[0]
    assert first["p_contradict"] < ALPHA <= first["p_contradict_holm"]
    assert first["verdict"] == NOT_RESOLVED and "not after Holm's correction over the claim's 3" in first["reason"]
    assert first["p_contradict_holm"] == pytest.approx(3 * first["p_contradict"]) and first["seeds_needed"] > 5
    assert [r["verdict"] for r in relations[1:]] == [NOT_RESOLVED, SUPPORTED]


def test_an_old_study_json_still_renders():
    old = {"title": "", "study": "s", "budget": "quick", "machine": {}, "jobs": 1, "threads_per_run": 1,
           "executor": "local", "wall_seconds": 1.0, "estimate_seconds": 1.0, "finished": "now",
           "command": "nnrun study s.yaml",
           "runs": {"distinct": 2, "entries": 2, "trained_now": 2, "reused": 0, "diverged": 0, "failed": 0},
           "budget_settings": {"seeds": 2}, "statistics": {"interval": "Welch's t", "level": 0.95},
           "claims": [{"id": "c", "statement": "s", "source": None, "note": None, "metric": "test_accuracy",
                       "set": {}, "seeds": [0, 1], "verdict": "supported",
                       "arms": {"a": {"overrides": {}, "select": {}, "metrics": {"test_accuracy": {
                           "values": [0.5, 0.6], "n": 2, "mean": 0.55, "std": 0.07}},
                           "runs": [{"seed": 0, "outcome": "completed", "selected": {}}] * 2}},
                       "relations": [{"label": "a > 0.1", "a": "a", "b": None, "value": 0.1, "relation": "greater",
                                      "margin": None, "metric": "test_accuracy",
                                      "a_stats": {"n": 2, "mean": 0.55, "std": 0.07},
                                      "interval": {"estimate": 0.45, "low": 0.1, "high": 0.8, "se": 0.05,
                                                   "df": 1.0, "method": "one-sample t"},
                                      "verdict": "supported", "verdict_label": "supported"}]}]}
    markdown = to_markdown(build_document(old))
    assert "| `a > 0.1` | test_accuracy | one-sample t |" in markdown


SHIPPED = [p for p in sorted(Path(__file__).resolve().parents[1].glob("docs/*/study.json"))
           if "analysis" in (json.loads(p.read_text()).get("statistics") or {})]
"""The reports in docs/ made by today's rules (analyses chosen in the study file, Holm, exact divergence tests);
docs/aids/ predates them, and docs/recipes.md re-analyses it."""


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_every_interval_and_verdict_of_a_shipped_report_recomputed_with_scipy(path):
    """The reports docs/ quotes (claims.md and the rest), checked from outside: each interval, p-value and
    verdict of their study.json recomputed with scipy by the documented rule."""
    report = json.loads(path.read_text())
    checked = {"paired": 0, "welch": 0, "one-sample": 0, "diverges": 0, "diverged left out": 0}
    for claim in report["claims"]:
        assert claim["verdict"] == check_claim(claim, checked), claim["id"]
    assert sum(checked.values()) == sum(len(c["relations"]) for c in report["claims"])
