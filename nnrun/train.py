"""The training loop and the whole experiment: data -> preprocess -> model -> train -> run dir.

`run_experiment(config, run_dir, reporter)` is what `nnrun train` calls. Each epoch visits
the training split in minibatches drawn from a fresh permutation (sampling without
replacement), then evaluates: `train_loss` is the mean data loss over the epoch's batches
(what the optimizer saw), `train_accuracy` and the other train metrics come from an
evaluation-mode pass over a fixed seeded subset of `train.eval_train_size` examples, and val
metrics from the whole validation split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nnrun.config import ExperimentConfig
from nnrun.datasets import Dataset, load_dataset
from nnrun.errors import RunFailed
from nnrun.io import write_npz
from nnrun.nn.losses import build_loss, loss_target_kind
from nnrun.nn.model import MLP, build_mlp
from nnrun.nn.regularizers import Regularizer
from nnrun.optim import OPTIMIZERS, learning_rate
from nnrun.preprocess import Preprocessor, fit_preprocessor
from nnrun.rng import stream
from nnrun.runs import RunDir


class Reporter(Protocol):
    """Receives progress events; the CLI's is rich, tests and sweeps use `SilentReporter`."""

    def start(self, info: dict[str, Any]) -> None: ...
    def epoch_start(self, epoch: int, n_batches: int) -> None: ...
    def batch_end(self, loss: float) -> None: ...
    def epoch_end(self, row: dict[str, Any]) -> None: ...
    def end(self, summary: dict[str, Any]) -> None: ...


class SilentReporter:
    """A reporter that shows nothing."""

    def start(self, info: dict[str, Any]) -> None:
        pass

    def epoch_start(self, epoch: int, n_batches: int) -> None:
        pass

    def batch_end(self, loss: float) -> None:
        pass

    def epoch_end(self, row: dict[str, Any]) -> None:
        pass

    def end(self, summary: dict[str, Any]) -> None:
        pass


class Diverged(Exception):
    """The training loss became NaN or infinite."""


@dataclass
class History:
    """Per-epoch metric rows, the last good weights, and the best epoch on validation.

    `best_epoch` (1-based) has the best `validation_score` so far and `best` its weights;
    `stopped_early` says whether patience ran out, `restored_best` whether the model was reset
    to the best weights at the end.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    last_good: dict[str, np.ndarray] | None = None
    best: dict[str, np.ndarray] | None = None
    best_epoch: int | None = None
    best_score: tuple[float, ...] | None = None
    stopped_early: bool = False
    restored_best: bool = False


def validation_score(row: dict[str, Any], loss_fn) -> tuple[float, ...]:
    """What model selection maximizes: the loss's headline validation metric (accuracy; rmse
    negated, since lower is better), ties broken by lower val loss."""
    metric = row.get(f"val_{loss_fn.primary_metric}")
    if metric is None:
        return (-row["val_loss"],)
    return (metric if loss_fn.higher_is_better else -metric, -row["val_loss"])


def evaluate(model: MLP, loss_fn, X: np.ndarray, y: np.ndarray, batch_size: int,
             detail: bool = False) -> dict[str, float]:
    """Evaluation-mode loss and metrics of `model` on X: (N, D), in batches of `batch_size`.

    The metrics are the loss's (accuracy; mean attribute accuracy; mae, rmse, rmse_baseline);
    `detail` adds per-attribute accuracies (the final summary has them, epoch rows do not).
    """
    scores = np.concatenate([model.forward(X[i:i + batch_size], train=False)
                             for i in range(0, len(X), batch_size)])
    return {"loss": loss_fn.loss(scores, y), **loss_fn.metrics(scores, y, detail=detail)}


def fit(model: MLP, loss_fn, data: Dataset, cfg: ExperimentConfig, reporter: Reporter,
        history: History, on_epoch_end: Callable[[History], None] | None = None) -> History:
    """Train `model` on `data` as `cfg` says; rows and the last good weights accumulate in `history`.

    Each step: forward (train mode: batch statistics, dropout masks from the `dropout` stream),
    data loss, backward, penalties added to the gradients, optimizer update with the epoch's
    scheduled learning rate, then the max-norm projection. After each epoch the validation
    score is compared with the best so far; with `train.patience` the loop stops after that many
    epochs without improvement, and with `train.restore_best` the model ends with the best weights.
    `on_epoch_end(history)` runs after each epoch (the run directory saves metrics there).

    Raises `Diverged` when a batch loss is not finite; `history` then holds the last good state.
    """
    optimizer = OPTIMIZERS[cfg.optim.name](cfg.optim)
    regularizer = Regularizer.from_config(cfg.regularization, cfg.model)
    project = regularizer.has_max_norm
    model.set_dropout_rng(stream(cfg.seed, "dropout"))
    shuffle_rng = stream(cfg.seed, "shuffle")
    n_train = len(data.X_train)
    n_eval = min(cfg.train.eval_train_size, n_train)
    eval_idx = np.sort(stream(cfg.seed, "eval_subset").choice(n_train, n_eval, replace=False))
    X_eval, y_eval = data.X_train[eval_idx], data.y_train[eval_idx]
    batch = cfg.train.batch_size
    n_batches = math.ceil(n_train / batch)
    history.last_good = model.snapshot()
    for epoch in range(1, cfg.train.epochs + 1):
        start = time.perf_counter()
        lr = learning_rate(cfg.optim, epoch - 1, cfg.train.epochs)
        reporter.epoch_start(epoch, n_batches)
        order = shuffle_rng.permutation(n_train)
        data_loss_sum = reg_loss_sum = 0.0
        for i in range(0, n_train, batch):
            idx = order[i:i + batch]
            scores = model.forward(data.X_train[idx], train=True)
            data_loss, dscores = loss_fn.loss_and_grad(scores, data.y_train[idx])
            if not math.isfinite(data_loss):
                raise Diverged(f"loss became {data_loss} in epoch {epoch}, batch {i // batch + 1}")
            model.backward(dscores)
            reg_loss = regularizer.add_penalty(model.params)
            optimizer.step(model.params, lr)
            if project:
                regularizer.project(model.params)
            data_loss_sum += data_loss * len(idx)
            reg_loss_sum += reg_loss * len(idx)
            reporter.batch_end(data_loss)
        train_eval = evaluate(model, loss_fn, X_eval, y_eval, cfg.train.eval_batch_size)
        val_eval = evaluate(model, loss_fn, data.X_val, data.y_val, cfg.train.eval_batch_size)
        if not all(math.isfinite(v) for v in (*train_eval.values(), *val_eval.values())):
            raise Diverged(f"evaluation gave non-finite values after epoch {epoch}")
        row = {"epoch": epoch, "lr": lr, "train_loss": data_loss_sum / n_train,
               "reg_loss": reg_loss_sum / n_train,
               **{f"train_{k}": v for k, v in train_eval.items() if k != "loss"},
               **{f"val_{k}": v for k, v in val_eval.items()},
               "seconds": time.perf_counter() - start}
        history.rows.append(row)
        history.last_good = model.snapshot()
        score = validation_score(row, loss_fn)
        if history.best_score is None or score > history.best_score:
            history.best_score, history.best_epoch, history.best = score, epoch, history.last_good
        if on_epoch_end is not None:
            on_epoch_end(history)
        reporter.epoch_end(row)
        patience = cfg.train.patience
        if patience is not None and epoch - history.best_epoch >= patience and epoch < cfg.train.epochs:
            history.stopped_early = True
            break
    if cfg.train.restore_best and history.best is not None:
        model.load_state_dict(history.best)
        history.restored_best = True
    return history


def prepare_data(cfg: ExperimentConfig) -> tuple[Dataset, Preprocessor, Any]:
    """The dataset ready to train on, the fitted preprocessor, and the loss.

    Loads and splits the data, switches it to the targets the loss trains on (failing early
    when they do not fit), fits the preprocessing on the training split alone and applies it
    to every split in place, then builds the loss (fitted on the training targets).
    """
    data = load_dataset(cfg.data, cfg.seed)
    data.use_targets(loss_target_kind(cfg.loss), cfg.loss.name)
    preprocessor = fit_preprocessor(cfg.preprocess, data.X_train, data.image_shape)
    for name in ("X_train", "X_val", "X_test"):
        setattr(data, name, preprocessor.transform(getattr(data, name), copy=False))
    return data, preprocessor, build_loss(cfg.loss, data)


def run_experiment(cfg: ExperimentConfig, run: RunDir, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run the experiment `cfg` into `run` and return the summary (also written to summary.json).

    Raises `UserInputError` for bad data or config, `RunFailed` (after saving state) when
    training diverges or is interrupted.
    """
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    run.write_config(cfg)
    data, preprocessor, loss_fn = prepare_data(cfg)
    run.write_preprocess(preprocessor.statistics())
    names = {"classes": data.class_names, "attributes": data.attribute_names, "regression": data.target_names}
    write_npz(run.path / "targets.npz", {"kind": np.array(data.target_kind),
                                         "names": np.array(names[data.target_kind], dtype=str),
                                         **loss_fn.state()})
    n_outputs = loss_fn.output_dim(data.n_targets)
    model = build_mlp(cfg.model, data.n_features, n_outputs, stream(cfg.seed, "init"))
    n_params = sum(p.value.size for p in model.params)
    reporter.start({"name": cfg.name, "run_dir": str(run.path), "dataset": data.name, **data.sizes(),
                    "features": data.n_features, "loss": cfg.loss.name, "targets": data.target_kind,
                    "outputs": n_outputs, "parameters": n_params})
    history = History()
    status, reason = "completed", None
    try:
        # Overflow on the way to a NaN loss is reported as a failed run, not as NumPy warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            fit(model, loss_fn, data, cfg, reporter, history, lambda h: run.write_metrics(h.rows))
    except Diverged as e:
        status, reason = "failed", str(e)
    except KeyboardInterrupt:
        status, reason = "interrupted", "interrupted by the user"
    run.write_metrics(history.rows)
    summary: dict[str, Any] = {"status": status, "name": cfg.name, "seed": cfg.seed, "dataset": data.name,
                               "epochs": len(history.rows), **{f"n_{k}": v for k, v in data.sizes().items()},
                               "parameters": n_params, "best_epoch": history.best_epoch,
                               "stopped_early": history.stopped_early,
                               "restored_best": history.restored_best}
    if status != "completed":
        model.load_state_dict(history.last_good)
        run.write_model(history.last_good)
        summary.update({"reason": reason, "seconds": time.perf_counter() - started})
        run.write_summary(summary)
        raise RunFailed(f"{reason}; status {status}. Last good weights and metrics saved in {run.path}")
    run.write_model(model.state_dict())
    final = {split: evaluate(model, loss_fn, X, y, cfg.train.eval_batch_size, detail=True)
             for split, X, y in (("train", data.X_train, data.y_train), ("val", data.X_val, data.y_val),
                                 ("test", data.X_test, data.y_test))}
    for split, values in final.items():
        summary.update({f"{split}_{k}": v for k, v in values.items()})
    seconds = time.perf_counter() - started
    train_seconds = sum(r["seconds"] for r in history.rows)
    summary.update({"seconds": seconds, "seconds_per_epoch": train_seconds / max(len(history.rows), 1),
                    "run_dir": str(run.path)})
    run.write_summary(summary)
    reporter.end(summary)
    return summary


def default_run_path(runs_root: Path, name: str) -> Path:
    """`runs_root/<name>-<YYYYmmdd-HHMMSS>`, with a numeric suffix if that exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs_root / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = runs_root / f"{name}-{stamp}-{n}"
    return path
