"""`nnrun predict`: a trained run's predictions for new data, as a CSV table or an .npz file.

`predict_run(run_dir, inputs, ...)` reads the run back (`load_run`) and the input files
(`nnrun.inputs`: .npz files with X, CIFAR-10 batch files, PNG/JPEG images), and returns a plain
dict with one row per input row. The columns (CSV, and the `--json` rows):

- `id` (0-based over all inputs), `source` (the file), `row` (the row within that file);
- `target`, when any input holds targets of the run's kind (a CIFAR-10 batch's labels, an .npz's `y`),
  empty for the rows of inputs without them (an image);
- class targets: `prediction` (a class name), then `top1_class`, `top1_proba`, ... `topK_class`,
  `topK_proba` (`topJ_score` for losses without probabilities: SVM and squared hinge);
- attribute targets: `prediction` (the predicted attributes joined by `|`), then `proba_NAME` (or
  `score_NAME`) per attribute;
- regression: `prediction` (one output) or `prediction_NAME` per output, in the targets' own units;
  binned regression (`loss.bins`) with bin probabilities also gives `lower_80`, `upper_80`, `lower_95`,
  `upper_95`: the central 80 % and 95 % intervals of the predictive distribution (docs/losses.md).

The .npz output holds arrays instead: `prediction` (class labels (N,), 0/1 (N, A) or values (N, T)),
`names` (class, attribute or output names), `scores` (the network's outputs (N, K)), `decision`
and `proba` where the loss defines them, `interval_80`, `interval_95` ((N, 2): lower and upper end) for
binned regression, `source`, `row` and `target` when known (when only some inputs
hold targets, `target_known` (N,) marks their rows; the others hold -1, or NaN for regression).

With flip averaging (`flip_average`, by default the run's `augment.test_flip`) the probabilities are the
mean over each image and its left-right mirror, and `scores` are the scores of those probabilities.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from nnrun.errors import UserInputError
from nnrun.experiment import TrainedRun, load_run
from nnrun.inputs import check_names, read_inputs
from nnrun.io import write_npz, write_text
from nnrun.metrics import COVERAGE_LEVELS
from nnrun.tables import csv_field

OUTPUT_FORMATS = (".csv", ".npz")
"""The file endings `--out` may have."""


def predict_run(run_dir: str | Path, inputs: list[Path] | tuple[Path, ...], *, out: str | Path | None = None,
                overwrite: bool = False, top_k: int = 3, flip_average: bool | None = None) -> dict[str, Any]:
    """Predictions of the run in `run_dir` for the rows of `inputs`; written to `out` (.csv or .npz) when
    given (an existing file only with `overwrite`); `flip_average` (None: the run's `augment.test_flip`)
    averages over each image and its mirror. Returns `run_dir`, the run's `status`, `n`, `inputs`,
    `target_kind`, `flip_average`, `columns`, `rows` (one list per input row), `resized` (images resized to
    the model's input), `out`."""
    if top_k < 1:
        raise UserInputError(f"--top-k must be at least 1, got {top_k}")
    if out is not None:
        out = Path(out)
        if out.suffix.lower() not in OUTPUT_FORMATS:
            raise UserInputError(f"--out {out}: the file must end in .csv or .npz")
        if out.exists() and not out.is_file():
            raise UserInputError(f"--out {out} exists and is not a file")
        if out.exists() and not overwrite:
            raise UserInputError(f"--out {out} already exists; choose another file or pass --overwrite")
    run = load_run(run_dir)
    if flip_average is not None:
        run = run.with_flip_average(flip_average, "--flip-average")
    data = read_inputs(list(inputs), run.model_input)
    kind = run.target_kind
    target, known = None, None
    if kind in data.targets:
        check_names(data, kind, run.target_names)
        known = data.known[kind]
        try:
            given = run.check_y(data.targets[kind][known], int(known.sum()))
        except UserInputError as e:
            raise UserInputError(f"{data.named_by.get(kind, data.source[0])}: {e}") from None
        target = np.full((len(data.X), *given.shape[1:]), np.nan if kind == "regression" else -1, dtype=given.dtype)
        target[known] = given
        known = None if known.all() else known
    scores = run.scores(data.X)
    loss = run.loss
    prediction = loss.predict(scores)
    proba = loss.predict_proba(scores) if loss.has_proba else None
    decision = loss.decision_function(scores) if loss.has_decision_function else None
    intervals = ({round(level * 100): loss.interval(scores, level) for level in COVERAGE_LEVELS}
                 if loss.has_intervals else {})
    columns, rows = prediction_rows(run, data.source, data.row, prediction, proba, decision, target, top_k, known,
                                    intervals)
    result: dict[str, Any] = {"run_dir": str(run.path), "status": run.summary.get("status"), "n": len(rows),
                              "inputs": [str(p) for p in inputs], "target_kind": kind,
                              "flip_average": run.flip_average, "columns": columns,
                              "rows": rows, "resized": data.resized, "out": None if out is None else str(out)}
    if out is not None and out.suffix.lower() == ".npz":
        arrays = {"prediction": prediction, "names": np.array(run.target_names, dtype=str), "scores": scores,
                  "source": np.array(data.source, dtype=str), "row": data.row}
        arrays.update({k: v for k, v in (("decision", decision), ("proba", proba), ("target", target),
                                         ("target_known", known)) if v is not None})
        arrays.update({f"interval_{percent}": values for percent, values in intervals.items()})
        write_npz(out, arrays)
    elif out is not None:
        write_text(out, predictions_csv(columns, rows))
    return result


def prediction_rows(run: TrainedRun, source: list[str], row: np.ndarray, prediction: np.ndarray,
                    proba: np.ndarray | None, decision: np.ndarray | None, target: np.ndarray | None,
                    top_k: int, known: np.ndarray | None = None,
                    intervals: dict[int, np.ndarray] | None = None) -> tuple[list[str], list[list[Any]]]:
    """The columns and rows described in the module docstring (floats as the shortest text that reads back
    to the same float32); `known` (None: every row) marks the rows whose target is known, the others get
    None (an empty CSV cell, null in JSON); `intervals`: the central interval (N, 2) of each level in percent
    (binned regression)."""
    names, kind = run.target_names, run.target_kind
    n = len(prediction)
    columns = ["id", "source", "row"]
    cells: list[list[Any]] = [[i, source[i], int(row[i])] for i in range(n)]

    def add(column_names: list[str], values: list[list[Any]]) -> None:
        columns.extend(column_names)
        for line, extra in zip(cells, values, strict=True):
            line.extend(extra)

    def add_target(column_names: list[str], values: list[list[Any]]) -> None:
        add(column_names, values if known is None else
            [v if k else [None] * len(column_names) for v, k in zip(values, known, strict=True)])

    if kind == "classes":
        if target is not None:
            add_target(["target"], [[names[t]] for t in target])
        ranking, word = (proba, "proba") if proba is not None else (decision, "score")
        k = min(top_k, len(names))
        top = np.argsort(-ranking, axis=1, kind="stable")[:, :k]
        values = short_floats(np.take_along_axis(ranking, top, axis=1))
        add(["prediction"], [[names[p]] for p in prediction])
        add([c for j in range(1, k + 1) for c in (f"top{j}_class", f"top{j}_{word}")],
            [[x for j in range(k) for x in (names[top[i, j]], values[i][j])] for i in range(n)])
    elif kind == "attributes":
        if target is not None:
            add_target(["target"], [["|".join(a for a, v in zip(names, t, strict=True) if v == 1)] for t in target])
        add(["prediction"], [["|".join(a for a, v in zip(names, p, strict=True) if v)] for p in prediction])
        ranking, word = (proba, "proba") if proba is not None else (decision, "score")
        add([f"{word}_{a}" for a in names], short_floats(ranking))
    else:
        outputs = ["prediction"] if prediction.shape[1] == 1 else [f"prediction_{t}" for t in names]
        if target is not None:
            add_target(["target"] if target.shape[1] == 1 else [f"target_{t}" for t in names], short_floats(target))
        add(outputs, short_floats(prediction))
        for percent, values in (intervals or {}).items():
            add([f"lower_{percent}", f"upper_{percent}"], short_floats(values))
    return columns, cells


def short_floats(values: np.ndarray) -> list[list[float]]:
    """(N, K) floats as lists of Python floats; float32 values as the shortest decimal that reads back to them."""
    values = np.asarray(values)
    if values.dtype == np.float32:
        return [[float(str(v)) for v in line] for line in values]
    return values.astype(np.float64).tolist()


def predictions_csv(columns: list[str], rows: list[list[Any]]) -> str:
    """The predictions as a CSV document: a header of `columns`, then one line per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([csv_field(c) for c in columns])
    writer.writerows([csv_field(v) for v in line] for line in rows)
    return buffer.getvalue()
