"""`nnrun evaluate`: a trained run's metrics, recomputed on a split of its own data or on a data file.

`evaluate_run(run_dir, split=..., data=...)` reads the run back (`load_run`), recovers the exact
rows of the split (checked against split.npz) or reads the file (`nnrun.inputs`), and returns a
plain dict: the loss and the loss's metrics (beside the summary's for that split), a confusion
matrix for class targets, per-attribute accuracies for attribute targets, and RMSE and MAE beside
the predict-the-training-mean baseline for regression; with `plot`, a figure of them in the run
directory. `flip_average` (None: the run's `augment.test_flip`) averages the probabilities of each
image and its mirror, as a run with `augment.test_flip` did for its summary; the result says which
(`flip_average`, and `summary_flip_average` for the summary's values). `evaluation_tables(result)`
renders the dict as tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.text import Text

from nnrun.datasets import SPLITS, TARGET_WORDS
from nnrun.errors import UserInputError
from nnrun.experiment import load_run
from nnrun.inputs import TARGET_KEYS, check_names, read_inputs
from nnrun.nn.losses import BinnedRegression, metric_key
from nnrun.plots import attribute_accuracy_figure, confusion_matrix_figure, predicted_vs_true_figure
from nnrun.tables import DataTable, pct


def evaluate_run(run_dir: str | Path, *, split: str | None = None, data: str | Path | None = None,
                 data_root: str | Path | None = None, plot: bool = False,
                 flip_average: bool | None = None) -> dict[str, Any]:
    """Metrics of the run in `run_dir` on its `split` (default test) or on the file `data` (.npz with X and
    targets, or a CIFAR-10 batch); `data_root` replaces the run's `data.root`; `plot` writes
    `evaluate-LABEL.png` into the run directory (LABEL: the split or the file's name); `flip_average` (None:
    the run's `augment.test_flip`) averages over each image and its mirror."""
    if split is not None and data is not None:
        raise UserInputError("--split and --data exclude each other: evaluate on a split of the run's own data, "
                             "or on a data file")
    if split is not None and split not in SPLITS:
        raise UserInputError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    run = load_run(run_dir)
    if flip_average is not None:
        run = run.with_flip_average(flip_average, "--flip-average")
    kind = run.target_kind
    if data is None:
        split = split or "test"
        X, y = run.load_split(split, data_root)
        source: dict[str, Any] = {"split": split}
        label = split
    else:
        data = Path(data)
        inputs = read_inputs([data], run.model_input)
        if kind not in inputs.targets:
            raise UserInputError(f"{data}: holds no {TARGET_WORDS[kind]} targets, which this run (loss.name="
                                 f"{run.cfg.loss.name}) is scored on; expected the key '{TARGET_KEYS[kind]}'")
        check_names(inputs, kind, run.target_names)
        X = inputs.X
        try:
            y = run.check_y(inputs.targets[kind], len(X))
        except UserInputError as e:
            raise UserInputError(f"{data}: {e}") from None
        source = {"data": str(data)}
        label = data.name
    metrics = run.score(X, y)
    result: dict[str, Any] = {"run_dir": str(run.path), "name": run.cfg.name, "dataset": run.cfg.data.dataset,
                              "loss_name": run.cfg.loss.name, "target_kind": kind, "status": run.summary.get("status"),
                              **source, "n": len(X), "flip_average": run.flip_average, "metrics": metrics}
    if isinstance(run.loss, BinnedRegression):  # binned regression: how the values were decoded (docs/losses.md)
        result["decode"] = run.loss.decode
    if data is None:
        result["summary_metrics"] = {k: run.summary.get(f"{split}_{k}") for k in metrics}
        result["summary_flip_average"] = bool(run.summary.get("flip_average", False))
    predicted = run.predict(X)
    title = f"{run.cfg.name}: {label} ({len(X)} rows)"
    figure = None
    if kind == "classes":
        n_classes = len(run.target_names)
        counts = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(counts, (y, predicted), 1)
        result.update(class_names=run.target_names, confusion_matrix=counts.tolist())
        if plot:
            figure = confusion_matrix_figure(counts, run.target_names, title, run.path / f"evaluate-{label}.png")
    elif kind == "attributes":
        keys = [metric_key(n) for n in run.target_names]
        result["attribute_accuracy"] = {n: metrics[f"accuracy_{k}"] for n, k in zip(run.target_names, keys,
                                                                                     strict=True)}
        if plot:
            figure = attribute_accuracy_figure(result["attribute_accuracy"], title, run.path / f"evaluate-{label}.png")
    elif plot:
        figure = predicted_vs_true_figure(predicted, y.reshape(len(y), -1), run.target_names, title,
                                          run.path / f"evaluate-{label}.png")
    if figure is not None:
        result["figure"] = str(figure)
    return result


def evaluation_tables(result: dict[str, Any]) -> list[DataTable]:
    """The metrics table (beside the summary's values for a split), then the confusion matrix or the
    per-attribute accuracies."""
    where = f"split {result['split']}" if "split" in result else result["data"]
    flips = ", flip-averaged" if result.get("flip_average") else ""
    table = DataTable(f"{result['name']} ({result['loss_name']}): {where}, {result['n']} rows{flips}")
    table.add_column("metric", "label", key=True)
    table.add_column("now", digits=6)
    summary = result.get("summary_metrics")
    if summary is not None:
        other = result.get("summary_flip_average", False) != result.get("flip_average", False)
        way = " (flip-averaged)" if result.get("summary_flip_average") else " (without flips)"
        table.add_column("summary.json" + (way if other else ""), digits=6)
    for key, value in result["metrics"].items():
        table.add_row(key, value, *([summary.get(key)] if summary is not None else []))
    tables = [table]
    if "confusion_matrix" in result:
        tables.append(confusion_table(result["confusion_matrix"], result["class_names"]))
    if "attribute_accuracy" in result:
        attributes = DataTable("accuracy per attribute")
        attributes.add_column("attribute", "label", key=True)
        attributes.add_column("accuracy")
        for name, value in result["attribute_accuracy"].items():
            attributes.add_row(name, pct(value))
        tables.append(attributes)
    return tables


def confusion_table(counts: list[list[int]], class_names: list[str]) -> DataTable:
    """Rows: true class; columns: predicted class (whole names: a narrow terminal gets blocks of columns, each
    repeating the true class); last column: the row's recall."""
    table = DataTable("confusion matrix (rows: true class, columns: predicted)")
    table.add_column("true", "label", key=True)
    for name in class_names:
        table.add_column(name)
    table.add_column("recall")
    for i, (name, row) in enumerate(zip(class_names, counts, strict=True)):
        total = sum(row)
        table.add_row(name, *(Text(str(c), style="bold") if i == j else c for j, c in enumerate(row)),
                      pct(row[i] / total) if total else None)
    return table
