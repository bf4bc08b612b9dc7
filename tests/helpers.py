"""Helpers shared by test modules."""

import json

from typer.testing import CliRunner

from nnrun.config import DataConfig
from nnrun.datasets import Dataset, load_dataset
from nnrun.experiment import data_options

TINY_RUN = ["model.hidden=[16]", "train.epochs=2", "train.batch_size=64"]
"""`--set`-style overrides that make a run of the default config train in a fraction of a second."""


def invoke(*args):
    """Run the `nnrun` CLI in-process with these arguments (paths and numbers turned into strings)."""
    from nnrun.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def invoke_json(*args) -> dict:
    """Run a command with `--json` that must succeed; its stdout parsed."""
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def invoke_error(*args) -> str:
    """Run a command that must refuse its input: exit 2, no traceback, nothing on stdout; its stderr."""
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    return result.stderr


def load(cfg: DataConfig, seed: int) -> Dataset:
    """The dataset a data section names, split with `seed` (what `nnrun.experiment.load_data` does)."""
    return load_dataset(cfg.dataset, data_options(cfg), seed)


def train_run(out, *sets: str, config=None):
    """Train a run of `config` (None: defaults) with `--set`-style overrides into `out`; returns `out`."""
    from nnrun.config import load_config
    from nnrun.train import train_new

    train_new(load_config(config, list(sets)), out=out)
    return out


def write_run(root, name, config=None, rows=(), summary=None):
    """A run directory as `nnrun train` leaves it: the resolved `config` (a nested mapping of overrides of the
    defaults), `metrics.jsonl` of `rows` and, when given, `summary.json`. Returns its path."""
    from nnrun.config import validate_config
    from nnrun.rundir import RunDir

    with RunDir.create(root / name) as run:
        run.write_config(validate_config(dict(config or {})).to_yaml())
        run.write_metrics(list(rows))
        if summary is not None:
            run.write_summary(summary)
    return root / name


def epoch_rows(accuracies, losses):
    """Rows of metrics.jsonl with these val accuracies and train losses, epochs from 1."""
    return [{"epoch": i + 1, "lr": 0.01, "train_loss": loss, "val_loss": loss * 1.1, "val_accuracy": acc}
            for i, (acc, loss) in enumerate(zip(accuracies, losses, strict=True))]


def sweep_runs(root):
    """A 3 x 2 x 2 grid of fake runs (optim.lr x regularization.l2 x seed) with known metrics: val_accuracy
    = 0.5 + lr * 4 + seed / 100 - l2 * 100 at the final epoch of 3. Returns {name: (lr, l2, seed, accuracy)}."""
    runs = {}
    for lr in (0.001, 0.01, 0.1):
        for l2 in (0.0, 0.0001):
            for seed in (0, 1):
                acc = 0.5 + lr * 4 + seed / 100 - l2 * 100
                name = f"run-lr{lr}-l2{l2}-s{seed}"
                write_run(root, name, {"seed": seed, "optim": {"lr": lr}, "regularization": {"l2": l2}},
                          epoch_rows([acc - 0.2, acc - 0.1, acc], [2.0, 1.0, 0.5 + lr]),
                          {"status": "completed", "epochs": 3, "best_epoch": 3, "val_accuracy": acc,
                           "test_accuracy": acc - 0.01, "val_loss": 0.5, "test_loss": 0.6, "train_loss": 0.4,
                           "seconds": 1.5})
                runs[name] = (lr, l2, seed, acc)
    return runs
