"""The training loop: epochs of shuffled minibatches, per-epoch evaluation, early stopping, checkpoints.

`fit(model, loss_fn, data, setup, reporter, history)` trains a built model on a prepared
dataset. Each epoch visits the training split in minibatches drawn from a fresh permutation
(sampling without replacement), then evaluates: `train_loss` is the mean data loss per training
example over the epoch's batches (each batch's mean weighted by its size; what the optimizer
saw), `train_accuracy` and the other train metrics come from an evaluation-mode pass over a
fixed seeded subset of `eval_train_size` examples, and val metrics from the whole validation
split. Random streams (all derived from `TrainSetup.seed`):
`shuffle` (batch order), `dropout` (masks), `eval_subset` (the train-metrics subset), and
`augment` (flips and shifts) when `TrainSetup.augment` changes each training batch (never val,
test or the train-metrics subset).

On a GPU (a model moved there with `MLP.to(cupy)`) the training and validation splits are
uploaded once and the epochs run in `nnrun.device_step.DeviceEpochs`: batches are gathered
there, the step is recorded once as a CUDA graph and replayed (unless `TrainSettings.cuda_graph`
is off, or recording fails: `History.step_path` says which ran), and the batch losses stay
there until the epoch ends, when one transfer brings them back: no step waits for the GPU.
Dropout masks come from a counter-based generator keyed from the `dropout_counter` stream (so a
resumed GPU run draws the same masks); GPU runs are deterministic but not bit-identical to CPU runs.

After every epoch the loop records a `Checkpoint` (weights and BatchNorm buffers, optimizer
state, random-stream states, history) in `history.checkpoint`; `fit(..., resume=checkpoint)`
continues from one and takes exactly the steps the uninterrupted run would have taken, after
`Checkpoint.check` has refused (`ValueError`) one this training could not have written.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from nnrun import cpu_kernels
from nnrun.backend import to_device, to_host
from nnrun.datasets import Dataset
from nnrun.device_step import DeviceEpochs
from nnrun.nn.losses import Loss
from nnrun.nn.model import MLP
from nnrun.nn.regularizers import Regularizer
from nnrun.optim import Optimizer, Schedule
from nnrun.parallel import gather_rows
from nnrun.rng import generator_state, set_generator_state, stream

STREAMS = ("shuffle", "dropout", "eval_subset")
"""The loop's random streams, each derived from the seed by name."""
CHECKPOINT_VERSION = 1
"""Layout version of `Checkpoint.to_arrays`; a newer one is refused with a message."""


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
    score before stopping; None: never), `restore_best` (end with the best epoch's weights) and `cuda_graph`
    (on a GPU, replay the step from a CUDA graph)."""

    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 4096
    eval_train_size: int = 2000
    patience: int | None = None
    restore_best: bool = True
    cuda_graph: bool = True
    """On a GPU: record the training step as a CUDA graph and replay it (False: launch every kernel each step)."""


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
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
    """Called on each training batch (B, D) with the `augment` stream; returns the batch to train on."""


@dataclass
class Checkpoint:
    """The training state after `epoch` epochs, enough to continue exactly as if never stopped.

    `weights`: the model's parameters and buffers by name; `optimizer`: `Optimizer.state_dict()`;
    `rng_states`: each stream's generator state; `rows`, `best_epoch`, `best_score`, `best`
    (the best epoch's weights) and `stopped_early`: the history so far.
    """

    epoch: int
    weights: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    rng_states: dict[str, dict]
    rows: list[dict[str, Any]]
    best_epoch: int | None
    best_score: tuple[float, ...] | None
    best: dict[str, np.ndarray] | None
    stopped_early: bool

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The `checkpoint.npz` layout: `model.NAME`, `best.NAME`, `optim.KEY` arrays and `state`, a JSON string
        of the version, epoch, rows, best epoch and score, stopped_early and the stream states."""
        state = {"version": CHECKPOINT_VERSION, "epoch": self.epoch, "rows": self.rows, "best_epoch": self.best_epoch,
                 "best_score": list(self.best_score) if self.best_score is not None else None,
                 "stopped_early": self.stopped_early, "rng_states": self.rng_states}
        arrays = {"state": np.array(json.dumps(state))}
        arrays.update({f"model.{k}": v for k, v in self.weights.items()})
        arrays.update({f"best.{k}": v for k, v in (self.best or {}).items()})
        arrays.update({f"optim.{k}": v for k, v in self.optimizer.items()})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Checkpoint:
        """The checkpoint `to_arrays` wrote; a `ValueError` names what is missing, malformed or too new.

        Only the layout is checked here (entries, the state's fields and their types); `check` holds a
        checkpoint against the model, optimizer and streams it is to continue.
        """
        state_array = arrays.get("state")
        if state_array is None:
            raise ValueError("no 'state' entry")
        if state_array.shape != () or state_array.dtype.kind != "U":
            raise ValueError(f"'state' must be one JSON string, got {state_array.dtype} {state_array.shape}")
        try:
            state = json.loads(str(state_array))
        except (ValueError, RecursionError) as e:
            raise ValueError(f"'state' is not readable JSON: {str(e)[:200]}") from None
        if not isinstance(state, dict):
            raise ValueError(f"'state' must be a JSON object, got {type(state).__name__}")
        version = state.get("version", 0)
        if not _whole(version):
            raise ValueError(f"'state' version must be a whole number, got {_show(version)}")
        if version > CHECKPOINT_VERSION:
            raise ValueError(f"layout version {version} is newer than this nnrun reads "
                             f"({CHECKPOINT_VERSION}); upgrade nnrun")
        stray = sorted(k for k in arrays if k != "state" and not k.startswith(("model.", "best.", "optim.")))
        if stray:
            raise ValueError(f"unknown entries {', '.join(stray[:5])} (a checkpoint holds state, model.*, best.*, "
                             "optim.*)")
        epoch, rows, best_epoch = state.get("epoch"), state.get("rows"), state.get("best_epoch")
        score, stopped, streams = state.get("best_score"), state.get("stopped_early"), state.get("rng_states")
        if not _whole(epoch) or epoch < 1:
            raise ValueError(f"'state' epoch must be a whole number >= 1, got {_show(epoch)}")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("'state' rows must be a list of metric objects")
        if not (best_epoch is None or _whole(best_epoch)):
            raise ValueError(f"'state' best_epoch must be a whole number, got {_show(best_epoch)}")
        if not (score is None or (isinstance(score, list) and all(_number(v) for v in score))):
            raise ValueError(f"'state' best_score must be a list of numbers, got {_show(score)}")
        if not isinstance(stopped, bool):
            raise ValueError(f"'state' stopped_early must be true or false, got {_show(stopped)}")
        if not isinstance(streams, dict) or not all(isinstance(v, dict) for v in streams.values()):
            raise ValueError("'state' rng_states must map each stream to its generator state")

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        return cls(epoch=epoch, weights=part("model."), optimizer=part("optim."), rng_states=streams, rows=rows,
                   best_epoch=best_epoch, best_score=tuple(score) if score is not None else None,
                   best=part("best.") or None, stopped_early=stopped)

    def check(self, model: MLP, optimizer: Optimizer, loss_fn: Loss, settings: TrainSettings,
              streams: dict[str, np.random.Generator], n_batches: int) -> None:
        """Refuse (`ValueError` naming the entry) a checkpoint this training could not have written: `fit`
        continues only from one that holds exactly what the uninterrupted run would hold after `epoch` epochs.

        Checked: the weights and the best epoch's weights have exactly the model's names (BatchNorm's buffers
        with BatchNorm, none without), shapes and dtypes, and are finite; the optimizer state is exactly the
        rule's slots for every parameter and its step counters (`Optimizer.check_state`), a counter equal to
        the steps taken (`epoch * n_batches`); the streams are exactly `streams` (augmentation's only when on)
        with states their generators accept; `epoch` is within 1..`settings.epochs`; `rows` has one row per
        epoch, numbered 1..epoch, with the same finite metrics; `best_epoch` and `best_score` are the first
        epoch with the best `validation_score` of those rows and its score (its weights the last ones when it
        is the last epoch); `stopped_early` only when patience ran out.
        """
        if self.epoch > settings.epochs:
            raise ValueError(f"epoch {self.epoch} is past train.epochs={settings.epochs}")
        expected = {name: _spec(value) for name, value in model.state_dict().items()}
        for what, arrays in (("model", self.weights), ("best", self.best or {})):
            _check_arrays(what, arrays, expected)
        if self.best is None:
            raise ValueError("no best.* weights (every finished epoch has a best epoch)")
        params = model.params
        optimizer.check_state(self.optimizer, params)
        steps = self.epoch * n_batches
        for counter in optimizer.counters:
            if int(self.optimizer[f"#{counter}"]) != steps:
                raise ValueError(f"optim.#{counter} is {int(self.optimizer[f'#{counter}'])}; {self.epoch} epochs of "
                                 f"{n_batches} steps take {steps}")
        if set(self.rng_states) != set(streams):
            raise ValueError(f"random streams {', '.join(sorted(self.rng_states)) or 'none'}; this run draws from "
                             f"{', '.join(sorted(streams))}")
        for name, state in self.rng_states.items():
            probe = np.random.Generator(type(streams[name].bit_generator)())
            try:
                set_generator_state(probe, state)
            except (TypeError, ValueError, KeyError, OverflowError) as e:
                raise ValueError(f"random stream {name!r} has an unusable state: {str(e)[:200]}") from None
        self._check_history(loss_fn, settings)

    def _check_history(self, loss_fn: Loss, settings: TrainSettings) -> None:
        """The rows, best epoch and score, and early stop of `check`."""
        if len(self.rows) != self.epoch:
            raise ValueError(f"{len(self.rows)} metric rows for epoch {self.epoch}")
        keys = set(self.rows[0])
        best_epoch, best_score = None, None
        for i, row in enumerate(self.rows, start=1):
            if row.get("epoch") != i or not _whole(row["epoch"]):
                raise ValueError(f"metric row {i} is numbered {_show(row.get('epoch'))}")
            if set(row) != keys or "val_loss" not in row:
                raise ValueError(f"metric row {i} has other metrics than row 1")
            if not all(_number(v) and math.isfinite(v) for v in row.values()):
                raise ValueError(f"metric row {i} holds a value that is not a finite number")
            score = validation_score(row, loss_fn)
            if best_score is None or score > best_score:
                best_epoch, best_score = i, score
        if self.best_epoch != best_epoch or self.best_score != best_score:
            raise ValueError(f"best_epoch {_show(self.best_epoch)} and best_score {_show(self.best_score)} are not "
                             f"the metric rows' best (epoch {best_epoch})")
        if best_epoch == self.epoch and not all(np.array_equal(self.best[k], v) for k, v in self.weights.items()):
            raise ValueError(f"the best epoch is the last ({best_epoch}), but best.* differ from model.*")
        patience = settings.patience
        if self.stopped_early and (patience is None or self.epoch - best_epoch < patience):
            raise ValueError(f"stopped_early after epoch {self.epoch}, with the best epoch {best_epoch} and "
                             f"train.patience={patience}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, list, type(None))) else repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def _spec(value: Any) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a host or device array."""
    return tuple(value.shape), np.dtype(value.dtype)


def _check_arrays(what: str, arrays: dict[str, np.ndarray], expected: dict[str, tuple[tuple[int, ...], np.dtype]]
                  ) -> None:
    """`arrays` (the `what.*` entries) hold exactly the model's names, each of its shape and dtype, all finite."""
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if arrays and (missing or extra):
        parts = ([f"lacks {', '.join(f'{what}.{k}' for k in missing[:4])}"] if missing else []) + \
                ([f"has {', '.join(f'{what}.{k}' for k in extra[:4])}"] if extra else [])
        raise ValueError(f"{' and '.join(parts)}: it was written for another model than the config builds "
                         f"(model.hidden, model.batchnorm)")
    if not arrays and what == "model":
        raise ValueError("no model.* weights")
    for name, value in arrays.items():
        shape, dtype = expected[name]
        if value.shape != shape or value.dtype != dtype:
            raise ValueError(f"{what}.{name} is {value.dtype} {value.shape}; the model's is {dtype} {shape}")
        if not np.isfinite(value).all():
            raise ValueError(f"{what}.{name} holds values that are not finite")


@dataclass
class History:
    """Per-epoch metric rows, the last good weights, and the best epoch on validation.

    `best_epoch` (1-based) has the best `validation_score` so far and `best` its weights;
    `stopped_early` says whether patience ran out, `restored_best` whether the model was reset
    to the best weights at the end; `checkpoint` is the state after the last finished epoch.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    last_good: dict[str, np.ndarray] | None = None
    best: dict[str, np.ndarray] | None = None
    best_epoch: int | None = None
    best_score: tuple[float, ...] | None = None
    stopped_early: bool = False
    restored_best: bool = False
    checkpoint: Checkpoint | None = None
    step_path: str | None = None
    """How the GPU ran the steps (`nnrun.device_step`: "cuda graph", or "uncaptured (why)"); None on the CPU."""


def training_bytes(sizes: list[int], settings: TrainSettings, optimizer_slots: int, batchnorm: bool = False) -> int:
    """About how many bytes training an MLP of layer `sizes` (inputs first) takes, data aside.

    Parameter-sized float32 arrays: value and gradient, the optimizer's slots, the last good and
    best weights, and the checkpoint's copy of the optimizer state; plus the activations of a
    training batch (about three arrays per layer) and of an evaluation batch.
    """
    params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:], strict=False))
    if batchnorm:
        params += 4 * sum(sizes[1:-1])
    copies = 4 + 2 * optimizer_slots
    activations = 3 * settings.batch_size * sum(sizes[1:]) + 2 * settings.eval_batch_size * max(sizes)
    return 4 * (params * copies + activations)


def step_flops(sizes: list[int], batch_size: int) -> float:
    """Floating-point operations of one training step of an MLP of layer `sizes` on `batch_size` rows: the
    forward product of each Linear layer and the two backward ones (weights and inputs), 2 flops per
    multiply-add."""
    return 6.0 * batch_size * sum(i * o for i, o in zip(sizes[:-1], sizes[1:], strict=False))


def validation_score(row: dict[str, Any], loss_fn: Loss) -> tuple[float, ...]:
    """What model selection maximizes: the loss's headline validation metric (accuracy; rmse
    negated, since lower is better), ties broken by lower val loss."""
    metric = row.get(f"val_{loss_fn.primary_metric}")
    if metric is None:
        return (-row["val_loss"],)
    return (metric if loss_fn.higher_is_better else -metric, -row["val_loss"])


def evaluate(model: MLP, loss_fn: Loss, X: np.ndarray, y: np.ndarray, batch_size: int,
             detail: bool = False, mirror: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, float]:
    """Evaluation-mode loss and metrics of `model` on X: (N, D), in batches of `batch_size`.

    The metrics are the loss's (accuracy; mean attribute accuracy; mae, rmse, rmse_baseline);
    `detail` adds per-attribute accuracies (the final summary has them, epoch rows do not).
    X may live on the model's device (then it is not copied); y and the computation of the
    loss and metrics from the scores are on the host. With `mirror` the scores are flip-averaged
    (`evaluation_scores`).
    """
    return score_metrics(loss_fn, evaluation_scores(model, loss_fn, X, batch_size, mirror), y, detail)


def score_metrics(loss_fn: Loss, scores: np.ndarray, y: np.ndarray, detail: bool = False) -> dict[str, float]:
    """The loss and metrics (`evaluate`) of evaluation scores (N, K) against targets y."""
    return {"loss": loss_fn.loss(scores, y), **loss_fn.metrics(scores, y, detail=detail)}


def evaluation_scores(model: MLP, loss_fn: Loss, X: np.ndarray, batch_size: int,
                      mirror: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Evaluation-mode scores (N, K) of `model` on X (N, D), a host array. With `mirror` (`nnrun.augment.Mirror`,
    test-time flip averaging) a second pass over the mirrored batches, each mirrored on the model's device,
    and the scores whose probabilities are the mean of both passes' (`Loss.mean_proba_scores`)."""
    scores = model.scores(X, batch_size)
    if mirror is None:
        return scores
    return loss_fn.mean_proba_scores(scores, model.scores(X, batch_size, transform=mirror))


def set_up_kernels(model: MLP, X: np.ndarray, batch_size: int) -> None:
    """Set the compiled element-wise kernels up (`cpu_kernels.warm`) for a CPU training loop over `model` fed
    batches of `batch_size` rows of `X` (N, D): where a batch (B, D), its widest activation (B, H) or a weight
    is large enough for a kernel, numba's one-time set-up runs now, before any epoch is timed."""
    rows = min(batch_size, len(X))
    widest = max((p.value.shape[-1] for p in model.params), default=0)
    batch = np.empty((rows, *X.shape[1:]), dtype=X.dtype)  # np.empty touches no memory: shapes for `warm`
    activation = np.empty((rows, widest), dtype=model.params[0].value.dtype if model.params else X.dtype)
    cpu_kernels.warm(batch, activation, *(p.value for p in model.params))


def fit(model: MLP, loss_fn: Loss, data: Dataset, setup: TrainSetup, reporter: Reporter, history: History,
        on_epoch_end: Callable[[History], None] | None = None, *, resume: Checkpoint | None = None) -> History:
    """Train `model` on `data` as `setup` says; rows and the last good weights accumulate in `history`.

    Each step: the batch augmented (with `setup.augment`), forward (train mode: batch statistics,
    dropout masks from the `dropout` stream), data loss, backward, penalties added to the
    gradients, optimizer update with the epoch's scheduled learning rate, then the max-norm
    projection. After each epoch the validation
    score is compared with the best so far; with `patience` the loop stops after that many
    epochs without improvement, and with `restore_best` the model ends with the best weights.
    `on_epoch_end(history)` runs after each epoch, `history.checkpoint` then holding its state
    (the run directory saves metrics and checkpoints there). With `resume` the model, the
    optimizer, the streams and the history start from that checkpoint, at its epoch + 1.

    Raises `Diverged` when a batch loss is not finite; `history` then holds the last good state.
    """
    settings = setup.settings
    rngs = {name: stream(setup.seed, name) for name in STREAMS}
    augment = setup.augment
    if augment is not None:
        rngs["augment"] = stream(setup.seed, "augment")
    model.set_dropout_rng(rngs["dropout"])
    xp = model.xp
    on_gpu = xp is not np
    X_train, y_train = to_device(data.X_train, xp), to_device(data.y_train, xp)
    X_val = to_device(data.X_val, xp)
    n_train = len(data.X_train)
    n_eval = min(settings.eval_train_size, n_train)
    eval_idx = np.sort(rngs["eval_subset"].choice(n_train, n_eval, replace=False))
    X_eval, y_eval = X_train[to_device(eval_idx, xp)], to_host(data.y_train)[eval_idx]
    batch = settings.batch_size
    n_batches = math.ceil(n_train / batch)
    batch_sizes = np.diff(np.minimum(np.arange(n_batches + 1) * batch, n_train))
    device = None
    if on_gpu:
        device = DeviceEpochs(model, loss_fn, setup.optimizer, setup.regularizer, X_train, y_train, batch, augment,
                              int(stream(setup.seed, "dropout_counter").integers(2**63)), settings.cuda_graph)
        history.step_path = device.path
    else:
        batch_buffer = np.empty((min(batch, n_train), *data.X_train.shape[1:]), dtype=data.X_train.dtype)
        set_up_kernels(model, data.X_train, batch)  # before the first epoch's clock
    try:
        return _epochs(model, loss_fn, data, setup, reporter, history, on_epoch_end, resume, rngs, device,
                       X_train, y_train, X_val, X_eval, y_eval, batch_sizes,
                       None if on_gpu else batch_buffer)
    finally:
        if device is not None:
            device.close()
            history.step_path = device.path


def _epochs(model: MLP, loss_fn: Loss, data: Dataset, setup: TrainSetup, reporter: Reporter, history: History,
            on_epoch_end: Callable[[History], None] | None, resume: Checkpoint | None,
            rngs: dict[str, np.random.Generator], device: DeviceEpochs | None, X_train: Any, y_train: Any,
            X_val: Any, X_eval: Any, y_eval: np.ndarray, batch_sizes: np.ndarray,
            batch_buffer: np.ndarray | None) -> History:
    """`fit`'s epochs, from the first (or the one after `resume`) to the last or to early stopping: on the CPU
    batch by batch here, on a GPU through `device`."""
    optimizer, regularizer, settings = setup.optimizer, setup.regularizer, setup.settings
    project = regularizer.has_max_norm
    augment, shuffle_rng = setup.augment, rngs["shuffle"]
    n_train, batch, n_batches = len(data.X_train), settings.batch_size, len(batch_sizes)
    first_epoch = 1
    if resume is not None:
        resume.check(model, optimizer, loss_fn, settings, rngs, n_batches)
        first_epoch = _restore(resume, model, optimizer, rngs, history) + 1
    history.last_good = model.snapshot()
    if history.stopped_early:
        first_epoch = settings.epochs + 1  # patience ran out before: nothing more to train
    for epoch in range(first_epoch, settings.epochs + 1):
        start = time.perf_counter()
        lr = setup.schedule(epoch - 1, settings.epochs)
        reporter.epoch_start(epoch, n_batches)
        order = shuffle_rng.permutation(n_train)
        if device is not None:
            losses = device.run_epoch(epoch, lr, order, rngs.get("augment"))
            history.step_path = device.path
            data_loss_sum, reg_loss_sum = _sum_batch_losses(losses, batch_sizes, epoch, reporter)
        else:
            data_loss_sum = reg_loss_sum = 0.0
            for i in range(0, n_train, batch):
                idx = order[i:i + batch]
                # A full batch reuses one buffer: the layers hold it only until the next forward pass.
                rows = gather_rows(X_train, idx, batch_buffer if len(idx) == len(batch_buffer) else None)
                if augment is not None:
                    rows = augment(rows, rngs["augment"])
                scores = model.forward(rows, train=True)
                data_loss, dscores = loss_fn.loss_and_grad(scores, y_train[idx])
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
        val_eval = evaluate(model, loss_fn, X_val, to_host(data.y_val), settings.eval_batch_size)
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
        patience = settings.patience
        stop = patience is not None and epoch - history.best_epoch >= patience and epoch < settings.epochs
        history.stopped_early = stop
        history.checkpoint = Checkpoint(
            epoch=epoch, weights=history.last_good, optimizer=optimizer.state_dict(),
            rng_states={name: generator_state(rng) for name, rng in rngs.items()}, rows=list(history.rows),
            best_epoch=history.best_epoch, best_score=history.best_score, best=history.best, stopped_early=stop)
        if on_epoch_end is not None:
            on_epoch_end(history)
        reporter.epoch_end(row)
        if stop:
            break
    if settings.restore_best and history.best is not None:
        model.load_state_dict(history.best)
        history.restored_best = True
    return history


def _sum_batch_losses(losses: np.ndarray, batch_sizes: np.ndarray, epoch: int,
                      reporter: Reporter) -> tuple[float, float]:
    """An epoch's batch losses from a GPU, (n_batches, 2) (data loss, penalty) read in one transfer: checked and
    summed as the CPU loop does batch by batch (`Diverged` names the first non-finite one), each reported to
    `reporter` in order."""
    data_loss_sum = reg_loss_sum = 0.0
    for k, ((data_loss, reg_loss), rows) in enumerate(zip(losses.tolist(), batch_sizes.tolist(), strict=True)):
        if not math.isfinite(data_loss):
            raise Diverged(f"loss became {data_loss} in epoch {epoch}, batch {k + 1}")
        data_loss_sum += data_loss * rows
        reg_loss_sum += reg_loss * rows
        reporter.batch_end(data_loss)
    return data_loss_sum, reg_loss_sum


def _restore(checkpoint: Checkpoint, model: MLP, optimizer: Optimizer, rngs: dict[str, np.random.Generator],
             history: History) -> int:
    """Put the model, optimizer, streams and history into the state of `checkpoint`; returns its epoch. The
    checkpoint was `Checkpoint.check`ed against them first."""
    model.load_state_dict(checkpoint.weights)
    optimizer.load_state_dict(checkpoint.optimizer, model.params)
    for name, state in checkpoint.rng_states.items():
        set_generator_state(rngs[name], state)
    history.rows = list(checkpoint.rows)
    history.best_epoch, history.best_score = checkpoint.best_epoch, checkpoint.best_score
    history.best = checkpoint.best
    history.stopped_early = checkpoint.stopped_early
    history.checkpoint = checkpoint
    return checkpoint.epoch
