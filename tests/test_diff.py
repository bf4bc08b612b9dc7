"""`nnrun diff`: exactly the config keys that differ, and the headline metrics side by side."""

import json

import pytest
from typer.testing import CliRunner

from nnrun.cli import app
from nnrun.diff import diff_runs
from nnrun.errors import UserInputError
from tests.helpers import epoch_rows, write_run

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def two_runs(tmp_path):
    a = write_run(tmp_path, "a", {"optim": {"lr": 0.01}, "model": {"hidden": [32]}},
                  epoch_rows([0.8, 0.9], [1.0, 0.5]),
                  {"status": "completed", "epochs": 2, "val_accuracy": 0.9, "test_accuracy": 0.88, "val_loss": 0.3})
    b = write_run(tmp_path, "b", {"optim": {"lr": 0.1, "name": "adam"}, "model": {"hidden": [32]},
                                  "preprocess": {"whiten": True}},
                  epoch_rows([0.7], [1.2]), {"status": "failed", "epochs": 1, "val_accuracy": 0.7, "val_loss": 0.9,
                                             "reason": "loss became nan in epoch 2"})
    return a, b


def test_lists_exactly_the_differing_keys(two_runs):
    a, b = two_runs
    result = diff_runs(a, b)
    assert [row["key"] for row in result["config"]] == ["preprocess.whiten", "optim.name", "optim.lr"]
    assert {row["key"]: (row["a"], row["b"]) for row in result["config"]} == {
        "preprocess.whiten": (False, True), "optim.name": ("momentum", "adam"), "optim.lr": (0.01, 0.1)}
    metrics = {row["metric"]: row for row in result["metrics"]}
    assert metrics["val_accuracy"]["difference"] == pytest.approx(-0.2)
    assert metrics["test_accuracy"]["b"] is None and metrics["test_accuracy"]["difference"] is None
    assert metrics["epochs"]["a"] == 2 and metrics["epochs"]["b"] == 1
    assert "train_accuracy" not in metrics                         # neither run has it
    assert result["status"] == ["completed", "failed"]


def test_same_config_has_no_differing_keys(tmp_path):
    a = write_run(tmp_path, "a", {"seed": 3}, summary={"status": "completed", "val_accuracy": 0.5})
    b = write_run(tmp_path, "b", {"seed": 3}, summary={"status": "completed", "val_accuracy": 0.6})
    assert diff_runs(a, b)["config"] == []
    result = invoke("diff", a, b)
    assert result.exit_code == 0 and "the same resolved config" in result.stdout


def test_cli_table_on_stdout_and_json(two_runs, tmp_path):
    a, b = two_runs
    result = invoke("diff", a, b)
    assert result.exit_code == 0, result.output
    assert "3 keys differ" in result.stdout and "optim.lr" in result.stdout and "-0.2000" in result.stdout
    assert "model.hidden" not in result.stdout
    data = json.loads(invoke("diff", a, b, "--json").stdout)
    assert data["a"] == str(a) and len(data["config"]) == 3
    bad = invoke("diff", a, tmp_path)
    assert bad.exit_code == 2 and "not a run directory" in bad.stderr
    with pytest.raises(UserInputError):
        diff_runs(tmp_path / "missing", a)
