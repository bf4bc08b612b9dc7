"""Listing run directories: `nnrun runs` columns, sorting, filters and its table/csv/json formats."""

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.config import flatten, parse_value, split_top_level, validate_config
from nnrun.errors import UserInputError
from nnrun.rundir import RunDir
from nnrun.runs import parse_filter, select_runs
from nnrun.runstore import list_runs, varying_keys

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def make_run(root, name, lr, l2, summary=None, epochs_done=0):
    """A run directory as `run_experiment` leaves it: config.yaml, metrics.jsonl, summary.json (if finished)."""
    cfg = validate_config({"name": "exp", "optim": {"lr": lr}, "regularization": {"l2": l2},
                           "model": {"hidden": [32, 16]}})
    run = RunDir.create(root / name)
    run.write_config(cfg.to_yaml())
    run.write_metrics([{"epoch": i + 1, "val_accuracy": 0.1} for i in range(epochs_done)])
    if summary is not None:
        run.write_summary(summary)
    return run


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a-001", 0.001, 0.0, {"status": "completed", "epochs": 5, "val_accuracy": 0.81, "val_loss": 0.6,
                                         "test_accuracy": 0.8, "seconds": 12.5})
    make_run(root, "b-002", 0.01, 0.0, {"status": "completed", "epochs": 5, "val_accuracy": 0.93, "val_loss": 0.3,
                                        "test_accuracy": 0.91, "seconds": 11.0})
    make_run(root, "c-003", 1e6, 0.0001, {"status": "failed", "epochs": 0, "reason": "loss became nan in epoch 1",
                                          "seconds": 0.5})
    make_run(root, "d-004", 0.1, 0.0001, None, epochs_done=2)          # still running or killed
    (root / "not-a-run").mkdir()
    (root / "notes.txt").write_text("ignored")
    return root


def test_helpers():
    assert split_top_level("[64,32],[128], 'a,b' ,c") == ["[64,32]", "[128]", "'a,b'", "c"]
    assert parse_value("1e-3") == 0.001 and parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("2.0") == 2.0 and isinstance(parse_value("2.0"), float)
    assert parse_value("[8, 4]") == [8, 4] and parse_value("sgd") == "sgd" and parse_value("true") is True
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {"a.b": 1, "a.c.d": [1, 2], "e": "x"}


def test_list_runs_reads_config_and_summary(runs_dir):
    records = {r.path.name: r for r in list_runs(runs_dir)}
    assert set(records) == {"a-001", "b-002", "c-003", "d-004"}
    assert records["b-002"].get("optim.lr") == 0.01 and records["b-002"].get("val_accuracy") == 0.93
    assert records["c-003"].status == "failed" and "nan" in records["c-003"].get("reason")
    assert records["d-004"].status == "interrupted" and records["d-004"].get("epochs") == 2
    assert varying_keys(list(records.values())) == ["regularization.l2", "optim.lr"]
    assert [r.path.name for r in list_runs(runs_dir / "b-002")] == ["b-002"]   # one run directory
    with pytest.raises(UserInputError, match="does not exist"):
        list_runs(runs_dir / "missing")


def test_filters():
    f = parse_filter("optim.lr=1e-3")
    assert (f.key, f.op, f.value) == ("optim.lr", "=", 0.001)
    assert parse_filter("val_accuracy >= 0.9").op == ">="
    for bad in ("optim.lr", "=3", "val_accuracy>=high", "lr~3"):
        with pytest.raises(UserInputError):
            parse_filter(bad)


def test_select_sort_and_filter(runs_dir):
    records, columns = select_runs(runs_dir)
    assert [r.path.name for r in records] == ["b-002", "a-001", "c-003", "d-004"]   # best val_accuracy first
    assert columns == ["run", "status", "val_accuracy", "test_accuracy", "epochs", "regularization.l2", "optim.lr",
                       "reason"]
    by_lr = [r.path.name for r in select_runs(runs_dir, sort="optim.lr")[0]]
    assert by_lr == ["a-001", "b-002", "d-004", "c-003"]
    assert [r.path.name for r in select_runs(runs_dir, sort="-optim.lr")[0]] == by_lr[::-1]
    assert [r.path.name for r in select_runs(runs_dir, filters=["status=completed"])[0]] == ["b-002", "a-001"]
    assert [r.path.name for r in select_runs(runs_dir, filters=["optim.lr=1e-3"])[0]] == ["a-001"]
    assert [r.path.name for r in select_runs(runs_dir, filters=["val_accuracy>0.85"])[0]] == ["b-002"]
    assert len(select_runs(runs_dir, filters=["status!=completed", "regularization.l2=1e-4"])[0]) == 2
    assert select_runs(runs_dir, filters=["model.hidden=[32, 16]"])[0] != []
    with pytest.raises(UserInputError, match="optim.lrr"):
        select_runs(runs_dir, filters=["optim.lrr=1"])
    with pytest.raises(UserInputError, match="nope"):
        select_runs(runs_dir, columns=["run,nope"])


def test_cli_csv_parses_with_the_csv_module(runs_dir):
    result = invoke("runs", runs_dir, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["run", "status", "regularization.l2", "optim.lr", "val_accuracy", "val_loss",
                             "test_accuracy", "epochs", "seconds", "started", "reason"]   # as before the table changed
    assert [r["run"] for r in rows] == ["b-002", "a-001", "c-003", "d-004"]
    assert float(rows[0]["optim.lr"]) == 0.01 and float(rows[0]["val_accuracy"]) == 0.93
    assert rows[2]["status"] == "failed" and rows[2]["reason"] == "loss became nan in epoch 1"
    assert rows[3]["status"] == "interrupted" and rows[3]["val_accuracy"] == "" and rows[3]["epochs"] == "2"
    chosen = invoke("runs", runs_dir, "--format", "csv", "--columns", "run,optim.lr", "--columns", "model.hidden",
                    "--sort", "run")
    assert chosen.exit_code == 0, chosen.output
    table = list(csv.reader(io.StringIO(chosen.stdout)))
    assert table[0] == ["run", "optim.lr", "model.hidden"]
    assert table[1] == ["a-001", "0.001", "[32, 16]"] and len(table) == 5


def test_cli_json_is_one_object(runs_dir):
    result = invoke("runs", runs_dir, "--format", "json", "--filter", "status=completed", "--sort=-val_loss")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["count"] == 2 and [r["run"] for r in data["runs"]] == ["a-001", "b-002"]
    assert data["runs"][0]["optim.lr"] == 0.001 and data["runs"][0]["path"].endswith("a-001")


def test_cli_table_goes_to_stdout_and_errors_exit_2(runs_dir, tmp_path):
    result = invoke("runs", runs_dir)
    assert result.exit_code == 0 and result.stderr == ""
    assert "b-002" in result.stdout and "interrupted" in result.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    assert invoke("runs", empty, "--format", "json").exit_code == 0
    assert json.loads(invoke("runs", empty, "--format", "json").stdout)["runs"] == []
    for args in (["--format", "xml"], ["--filter", "bad"], ["--sort", "nope"], ["--columns", "nope"]):
        bad = invoke("runs", runs_dir, *args)
        assert bad.exit_code == 2, (args, bad.output)
    assert invoke("runs", tmp_path / "missing").exit_code == 2


def test_misspelled_columns_get_a_suggestion(runs_dir):
    with pytest.raises(UserInputError, match="did you mean 'val_accuracy'"):
        select_runs(runs_dir, sort="-val_acc")
    with pytest.raises(UserInputError, match="did you mean 'optim.lr'"):
        select_runs(runs_dir, filters=["optim.lrr=1"])
    bad = invoke("runs", runs_dir, "--columns", "run,test_acuracy")
    assert bad.exit_code == 2 and "did you mean 'test_accuracy'" in bad.stderr


def test_recursive_finds_runs_in_sub_folders(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "single", 0.01, 0.0, {"status": "completed", "epochs": 5, "val_accuracy": 0.9})
    make_run(root / "grid", "p1", 0.001, 0.0, {"status": "completed", "epochs": 5, "val_accuracy": 0.8})
    make_run(root / "grid" / "deeper", "p2", 0.1, 0.0, {"status": "completed", "epochs": 5, "val_accuracy": 0.7})
    assert [r.name for r in list_runs(root)] == ["single"]
    assert [r.name for r in list_runs(root, recursive=True)] == ["grid/deeper/p2", "grid/p1", "single"]
    result = invoke("runs", root, "--recursive", "--format", "csv", "--columns", "run,optim.lr")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["run"] for r in rows] == ["single", "grid/p1", "grid/deeper/p2"]        # best val_accuracy first


def test_group_by_gives_mean_and_std_over_seeds(tmp_path):
    root = tmp_path / "runs"
    accuracies = {(0.01, 0): 0.90, (0.01, 1): 0.94, (0.1, 0): 0.80, (0.1, 1): 0.70, (0.1, 2): 0.75}
    for (lr, seed), acc in accuracies.items():
        make_run(root, f"lr{lr}-s{seed}", lr, 0.0, {"status": "completed", "epochs": 5, "val_accuracy": acc,
                                                      "test_accuracy": acc - 0.05})
    data = json.loads(invoke("runs", root, "--group-by", "optim.lr", "--format", "json").stdout)
    assert data["group_by"] == ["optim.lr"] and data["pooled"] == []      # configs differ only in lr
    groups = {g["optim.lr"]: g for g in data["groups"]}
    assert groups[0.01]["runs"] == 2 and groups[0.1]["runs"] == 3
    assert groups[0.01]["val_accuracy"] == pytest.approx(0.92)
    assert groups[0.01]["val_accuracy_std"] == pytest.approx(0.028284271, rel=1e-6)     # sample std
    assert groups[0.1]["val_accuracy"] == pytest.approx(0.75) and groups[0.1]["val_accuracy_std"] == pytest.approx(0.05)
    table = invoke("runs", root, "-g", "optim.lr")
    assert table.exit_code == 0, table.output
    assert "0.9200 ± 0.0283" in table.stdout and "0.7500 ± 0.0500" in table.stdout
    rows = list(csv.DictReader(io.StringIO(invoke("runs", root, "-g", "optim.lr", "--format", "csv").stdout)))
    assert rows[0]["optim.lr"] == "0.01" and float(rows[1]["val_accuracy_std"]) == pytest.approx(0.05)
    bad = invoke("runs", root, "--group-by", "optim.lrr")
    assert bad.exit_code == 2 and "did you mean 'optim.lr'" in bad.stderr


def test_runs_dir_from_the_environment(runs_dir, tmp_path):
    result = runner.invoke(app, ["runs", "--format", "json"], env={"NNRUN_RUNS_DIR": str(runs_dir)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["count"] == 4


def test_a_run_killed_before_its_config_is_listed_as_broken(runs_dir):
    """A kill between the folder's creation and config.yaml leaves only the lock file: listed as broken, with
    the reason, not hidden; diff refuses it by name."""
    import signal
    import subprocess
    import sys

    dead = runs_dir / "dead-001"
    code = ("import os, signal, sys; from nnrun.rundir import RunDir; RunDir.create(sys.argv[1]); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(dead)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL and [p.name for p in dead.iterdir()] == [".lock"]
    result = invoke("runs", runs_dir, "--format", "json")
    assert result.exit_code == 0, result.output
    row = {r["run"]: r for r in json.loads(result.stdout)["runs"]}["dead-001"]
    assert row["status"] == "broken" and "killed before config.yaml was written" in row["reason"]
    assert {r["run"]: r["status"] for r in json.loads(result.stdout)["runs"]}["a-001"] == "completed"
    # the broken run's missing config makes no key differ
    assert varying_keys(list_runs(runs_dir)) == varying_keys([r for r in list_runs(runs_dir) if r.config])
    table = invoke("runs", runs_dir)
    assert table.exit_code == 0 and "broken" in table.stdout and "nothing to resume" in table.stdout
    other = runs_dir / "a-001"
    result = invoke("diff", other, dead)
    assert result.exit_code == 2 and str(dead) in result.stderr and "killed before config.yaml" in result.stderr
    assert "Traceback" not in result.output
