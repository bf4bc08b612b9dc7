"""`nnrun study`: the verdict rule on synthetic numbers, the study file's checks, derived metrics, and tiny
studies on digits end to end (runs, report files, a rerun that runs nothing)."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.errors import UserInputError
from nnrun.study.metrics import check_metric, near_zero_fraction, parse_metric, probe
from nnrun.study.spec import StudyFile, validate_study
from nnrun.study.stats import (
    CONTRADICTED,
    NOT_RESOLVED,
    SUPPORTED,
    Interval,
    combine,
    divergence_test,
    one_sample_interval,
    verdict,
    verdict_of_tests,
    welch_interval,
)
from nnrun.sweep.plan import plan_configs

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# ---- intervals and the verdict rule ----------------------------------------------------------------

def test_welch_interval_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.5, 7), rng.normal(0.6, 1.5, 4)
    ours = welch_interval(a, b)
    theirs = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert ours.estimate == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high), abs=1e-10)
    one = one_sample_interval(a, 0.3)
    theirs = scipy_stats.ttest_1samp(a, 0.3).confidence_interval(0.95)
    assert (one.low + 0.3, one.high + 0.3) == pytest.approx((theirs.low, theirs.high), abs=1e-10)


def test_welch_interval_covers_the_true_difference_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    trials, hits = 2000, 0
    for _ in range(trials):
        iv = welch_interval(rng.normal(0.4, 0.05, 3), rng.normal(0.38, 0.02, 5))
        hits += iv.low <= 0.02 <= iv.high
    assert 0.93 < hits / trials < 0.97


def test_intervals_need_two_values_per_arm_and_collapse_without_spread():
    assert welch_interval([0.5], [0.1, 0.2]) is None and one_sample_interval([1.0], 0.0) is None
    iv = welch_interval([0.1, 0.1, 0.1], [0.3, 0.3])
    assert (iv.low, iv.estimate, iv.high, iv.se, iv.df) == pytest.approx((-0.2, -0.2, -0.2, 0.0, None))


def test_known_differences_and_noise_give_the_expected_verdicts():
    rng = np.random.default_rng(2)
    high, low = rng.normal(0.45, 0.01, 5), rng.normal(0.40, 0.01, 5)
    assert verdict("greater", welch_interval(high, low)) == SUPPORTED
    assert verdict("greater", welch_interval(low, high)) == CONTRADICTED
    assert verdict("less", welch_interval(low, high)) == SUPPORTED
    # the same distribution, measured precisely: equivalent within a margin of 0.01, and not resolved as greater
    same_a, same_b = rng.normal(0.4, 0.002, 20), rng.normal(0.4, 0.002, 20)
    assert verdict("about_equal", welch_interval(same_a, same_b), 0.01) == SUPPORTED
    assert verdict("greater", welch_interval(same_a, same_b)) == NOT_RESOLVED
    # a small true difference under large noise and three seeds cannot be resolved
    noisy_a, noisy_b = rng.normal(0.41, 0.05, 3), rng.normal(0.40, 0.05, 3)
    assert verdict("greater", welch_interval(noisy_a, noisy_b)) == NOT_RESOLVED
    assert verdict("about_equal", welch_interval(noisy_a, noisy_b), 0.01) == NOT_RESOLVED
    assert verdict("about_equal", welch_interval(high, low), 0.01) == CONTRADICTED


@pytest.mark.parametrize("relation, low, high, margin, expected", [
    ("greater", 0.01, 0.02, None, SUPPORTED), ("greater", -0.02, -0.01, None, CONTRADICTED),
    ("greater", -0.01, 0.02, None, NOT_RESOLVED), ("less", -0.02, -0.01, None, SUPPORTED),
    ("less", 0.01, 0.02, None, CONTRADICTED), ("about_equal", -0.01, 0.01, 0.02, SUPPORTED),
    ("about_equal", 0.03, 0.05, 0.02, CONTRADICTED), ("about_equal", -0.05, -0.03, 0.02, CONTRADICTED),
    ("about_equal", 0.01, 0.03, 0.02, NOT_RESOLVED), ("at_least", -0.01, 0.5, 0.02, SUPPORTED),
    ("at_least", -0.05, -0.03, 0.02, CONTRADICTED), ("at_least", -0.03, 0.0, 0.02, NOT_RESOLVED),
    ("at_most", -0.5, 0.01, 0.02, SUPPORTED), ("at_most", 0.03, 0.05, 0.02, CONTRADICTED),
    ("at_most", 0.0, 0.03, 0.02, NOT_RESOLVED),
])
def test_the_verdict_rule_at_its_edges(relation, low, high, margin, expected):
    interval = Interval((low + high) / 2, low, high, 0.01, 4.0, "welch")
    assert verdict(relation, interval, margin) == expected
    assert verdict(relation, None, margin) == NOT_RESOLVED


def test_divergence_and_claim_verdicts():
    def divergence_verdict(*counts):  # exact tests: Fisher's with b, the binomial against 1/2 without
        test = divergence_test(*counts)
        return verdict_of_tests((test.p_support, test.p_contradict))

    assert divergence_verdict(5, 5, 0, 5) == SUPPORTED and divergence_verdict(6, 6) == SUPPORTED
    assert divergence_verdict(3, 3, 0, 3) == NOT_RESOLVED  # Fisher p = 0.1
    assert divergence_verdict(0, 5, 5, 5) == CONTRADICTED and divergence_verdict(0, 6) == CONTRADICTED
    assert divergence_verdict(0, 3, 0, 3) == NOT_RESOLVED and divergence_verdict(3, 3, 3, 3) == NOT_RESOLVED
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([SUPPORTED, NOT_RESOLVED]) == NOT_RESOLVED
    assert combine([SUPPORTED, CONTRADICTED, NOT_RESOLVED]) == CONTRADICTED


# ---- metrics ------------------------------------------------------------------------------------------

def test_metric_names():
    assert parse_metric("test_accuracy").kind == "summary"
    curve = parse_metric("max.val_accuracy")
    assert (curve.kind, curve.key, curve.reduce) == ("curve", "val_accuracy", "max")
    layer = parse_metric("init_activation_std@3")
    assert (layer.kind, layer.key, layer.layer) == ("derived", "init_activation_std", 3)
    for bad in ("test accuracy", "near_zero_weights@2", "distinct_units@0", "avg.val_loss"):
        with pytest.raises(UserInputError):
            parse_metric(bad)


def test_near_zero_fraction_counts_weights_within_one_percent_of_their_layers_largest():
    weights = {"fc0.W": np.array([[1.0, 0.005], [-0.01, 0.5]]), "fc1.W": np.array([[100.0, 0.5, 2.0]]),
               "fc0.b": np.zeros(2), "bn0.gamma": np.zeros(2)}
    assert near_zero_fraction(weights) == pytest.approx(3 / 7)


def test_a_probe_lists_what_runs_of_a_loss_write():
    from nnrun.config import load_config

    made = probe(load_config(None, ["data.dataset=diabetes", "loss.name=l2"]))
    assert {"test_rmse", "test_rmse_baseline", "val_mae", "epochs"} <= made.summary
    assert "test_accuracy" not in made.summary and made.primary == "val_rmse" and not made.higher_is_better
    assert check_metric("max.val_rmse", made, [8]) is None
    assert "metrics.jsonl" in check_metric("max.val_accuracy", made, [8])
    assert "2 hidden layers" in check_metric("init_activation_std@3", made, [8, 8])
    assert "needs a hidden layer" in check_metric("distinct_units", made, [])


def test_init_statistics_of_a_calibrated_linear_layer_on_unit_variance_inputs_are_about_one():
    from nnrun.config import load_config
    from nnrun.experiment import prepare_data
    from nnrun.study.metrics import init_statistics

    cfg = load_config(None, ["preprocess.scale=std", "model.init=calibrated", "model.hidden=[200, 200]"])
    values = init_statistics(cfg, prepare_data(cfg))
    assert len(values["init_preactivation_std"]) == len(values["init_activation_std"]) == 2
    # digits has constant pixels (std 0, left unscaled, all 0): the mean square of a row is the share of others
    assert 0.8 < values["init_preactivation_std"][0] < 1.1


# ---- the study file ----------------------------------------------------------------------------------

CLAIM = {"id": "c", "statement": "s", "metric": "test_accuracy", "arms": {"a": {"model.init": "zeros"}, "b": {}},
         "expect": [{"a": "b", "relation": "greater", "b": "a"}]}


def study_dict(**changes):
    raw = {"name": "tiny", "base": {"data": {"dataset": "digits"}, "model": {"hidden": [8]},
                                    "train": {"epochs": 2, "batch_size": 128}},
           "budgets": {"quick": {"seeds": 2, "max_minutes": 10}}, "claims": [dict(CLAIM)]}
    raw.update(changes)
    return raw


@pytest.mark.parametrize("claim, message", [
    ({**CLAIM, "colour": "red"}, "claims.0.colour: unknown key; allowed keys here: id, statement"),
    ({**CLAIM, "arms": {"a": {}}}, "at least two arms"),
    ({**CLAIM, "expect": [{"a": "b", "relation": "greater", "b": "zz"}]}, "no arm named zz"),
    ({**CLAIM, "expect": [{"a": "b", "relation": "about_equal", "b": "a"}]}, "needs a margin"),
    ({**CLAIM, "expect": [{"a": "b", "relation": "greater", "b": "a", "margin": 0.1}]}, "takes no margin"),
    ({**CLAIM, "expect": [{"a": "b", "relation": "diverges", "value": 1}]}, "diverges takes a"),
    ({**CLAIM, "expect": [{"a": "b", "relation": "greater"}]}, "exactly one of b"),
    ({**CLAIM, "arms": {"a": {"select": {"optim.lr": []}}, "b": {}}}, "non-empty list"),
    ({**CLAIM, "arms": {"a": {"optim lr": 1}, "b": {}}}, "not a dotted config key"),
])
def test_bad_study_files_name_the_problem(claim, message):
    with pytest.raises(UserInputError, match="invalid study") as e:
        validate_study(study_dict(claims=[claim]))
    assert message in str(e.value)


def test_claim_ids_are_unique_and_budgets_exist():
    with pytest.raises(UserInputError, match="repeated: c"):
        validate_study(study_dict(claims=[CLAIM, CLAIM]))
    with pytest.raises(UserInputError, match="budgets.full names no budget"):
        validate_study(study_dict(claims=[{**CLAIM, "budgets": {"full": {"seeds": 3}}}]))


def test_a_claims_budget_select_replaces_its_grid_in_that_budget_only(tmp_path):
    from nnrun.study.plan import plan_study
    from nnrun.study.spec import load_study

    claim = {**CLAIM, "select": {"optim.lr": [0.1, 0.01]},
             "arms": {"a": {"model.init": "zeros"}, "b": {}, "c": {"model.init": "he", "select": {"optim.lr": [0.5]}}},
             "budgets": {"full": {"select": {"optim.lr": [0.003, 0.01, 0.1]}}}}
    path = write_study(tmp_path, study_dict(budgets={"quick": {"seeds": 2}, "full": {"seeds": 2}}, claims=[claim]))
    study, base = load_study(path)
    grids = {}
    for budget in ("quick", "full"):
        plan = plan_study(study, base, source=path, budget=budget, runs_dir=tmp_path / "runs")
        grids[budget] = {arm: sorted(c.config["optim"]["lr"] for c in runs[0].candidates)
                         for arm, runs in plan.arms["c"].items()}
    assert grids["quick"] == {"a": [0.01, 0.1], "b": [0.01, 0.1], "c": [0.5]}
    assert grids["full"] == {"a": [0.003, 0.01, 0.1], "b": [0.003, 0.01, 0.1], "c": [0.5]}  # the arm's own wins
    bad = {**claim, "budgets": {"full": {"select": {"optim.lr": []}}}}
    with pytest.raises(UserInputError, match="non-empty list"):
        validate_study(study_dict(budgets={"quick": {"seeds": 2}, "full": {"seeds": 2}}, claims=[bad]))


def test_a_budget_with_its_own_claims_measures_only_them_on_its_own_seeds(tmp_path):
    """A replication budget: `claims` names what it measures, `set: {seed: ...}` starts fresh seeds."""
    from nnrun.study.plan import plan_study
    from nnrun.study.spec import load_study

    other = {**CLAIM, "id": "d"}
    budgets = {"quick": {"seeds": 2}, "again": {"seeds": 3, "set": {"seed": 100}, "claims": ["d"]}}
    path = write_study(tmp_path, study_dict(budgets=budgets, claims=[CLAIM, other]))
    study, base = load_study(path)
    quick = plan_study(study, base, source=path, budget="quick", runs_dir=tmp_path / "runs")
    again = plan_study(study, base, source=path, budget="again", runs_dir=tmp_path / "runs")
    assert sorted(quick.arms) == ["c", "d"] and sorted(again.arms) == ["d"]
    assert [r.seed for r in again.arms["d"]["a"]] == [100, 101, 102]
    assert [r.seed for r in quick.arms["d"]["a"]] == [0, 1]
    with pytest.raises(UserInputError, match="--only c: budget again measures only the claims d"):
        plan_study(study, base, source=path, budget="again", only=["c"], runs_dir=tmp_path / "runs")
    with pytest.raises(UserInputError, match="budgets.again.claims: zz names no claim"):
        validate_study(study_dict(budgets={**budgets, "again": {"seeds": 3, "claims": ["zz"]}}))


def test_the_shipped_schema_is_the_current_one():
    shipped = json.loads(Path("studies/study.schema.json").read_text())
    assert shipped == StudyFile.model_json_schema()
    result = invoke("study", "--schema")
    assert result.exit_code == 0 and json.loads(result.stdout) == shipped


# ---- bad input: exit 2 before anything runs --------------------------------------------------------

def write_study(tmp_path, raw):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("claim, message", [
    ({**CLAIM, "arms": {"a": {"model.init": "he"}, "b": {}}}, "arms a and b do not differ"),
    ({**CLAIM, "metric": "test_rmse"}, "metric test_rmse: runs of this loss and data write no test_rmse"),
    ({**CLAIM, "metric": "distinct_units@2"}, "layer 2 does not exist"),
    ({**CLAIM, "arms": {"a": {"optim.lr": 0.1, "select": {"optim.lr": [0.1, 0.01]}}, "b": {}}},
     "sets optim.lr, which its selection chooses"),
    ({**CLAIM, "arms": {"a": {"optim.lr": -1}, "b": {}}}, "optim.lr"),
    ({**CLAIM, "colour": "red"}, "unknown key"),
])
def test_bad_studies_exit_2_and_run_nothing(tmp_path, claim, message):
    result = invoke("study", write_study(tmp_path, study_dict(claims=[claim])), "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out" / "runs").exists()


def test_a_quick_study_over_its_bound_exits_2_before_anything_runs(tmp_path):
    path = write_study(tmp_path, study_dict(budgets={"quick": {"seeds": 2, "max_minutes": 0.0001}}))
    result = invoke("study", path, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "more than the 0.0001 minutes budget quick allows; nothing was run" in " ".join(result.output.split())
    assert not (tmp_path / "out" / "runs").exists()
    assert invoke("study", path, "--out", tmp_path / "out", "--max-minutes", "60", "--dry-run").exit_code == 0



def test_a_plan_of_millions_of_runs_is_refused_before_it_is_expanded(tmp_path, monkeypatch):
    import nnrun.study.plan as plan

    grid = {"optim.lr": [0.001 * i for i in range(1, 11)], "regularization.l2": [0.001 * i for i in range(10)],
            "optim.momentum": [0.05 * i for i in range(10)]}  # 1,000 candidates per arm and seed, x 1,000 seeds
    claim = {**CLAIM, "arms": {"a": {"model.init": "zeros", "select": grid}, "b": {"select": grid}}}
    path = write_study(tmp_path, study_dict(budgets={"quick": {"seeds": 1000, "max_minutes": 1e6}}, claims=[claim]))
    assert path.stat().st_size < 8192
    calls = []
    real = plan.validate_config
    monkeypatch.setattr(plan, "validate_config", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = invoke("study", path, "--dry-run", "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "the study plans 2,000,000 runs" in " ".join(result.output.split()) and "at most 5,000" in result.output
    assert len(calls) <= 2 and not (tmp_path / "out").exists()  # the base config only: no run was resolved

def test_unknown_budget_and_claim_are_refused(tmp_path):
    path = write_study(tmp_path, study_dict())
    assert "the study has the budgets quick" in invoke("study", path, "--budget", "full").output
    assert "no such claim" in invoke("study", path, "--only", "nope", "--dry-run").output


# ---- end to end on digits -----------------------------------------------------------------------------

TINY = {
    "name": "tiny", "title": "Tiny study",
    "base": {"data": {"dataset": "digits"}, "model": {"hidden": [16]}, "optim": {"name": "momentum", "lr": 0.05},
             "train": {"epochs": 2, "batch_size": 64}},
    "budgets": {"quick": {"seeds": 2, "set": {"train.epochs": 2}, "max_minutes": 30}},
    "claims": [
        {"id": "zeros", "statement": "Zero init stays one unit.", "metric": "test_accuracy",
         "arms": {"zeros": {"model.init": "zeros"}, "he": {}},
         "expect": [{"a": "he", "relation": "greater", "b": "zeros"},
                    {"a": "zeros", "relation": "about_equal", "value": 1, "margin": 0.5, "metric": "distinct_units"}]},
        {"id": "rates", "statement": "A rate chosen on val beats one that diverges.", "metric": "test_accuracy",
         "diverged_value": 0.1,
         "arms": {"chosen": {"select": {"optim.lr": [0.05, 0.01]}}, "huge": {"optim.lr": 1000.0}},
         "expect": [{"a": "chosen", "relation": "greater", "b": "huge"},
                    {"a": "huge", "relation": "diverges", "b": "chosen"}]},
        {"id": "deep", "statement": "Small init shrinks the signal.", "metric": "init_activation_std",
         "set": {"model.hidden": [16, 16, 16]}, "arms": {"small": {"model.init": "small"}, "he": {}},
         "expect": [{"a": "small", "relation": "less", "b": "he"}]},
    ]}


def test_a_tiny_study_runs_reports_and_a_rerun_runs_nothing(tmp_path, monkeypatch):
    path = write_study(tmp_path, TINY)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/nnrun", "study", str(path), "--out", str(out), "--json"])
    dry = invoke("study", path, "--out", out, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    # zeros.he and rates.chosen at lr 0.05 are the same run: shared
    assert plan["entries"] == 14 and plan["distinct"] == 12 and plan["shared"] == 2 and plan["to_run"] == 12
    assert plan["estimate_seconds"] > 0 and not (out / "runs").exists()

    result = invoke("study", path, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["runs"]["trained_now"] == 12 and report["runs"]["diverged"] == 2
    claims = {c["id"]: c for c in report["claims"]}
    # rates: huge diverges at 2 of 2 seeds, chosen at none: Fisher's p = 2 x 1/6, not resolved with 2 seeds
    assert [c["verdict"] for c in report["claims"]] == ["supported", "not resolved", "supported"]
    zeros = claims["zeros"]
    assert zeros["arms"]["zeros"]["metrics"]["distinct_units"]["values"] == [1.0, 1.0]
    he_dirs = [r["run_dir"] for r in zeros["arms"]["he"]["runs"]]
    chosen = claims["rates"]["arms"]["chosen"]["runs"]
    assert all(r["selected"]["optim.lr"] in (0.05, 0.01) and r["candidates"] == 2 for r in chosen)
    assert {r["run_dir"] for r in chosen if r["selected"]["optim.lr"] == 0.05} <= set(he_dirs)
    huge = claims["rates"]["arms"]["huge"]["metrics"]["test_accuracy"]
    assert huge["values"] == [0.1, 0.1] and huge["diverged"] == 2
    assert claims["rates"]["relations"][1]["diverged"] == {"a": [2, 2], "b": [0, 2]}
    layers = claims["deep"]["arms"]["small"]["layers"]["mean"]
    assert len(layers) == 3 and layers[0] > layers[1] > layers[2]

    files = {name: Path(p) for name, p in report["files"].items()}
    markdown = files["markdown"].read_text()
    assert "**paired t**" in markdown and "| **zeros** | **supported** |" in markdown
    assert f"- Command: `nnrun study {path} --out {out} --json`" in markdown and "Wall time" in markdown
    for claim in ("zeros", "rates", "deep"):
        assert f"![{claim}:" in markdown and (out / "figures" / f"{claim}.png").read_bytes()[:4] == b"\x89PNG"
    page = files["html"].read_text()
    assert page.count("data:image/png;base64,") == 3 and "<table>" in page and "figures/" not in page
    assert json.loads(files["json"].read_text())["claims"][0]["relations"][0]["interval"]["method"] == "paired t"

    again = invoke("study", path, "--out", out, "--json")
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout)
    assert rerun["runs"]["trained_now"] == 0 and rerun["runs"]["reused"] == 12
    assert [c["relations"] for c in rerun["claims"]] == [c["relations"] for c in report["claims"]]
    assert len(json.loads((out / "sessions.json").read_text())) == 2


def test_a_study_runs_on_a_dask_cluster(tmp_path):
    pytest.importorskip("distributed")
    result = invoke("study", write_study(tmp_path, study_dict()), "--out", tmp_path / "out", "--executor", "dask",
                    "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["executor"] == "dask" and report["runs"]["trained_now"] == 4
    assert report["claims"][0]["verdict"] == "supported"


def test_an_interrupted_study_exits_1_and_writes_no_report(tmp_path, monkeypatch):
    from nnrun.study import run as study_run
    from nnrun.sweep.execute import SweepOutcome

    monkeypatch.setattr(study_run, "run_sweep", lambda plan, **kw: SweepOutcome(plan, [], interrupted=True))
    path = write_study(tmp_path, study_dict())
    result = invoke("study", path, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "rerun the same command" in result.output
    assert not (tmp_path / "out" / "report.md").exists()


def test_an_output_folder_of_another_study_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"study": "other", "budget": "quick"}))
    result = invoke("study", write_study(tmp_path, study_dict()), "--out", out)
    assert result.exit_code == 2 and "another study" in result.output
    (out / "study.json").unlink()
    (out / "report.md").write_text("mine")
    assert "not written by this study" in invoke("study", write_study(tmp_path, study_dict()), "--out", out).output


def test_plan_configs_merges_identical_configs_and_keeps_the_first_labels(tmp_path):
    raw = {"data": {"dataset": "digits"}, "model": {"hidden": [4]}}
    other = {"data": {"dataset": "digits"}, "model": {"hidden": [5]}}
    plan = plan_configs([({"arm": "a"}, raw), ({"arm": "b"}, dict(raw)), ({"arm": "c"}, other)], runs_dir=tmp_path)
    assert [p.params for p in plan.points] == [{"arm": "a"}, {"arm": "c"}] and plan.duplicates == 1
    assert plan.keys == ["arm"] and plan.base.model.hidden == [4]
    with pytest.raises(UserInputError, match="sweep points are invalid"):
        plan_configs([({"arm": "a"}, {"optim": {"lr": -1}})], runs_dir=tmp_path)


def test_the_notes_study_plans_on_cifar10(cifar10_folder, tmp_path):
    result = invoke("study", "studies/notes.yaml", "--budget", "quick", "--set", f"data.root={cifar10_folder}",
                    "--out", tmp_path / "out", "--dry-run", "--json", "--max-minutes", "1000")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert len(plan["claims"]) >= 15 and plan["shared"] > 0
    assert math.isfinite(plan["estimate_seconds"]) and plan["max_minutes"] == 1000


def test_the_aids_study_plans_on_cifar10_and_shares_the_stacked_arm(cifar10_folder, tmp_path):
    result = invoke("study", "studies/cifar10_aids.yaml", "--set", f"data.root={cifar10_folder}",
                    "--out", tmp_path / "out", "--dry-run", "--json", "--max-minutes", "1000")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [c["id"] for c in plan["claims"]] == ["stacked", "more_aids", "recipe_v2"]
    # 14 arms x 3 seeds; more_aids' `stacked` arm is the same run as stacked's `smoothing` arm.
    assert (plan["entries"], plan["distinct"], plan["shared"]) == (42, 39, 3)


# ---- holds at which scale: --beside ---------------------------------------------------------------------

def test_a_report_shows_each_relation_at_every_budget_measured(tmp_path):
    raw = study_dict(budgets={"quick": {"seeds": 2, "max_minutes": 10},
                              "wider": {"seeds": 3, "set": {"model.hidden": [16]}, "max_minutes": 10}})
    path = write_study(tmp_path, raw)
    quick = invoke("study", path, "--out", tmp_path / "quick", "--json")
    assert quick.exit_code == 0, quick.output
    # The wider budget, listed second in the file, comes second whatever order the folders are given in.
    wider = invoke("study", path, "--budget", "wider", "--out", tmp_path / "wider", "--beside", tmp_path / "quick",
                   "--json")
    assert wider.exit_code == 0, wider.output
    report = json.loads(wider.stdout)
    (other,) = report["other_budgets"]
    quick_relation = json.loads(quick.stdout)["claims"][0]["relations"][0]
    assert other["budget"] == "quick" and other["seeds"] == 2
    assert other["claims"][0]["relations"][0]["interval"] == quick_relation["interval"]
    markdown = (tmp_path / "wider" / "report.md").read_text()
    section = markdown.split("## Holds at which scale")[1].split("\n## ")[0]
    header = next(line for line in section.splitlines() if line.startswith("| claim"))
    assert header.split("|")[4:6] == [" quick (2 seeds) ", " wider (3 seeds) "]
    row = next(line for line in section.splitlines() if line.startswith("| **c**"))
    wider_relation = report["claims"][0]["relations"][0]
    for relation in (quick_relation, wider_relation):
        low = relation["interval"]["low"]
        assert f"{relation['verdict']}: " in row and f"{'+' if low >= 0 else ''}{low:.3g}" in row
    assert str(tmp_path / "quick" / "study.json") in section
    # The same report, read back from the folder, makes the same table.
    assert json.loads((tmp_path / "wider" / "study.json").read_text())["other_budgets"] == report["other_budgets"]


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "no study.json there"),
    (lambda d: (d / "study.json").write_text("{not json"), "cannot read"),
    (lambda d: (d / "study.json").write_text(json.dumps({"study": "other", "budget": "big", "claims": []})),
     "reports study 'other', expected 'tiny'"),
    (lambda d: (d / "study.json").write_text(json.dumps({"study": "tiny", "budget": "quick", "claims": []})),
     "is budget 'quick' too"),
    (lambda d: (d / "study.json").write_text(json.dumps({"study": "tiny", "budget": "big", "claims": [{}]})),
     "lacks what a study report holds"),
])
def test_a_bad_beside_folder_exits_2_before_anything_runs(tmp_path, make, message):
    folder = tmp_path / "other"
    folder.mkdir()
    make(folder)
    result = invoke("study", write_study(tmp_path, study_dict()), "--out", tmp_path / "out", "--beside", folder)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "--beside" in result.output
    assert not (tmp_path / "out").exists()


def test_the_calibration_leaves_a_process_one_time_set_up_out_of_the_epoch_cost(slow_kernel_set_up):
    """A one-time cost of the process (the compiled kernels' set-up, here 1.5 s) is paid once per worker, not
    per epoch: timed inside the first calibration epoch, it made every run's estimate many times too long, and
    the quick notes study refused to start over its 20-minute bound."""
    from nnrun.study import plan as study_plan

    cal = study_plan.calibrate(1, False)
    n = study_plan.CALIBRATION_EXAMPLES
    calibration_epoch = n / 128 * cal["batch_seconds"] + n * (3072 * 100 + 100 * 10) * cal["step_seconds_per_mac"]
    assert len(slow_kernel_set_up) >= 3  # every timed fit went through warm
    assert calibration_epoch < 1.0  # about 0.05 s of work: the 1.5 s set-up is not in it
