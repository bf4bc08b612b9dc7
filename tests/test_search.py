"""`nnrun sweep --search/--trials/--prune`: Optuna's samplers and pruners over ordinary run directories.

The search runs through the sweep's executor, so these tests train tiny digits networks in worker
processes; the interrupted search is a subprocess stopped with SIGTERM and run again.
"""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nnrun.sweep.plan import config_hash
from nnrun.sweep.space import parse_space
from tests.helpers import invoke, invoke_error

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "model": {"hidden": [8]}, "train": {"epochs": 2, "batch_size": 64}}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def study_of(runs_dir: Path, name: str):
    optuna = pytest.importorskip("optuna")
    return optuna.load_study(study_name=name, storage=f"sqlite:///{runs_dir / 'optuna.db'}")


# --- options and the space ----------------------------------------------------------------------


def test_space_maps_onto_optuna_distributions_and_back():
    optuna = pytest.importorskip("optuna")
    from nnrun.sweep.search import optuna_space

    space = optuna_space(optuna, parse_space(["optim.lr=loguniform(1e-4,1e-1)", "model.dropout=uniform(0.5,1)",
                                              "train.batch_size=randint(16,128)",
                                              "model.hidden=choice([64],[128, 64])", "optim.name=choice(sgd,adam)"]))
    d = space.distributions
    assert d["optim.lr"] == optuna.distributions.FloatDistribution(1e-4, 0.1, log=True)
    assert d["model.dropout"] == optuna.distributions.FloatDistribution(0.5, 1.0)
    assert d["train.batch_size"] == optuna.distributions.IntDistribution(16, 128)
    assert d["optim.name"] == optuna.distributions.CategoricalDistribution(["sgd", "adam"])
    assert d["model.hidden"].choices == ("[64]", "[128, 64]")          # lists stand as their JSON text
    assert space.decode({"model.hidden": "[128, 64]", "optim.name": "adam", "optim.lr": 0.01}) == \
        {"optim.lr": 0.01, "model.hidden": [128, 64], "optim.name": "adam"}


@pytest.mark.parametrize("args, message", [
    (["--search", "tpx", "--trials", "3", "--space", "optim.lr=loguniform(1e-3,1e-1)"],
     "--search tpx: unknown sampler; allowed: tpe, cmaes, random; did you mean 'tpe'"),
    (["--search", "tpe", "--trials", "0", "--space", "optim.lr=loguniform(1e-3,1e-1)"],
     "--trials needs a number of trials >= 1, got 0"),
    (["--search", "tpe", "--space", "optim.lr=loguniform(1e-3,1e-1)"], "--search tpe needs the number of trials"),
    (["--search", "tpe", "--trials", "3"], "--search tpe needs the keys to search: give --space"),
    (["--prune", "asha", "--grid", "optim.lr=0.1,0.2"], "--prune stops the runs of a search"),
    (["--trials", "3", "--grid", "optim.lr=0.1,0.2"], "--trials is the number of trials of a search"),
    (["--search", "tpe", "--trials", "3", "--random", "3", "--space", "optim.lr=loguniform(1e-3,1e-1)"],
     "--search and --random both choose the points"),
    (["--search", "tpe", "--trials", "3", "--prune", "sha", "--space", "optim.lr=loguniform(1e-3,1e-1)"],
     "--prune sha: unknown pruner; allowed: median, asha, hyperband"),
    (["--search", "tpe", "--trials", "3", "--space", "model.hidden=uniform(1,2)"],
     "keys of the search space give invalid configs"),
])
def test_bad_search_options_exit_2_naming_the_option(tiny_config, tmp_path, args, message):
    pytest.importorskip("optuna")
    err = invoke_error("sweep", tiny_config, "--runs-dir", tmp_path / "runs", *args)
    assert message in " ".join(err.split()), err
    assert not (tmp_path / "runs").exists()


def test_search_without_optuna_exits_2_with_the_install_command(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    err = " ".join(invoke_error("sweep", tiny_config, "--search", "tpe", "--trials", "2", "--space",
                                "optim.lr=loguniform(1e-3,1e-1)", "--runs-dir", tmp_path / "runs").split())
    assert "--search tpe needs Optuna" in err and "pip install 'nnrun[search]'" in err, err


# --- running ------------------------------------------------------------------------------------


def test_pruning_trains_fewer_epochs_for_the_same_best_and_pruned_runs_are_listed(tiny_config, tmp_path):
    optuna = pytest.importorskip("optuna")
    runs = tmp_path / "runs"
    rates = "0.0001,0.0003,0.001,0.003,0.01,0.03,0.1,0.3"   # 10 trials from 8 values: some drawn twice
    search = ["sweep", tiny_config, "--search", "random", "--trials", 10, "--seed", 2, "--space",
              f"optim.lr=choice({rates})", "--set", "train.epochs=6", "--set", "model.hidden=[16]", "--threads", 1,
              "--runs-dir", runs, "--json"]
    result = invoke(*search, "--prune", "asha")
    assert result.exit_code == 0, result.output       # a pruned run is an outcome, not a failure
    report = json.loads(result.stdout)
    pruned = report["search"]
    assert pruned["trials"] == 10 and sum(pruned["states"].values()) == 10 and pruned["states"]["pruned"] >= 2
    for r in report["runs"]:                          # each trial is an ordinary run directory, hashed like a point
        folder = Path(r["run_dir"])
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert saved["optim"]["lr"] == r["params"]["optim.lr"] and config_hash(saved) == r["hash"]
        assert folder.name == f"tiny-{r['hash']}" and (folder / "model.npz").is_file()
    trials = study_of(runs, pruned["study"]).get_trials()
    folders = {t.user_attrs["run_dir"] for t in trials}
    assert sorted(folders) == sorted(p.name for p in runs.iterdir() if p.is_dir())   # one run per config
    assert len(report["runs"]) == len(folders) and report["duplicates"] == 10 - len(folders) >= 1
    outcome = {}
    for t in trials:                                  # a config drawn again took its run's outcome, not a new run
        if "same_run_as" in t.user_attrs:
            assert t.user_attrs["run_dir"] == trials[t.user_attrs["same_run_as"]].user_attrs["run_dir"]
        assert outcome.setdefault(t.user_attrs["run_dir"], (t.state, t.value)) == (t.state, t.value)
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}

    listed = invoke("runs", runs, "--format", "csv")
    assert listed.exit_code == 0, listed.output
    statuses = [r["status"] for r in csv.DictReader(io.StringIO(listed.stdout))]
    assert len(statuses) == len(folders) and 0 < statuses.count("pruned") < len(folders)
    assert statuses == sorted(statuses, key=lambda s: s != "completed")     # completed (the best) listed first
    only = json.loads(invoke("runs", runs, "--filter", "status=pruned", "--format", "json").stdout)["runs"]
    assert len(only) == statuses.count("pruned") and {r["status"] for r in only} == {"pruned"}
    folder = Path(only[0]["path"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["epochs"] < 6 and summary["reason"].startswith("pruned by the asha pruner after epoch")
    assert (folder / "checkpoint.npz").is_file()

    # The same search without pruning (its own study) trains every run to the end: the pruned ones resume.
    result = invoke(*search)
    assert result.exit_code == 0, result.output
    full = json.loads(result.stdout)["search"]
    assert full["states"] == {"complete": 10} and full["epochs"] == len(folders) * 6
    assert pruned["epochs"] < full["epochs"]
    assert pruned["best"]["params"] == full["best"]["params"] and pruned["best"]["value"] == full["best"]["value"]


def test_a_sigterm_stops_a_search_and_the_rerun_continues_it(tmp_path):
    optuna = pytest.importorskip("optuna")
    runs = tmp_path / "runs"
    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump({"name": "slow", "model": {"hidden": [256, 256]},
                                      "train": {"epochs": 10, "batch_size": 8}}))
    cmd = [sys.executable, "-m", "nnrun", "sweep", str(config), "--search", "tpe", "--trials", "3", "--threads", "1",
           "--space", "optim.lr=loguniform(1e-3,1e-1)", "--runs-dir", str(runs), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*cmd, "--jobs", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)

    def states() -> dict[str, str]:
        return {p.parent.name: json.loads(p.read_text())["status"] for p in runs.glob("*/summary.json")}

    deadline = time.monotonic() + 120
    # Two trials done and the third going: it has most of its epochs ahead (the first two run side by side, so
    # when one ends the other may be in its last epoch, and a stop then rightly lets it complete).
    while not (len(states()) == 2
               and any(not (p.parent / "summary.json").exists() for p in runs.glob("*/checkpoint.npz"))):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err, err
    before = states()
    done = {name for name, status in before.items() if status == "completed"}
    stopped = {name for name, status in before.items() if status == "interrupted"}
    assert done and stopped and len(done | stopped) <= 3, before
    kept = {name: (runs / name / "summary.json").stat().st_mtime_ns for name in done}
    name = optuna.get_all_study_names(f"sqlite:///{runs / 'optuna.db'}")[0]
    told = {t.user_attrs["run_dir"]: t.state.name for t in study_of(runs, name).get_trials()}
    assert {n: told[n] for n in done | stopped} == {**dict.fromkeys(done, "COMPLETE"),
                                                    **dict.fromkeys(stopped, "RUNNING")}
    resumable = {n for n in stopped if json.loads((runs / n / "summary.json").read_text())["checkpoint_epoch"]}
    assert resumable

    # The same search, --jobs 1 this time: the study does not depend on it.
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stderr
    trials = study_of(runs, name).get_trials()
    assert len(trials) == 3 and {t.state.name for t in trials} == {"COMPLETE"}
    folders = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(folders)) == 3 and sorted(folders) == sorted(p.name for p in runs.iterdir() if p.is_dir())
    assert {n: (runs / n / "summary.json").stat().st_mtime_ns for n in done} == kept     # finished: kept as is
    for folder in resumable:                      # resumed from its checkpoint, not trained again
        provenance = json.loads((runs / folder / "provenance.json").read_text())
        summary = json.loads((runs / folder / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["epochs"] == 10 and provenance["earlier_sessions"]


# --- nnrun study: select by a search --------------------------------------------------------------------

def search_study(select):
    return {"name": "searched", "base": {"data": {"dataset": "digits"}, "model": {"hidden": [8]},
                                         "train": {"epochs": 2, "batch_size": 64}},
            "budgets": {"quick": {"seeds": 2, "max_minutes": 30}},
            "claims": [{"id": "tuned", "statement": "A searched rate beats a tiny one.", "metric": "test_accuracy",
                        "arms": {"tuned": {"select": select}, "tiny": {"optim.lr": 0.0001}},
                        "expect": [{"a": "tuned", "relation": "greater", "b": "tiny"}]}]}


@pytest.mark.parametrize("select, message", [
    ({"search": "tpx", "trials": 3, "optim.lr": "loguniform(0.01,0.1)"}, "select.search: unknown sampler 'tpx'"),
    ({"search": "tpe", "optim.lr": "loguniform(0.01,0.1)"}, "select.trials: a search needs its number of trials"),
    ({"search": "tpe", "trials": 0, "optim.lr": "loguniform(0.01,0.1)"}, "1 to 1000 (got 0)"),
    ({"search": "tpe", "trials": 3}, "a search needs keys to search"),
    ({"search": "tpe", "trials": 3, "optim.lr": "lognormal(1,2)"}, "select.optim.lr: unknown distribution"),
    ({"trials": 3, "optim.lr": [0.1, 0.01]}, "trials is the number of trials of a search"),
    ({"search": "tpe", "trials": 3, "optim.lr": "loguniform(-1,1)"}, "needs 0 < low"),
])
def test_a_bad_search_selection_exits_2_naming_the_key(tmp_path, select, message):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(search_study(select), sort_keys=False))
    err = " ".join(invoke_error("study", path, "--out", tmp_path / "out", "--dry-run").split())
    assert message in err, err


def test_a_search_selection_without_optuna_exits_2_with_the_install_command(tmp_path, monkeypatch):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(search_study({"search": "tpe", "trials": 3, "optim.lr": "loguniform(0.01,0.1)"})))
    monkeypatch.setitem(sys.modules, "optuna", None)
    err = " ".join(invoke_error("study", path, "--out", tmp_path / "out", "--dry-run").split())
    assert "claim tuned, arm tuned, seed 0: select search: tpe needs Optuna" in err
    assert "pip install 'nnrun[search]'" in err


def test_a_study_arm_selects_by_a_search_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    import nnrun.study.plan

    monkeypatch.setattr(nnrun.study.plan, "calibrate", lambda threads, with_eigh: {  # this machine, roughly
        "batch_seconds": 2e-4, "step_seconds_per_mac": 4e-10, "eval_seconds_per_mac": 1.3e-10})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(search_study({"search": "random", "trials": 3,
                                                 "optim.lr": "loguniform(0.01,0.3)"})))
    out = tmp_path / "out"
    args = ["study", path, "--out", out, "--threads", 1, "--json"]
    dry = invoke(*args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert plan["searches"] == {"count": 2, "trials": 6, "left": 6} and plan["to_run"] == 2 + 6

    result = invoke(*args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["runs"]["trained_now"] == 8
    tuned = report["claims"][0]["arms"]["tuned"]
    assert tuned["search"] == {"sampler": "random", "trials": 3, "space": {"optim.lr": "loguniform(0.01, 0.3)"}}
    for chosen in tuned["runs"]:                  # per seed: the best of its search's three trials on val
        assert chosen["candidates"] == 3 and 0.01 <= chosen["selected"]["optim.lr"] <= 0.3
        trials = [json.loads((p / "summary.json").read_text()) for p in (out / "runs").iterdir()
                  if p.is_dir() and json.loads((p / "summary.json").read_text())["seed"] == chosen["seed"]
                  and yaml.safe_load((p / "config.yaml").read_text())["optim"]["lr"] != 0.0001]
        assert len(trials) == 3
        assert json.loads((Path(chosen["run_dir"]) / "summary.json").read_text())["val_accuracy"] == \
            max(t["val_accuracy"] for t in trials)
    assert "a random search of 3 trials over `optim.lr` loguniform(0.01, 0.3)" in \
        Path(report["files"]["markdown"]).read_text()

    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["runs"]["trained_now"] == 0
