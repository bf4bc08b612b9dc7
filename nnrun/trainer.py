"""The training loop: epochs of shuffled minibatches, per-epoch evaluation, early stopping.

`fit(model, loss_fn, data, setup, reporter, history)` trains a built model on a prepared
dataset. Each epoch visits the training split in minibatches drawn from a fresh permutation
(sampling without replacement), then evaluates: `train_loss` is the mean data loss over the
epoch's batches (what the optimizer saw), `train_accuracy` and the other train metrics come
from an evaluation-mode pass over a fixed seeded subset of `eval_train_size` examples, and val
metrics from the whole validation split. Random streams (all derived from `TrainSetup.seed`):
`shuffle` (batch order), `dropout` (masks), `eval_subset` (the train-metrics subset).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from nnrun.datasets import Dataset
from nnrun.nn.losses import Loss
from nnrun.nn.model import MLP
from nnrun.nn.regularizers import Regularizer
from nnrun.optim import Optimizer, Schedule
from nnrun.rng import stream


class Reporter(Protocol):
    """Receives progress events; the CLI's draws the epoch table, others record or ignore them."""

    def start(self, info: dict[str, Any]) -> None: ...
    def epoch_start(self, epoch: int, n_batches: int) -> None: ...
    def batch_end(self, loss: float) -> None: ...
    def epoch_end(self, row: dict[str, Any]) -> None: ...
    def end(self, summary: dict[str, Any]) -> None: ...


class SilentReporter:
    """A reporter that shows nothing (subclasses override the events they need)."""

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


@dataclass(frozen=True)
class TrainSettings:
    """The loop's settings: `epochs`, `batch_size`, `eval_batch_size` (rows per evaluation forward pass),
    `eval_train_size` (training rows evaluated per epoch), `patience` (epochs without a better validation
    score before stopping; None: never) and `restore_best` (end with the best epoch's weights)."""

    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 4096
    eval_train_size: int = 2000
    patience: int | None = None
    restore_best: bool = True


@dataclass
class TrainSetup:
    """Everything `fit` needs besides the model, the loss and the data: the update rule, the
    penalties and max-norm, the learning-rate schedule, the loop's settings and the seed of its
    random streams."""

    optimizer: Optimizer
    regularizer: Regularizer
    schedule: Schedule
    settings: TrainSettings
    seed: int


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


def validation_score(row: dict[str, Any], loss_fn: Loss) -> tuple[float, ...]:
    """What model selection maximizes: the loss's headline validation metric (accuracy; rmse
    negated, since lower is better), ties broken by lower val loss."""
    metric = row.get(f"val_{loss_fn.primary_metric}")
    if metric is None:
        return (-row["val_loss"],)
    return (metric if loss_fn.higher_is_better else -metric, -row["val_loss"])


def evaluate(model: MLP, loss_fn: Loss, X: np.ndarray, y: np.ndarray, batch_size: int,
             detail: bool = False) -> dict[str, float]:
    """Evaluation-mode loss and metrics of `model` on X: (N, D), in batches of `batch_size`.

    The metrics are the loss's (accuracy; mean attribute accuracy; mae, rmse, rmse_baseline);
    `detail` adds per-attribute accuracies (the final summary has them, epoch rows do not).
    """
    scores = np.concatenate([model.forward(X[i:i + batch_size], train=False)
                             for i in range(0, len(X), batch_size)])
    return {"loss": loss_fn.loss(scores, y), **loss_fn.metrics(scores, y, detail=detail)}


def fit(model: MLP, loss_fn: Loss, data: Dataset, setup: TrainSetup, reporter: Reporter, history: History,
        on_epoch_end: Callable[[History], None] | None = None) -> History:
    """Train `model` on `data` as `setup` says; rows and the last good weights accumulate in `history`.

    Each step: forward (train mode: batch statistics, dropout masks from the `dropout` stream),
    data loss, backward, penalties added to the gradients, optimizer update with the epoch's
    scheduled learning rate, then the max-norm projection. After each epoch the validation
    score is compared with the best so far; with `patience` the loop stops after that many
    epochs without improvement, and with `restore_best` the model ends with the best weights.
    `on_epoch_end(history)` runs after each epoch (the run directory saves metrics there).

    Raises `Diverged` when a batch loss is not finite; `history` then holds the last good state.
    """
    optimizer, regularizer, settings = setup.optimizer, setup.regularizer, setup.settings
    project = regularizer.has_max_norm
    model.set_dropout_rng(stream(setup.seed, "dropout"))
    shuffle_rng = stream(setup.seed, "shuffle")
    n_train = len(data.X_train)
    n_eval = min(settings.eval_train_size, n_train)
    eval_idx = np.sort(stream(setup.seed, "eval_subset").choice(n_train, n_eval, replace=False))
    X_eval, y_eval = data.X_train[eval_idx], data.y_train[eval_idx]
    batch = settings.batch_size
    n_batches = math.ceil(n_train / batch)
    history.last_good = model.snapshot()
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        lr = setup.schedule(epoch - 1, settings.epochs)
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
        train_eval = evaluate(model, loss_fn, X_eval, y_eval, settings.eval_batch_size)
        val_eval = evaluate(model, loss_fn, data.X_val, data.y_val, settings.eval_batch_size)
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
        patience = settings.patience
        if patience is not None and epoch - history.best_epoch >= patience and epoch < settings.epochs:
            history.stopped_early = True
            break
    if settings.restore_best and history.best is not None:
        model.load_state_dict(history.best)
        history.restored_best = True
    return history
