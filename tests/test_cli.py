"""The command line through Typer's CliRunner: outputs, run directories and exit codes."""

import json
import pickle

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from nnrun.cli import app
from tests.cifar_fixtures import write_cifar_folder

runner = CliRunner()
QUICK = ["--set", "train.epochs=2", "--set", "model.hidden=[32]"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_train_json_prints_one_object_and_writes_run_dir(tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "configs/quickstart.yaml", *QUICK, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed"
    for key in ("test_accuracy", "val_accuracy", "train_accuracy", "test_loss", "epochs", "seconds", "seed"):
        assert key in summary
    assert summary["epochs"] == 2 and 0.5 < summary["test_accuracy"] <= 1
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "model.npz", "preprocess.npz"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text()) == summary
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 2 and resolved["model"]["hidden"] == [32]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "val_accuracy" in rows[0]
    with np.load(out / "model.npz") as z:
        assert z["fc0.W"].shape == (64, 32) and z["fc1.W"].shape == (32, 10)
    with np.load(out / "preprocess.npz") as z:
        assert z["mean"].shape == (64,)
    assert not list(out.glob(".*.tmp"))


def test_train_prints_tables_to_stderr_only(tmp_path):
    result = invoke("train", "configs/quickstart.yaml", *QUICK, "--out", tmp_path / "r")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "test" in result.stderr and "accuracy" in result.stderr


def test_same_seed_same_result(tmp_path):
    a = invoke("train", "configs/quickstart.yaml", *QUICK, "--out", tmp_path / "a", "--json", "--quiet")
    b = invoke("train", "configs/quickstart.yaml", *QUICK, "--out", tmp_path / "b", "--json", "--quiet")
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert ja["test_loss"] == jb["test_loss"]


def test_existing_run_dir_is_not_overwritten_without_flag(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = invoke("train", "configs/quickstart.yaml", *QUICK, "--out", out)
    assert result.exit_code == 2
    assert "--overwrite" in result.stderr
    assert (out / "notes.txt").read_text() == "mine"
    assert invoke("train", "configs/quickstart.yaml", *QUICK, "--out", out, "--overwrite").exit_code == 0


def test_diverging_run_exits_1_and_saves_state(tmp_path):
    out = tmp_path / "r"
    result = invoke("train", "configs/quickstart.yaml", *QUICK, "--set", "optim.lr=1e6", "--out", out)
    assert result.exit_code == 1
    assert "run failed" in result.stderr and "Traceback" not in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "loss became" in summary["reason"]
    with np.load(out / "model.npz") as z:
        assert all(np.isfinite(z[k]).all() for k in z.files)


def bad_config(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, expected", [
    ("optim:\n  learning_rate: 0.1\n", "optim.learning_rate: unknown key"),
    ("train:\n  epochs: ten\n", "train.epochs"),
    ("model:\n  init: lecun\n", "model.init"),
    ("model: [1, 2\n", "not valid YAML"),
])
def test_bad_config_exits_2_with_one_message(tmp_path, text, expected):
    result = invoke("train", bad_config(tmp_path, text), "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert expected in result.stderr
    assert "Traceback" not in result.output


def test_missing_config_file_exits_2(tmp_path):
    result = invoke("train", tmp_path / "none.yaml")
    assert result.exit_code == 2 and "config file not found" in result.stderr


def test_bad_set_option_exits_2():
    result = invoke("validate", "configs/quickstart.yaml", "--set", "optim.lr")
    assert result.exit_code == 2 and "KEY=VALUE" in result.stderr


def test_cifar_root_without_files_exits_2(tmp_path):
    result = invoke("train", "configs/cifar10.yaml", "--set", f"data.root={tmp_path}", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "CIFAR-10 not found" in result.stderr and "Traceback" not in result.output


def test_corrupt_cifar_batch_exits_2(tmp_path):
    folder = write_cifar_folder(tmp_path / "data")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros(3, np.uint8)})[:10])
    result = invoke("train", "configs/cifar10.yaml", "--set", f"data.root={tmp_path / 'data'}",
                    "--set", "data.val_size=10", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "corrupt CIFAR-10 batch file" in result.stderr and "test_batch" in result.stderr


def test_cifar_tiny_folder_trains_end_to_end(tmp_path):
    write_cifar_folder(tmp_path / "data")
    result = invoke("train", "configs/cifar10.yaml", "--set", f"data.root={tmp_path / 'data'}",
                    "--set", "data.val_size=10", "--set", "train.epochs=1", "--set", "model.hidden=[8]",
                    "--out", tmp_path / "r", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_test"] == 20


def test_validate_prints_resolved_config():
    result = invoke("validate", "configs/quickstart.yaml", "--set", "optim.lr=0.5")
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout)["optim"]["lr"] == 0.5


def test_schema_is_json():
    result = invoke("schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["title"] == "ExperimentConfig"


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "nnrun", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout


def test_real_cifar10_short_run(cifar10_folder, tmp_path):
    result = invoke("train", "configs/cifar10.yaml", "--set", f"data.root={cifar10_folder}",
                    "--set", "data.train_size=5000", "--set", "train.epochs=1", "--set", "model.hidden=[64]",
                    "--out", tmp_path / "r", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_train"] == 5000 and summary["n_test"] == 10000
    assert summary["test_accuracy"] > 0.2


def test_download_checksum_mismatch_exits_2(tmp_path, monkeypatch):
    from nnrun.datasets import cifar10
    from tests.cifar_fixtures import cifar_tarball_bytes
    from tests.test_datasets import ArchiveServer

    with ArchiveServer(cifar_tarball_bytes(tmp_path / "build")) as server:
        monkeypatch.setattr(cifar10, "CIFAR10_URL", server.url)
        monkeypatch.setattr(cifar10, "CIFAR10_MD5", "0" * 32)
        result = invoke("train", "configs/cifar10.yaml", "--set", f"data.root={tmp_path / 'root'}",
                        "--set", "data.download=true", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "checksum mismatch" in result.stderr and "Traceback" not in result.output
    assert list((tmp_path / "root").iterdir()) == []


def test_gradcheck_with_pca_builds_the_network_on_the_reduced_features():
    result = invoke("gradcheck", "configs/quickstart.yaml", "--set", "preprocess.pca=20",
                    "--set", "model.hidden=[8]", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passed"]


def test_version_and_shell_completion(monkeypatch):
    import typer.completion

    import nnrun

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"nnrun {nnrun.__version__}"
    assert "--install-completion" in invoke("--help").stdout
    # --show-completion shows the script of the shell Typer detects among the process's ancestors: a suite started
    # without a shell above it (a detached CI job) has none, so the detection is fixed to bash here.
    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "bash")
    completion = invoke("--show-completion")
    assert completion.exit_code == 0 and "complete" in completion.stdout, (completion.output, completion.exception)


def test_fixed_choices_are_listed_in_help_and_checked():
    assert "table|csv|json" in invoke("runs", "--help").stdout
    assert "local|dask" in invoke("sweep", "--help").stdout
    bad = invoke("runs", "--format", "xml")
    assert bad.exit_code == 2 and "xml" in bad.stderr


@pytest.mark.parametrize("args", [
    ["train", "configs/quickstart.yaml", "optim.lr=0.1"],
    ["validate", "configs/quickstart.yaml", "optim.lr=0.1"],
    ["sweep", "configs/sweep_digits.yaml", "optim.lr=0.1", "--dry-run"],
])
def test_a_bare_key_value_suggests_set(args):
    result = invoke(*args)
    assert result.exit_code == 2
    assert "--set optim.lr=0.1" in " ".join(result.stderr.split()), result.stderr


def test_a_bare_key_value_in_place_of_the_config_suggests_set(tmp_path):
    result = invoke("train", "optim.lr=0.1", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "write --set optim.lr=0.1" in result.stderr
    assert not (tmp_path / "r").exists()


def test_runs_dir_comes_from_the_environment(tmp_path):
    result = runner.invoke(app, ["train", "configs/quickstart.yaml", *QUICK, "--quiet"],
                           env={"NNRUN_RUNS_DIR": str(tmp_path / "elsewhere")})
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "elsewhere").glob("quickstart-*"))) == 1


def test_train_header_lists_the_choices_and_the_epoch_table_marks_the_best_epoch(tmp_path):
    out = tmp_path / "r"
    result = invoke("train", "configs/quickstart.yaml", *QUICK, "--set", "model.batchnorm=true",
                    "--set", "model.dropout=0.5", "--out", out)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    for choice in ("preprocessing per_feature centring", "init he", "BatchNorm on (momentum 0.1", "dropout keep p=0.5",
                   "regularization l2 0.0001", "loss softmax", "lr 0.01, constant schedule"):
        assert choice in text, choice
    summary = json.loads((out / "summary.json").read_text())
    best = [line for line in result.stderr.splitlines() if line.split()[:1] and line.split()[0].isdigit()
            and line.rstrip().endswith("◀ best")]
    assert len(best) == 1 and best[0].split()[0] == str(summary["best_epoch"])
    assert "batch mean" in text and "evaluation mode" in text
