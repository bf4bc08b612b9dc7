"""Training epochs on a GPU: one step function, recorded once as a CUDA graph and replayed for every batch.

A training step of the reference network is about a hundred small kernel launches, and a GPU runs
them faster than Python can issue them. `DeviceEpochs` therefore writes the step so that a replay of
its launches is the step itself, then records it (CuPy stream capture) and replays the recording:

- **No host value that changes between steps.** Whatever differs from one step to the next is read
  by the kernels from device arrays that are filled once per epoch: `order` (the epoch's
  permutation; each batch is gathered from it on the device), `counters` ([batch index, global
  step], advanced by the last launch of each step), `table` (each step's optimizer scalars:
  learning rate, Adam's bias corrections, the decay factor, from `Optimizer.step_scalars`), `moves`
  (each example's flip and shifts, drawn on the host from the `augment` stream in the order the CPU
  draws them) and `losses` (each step's data loss and penalty, read in one transfer at the end of
  the epoch). Dropout masks come from a counter-based generator of (key, global step, element).
- **Static buffers.** Each batch is gathered into the same input and label buffers; the recording
  allocates its temporaries from a memory pool of its own, which nothing else uses, so the addresses
  a replay writes stay its own.
- **The same launches either way.** The first full batch of a run runs uncaptured (it compiles the
  kernels and creates the optimizer's state), the second is recorded, and every later one replays;
  the last, smaller batch of an epoch runs uncaptured. Captured and uncaptured steps launch the same
  kernels in the same order, so a run gives the same bytes whichever path ran. When recording
  fails (a step that needs the host inside, such as a loss that reads a value back), the run goes on
  uncaptured and `path` says why.

All of it runs on one stream of its own; `close` waits for it.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from nnrun.augment import Augmentation
from nnrun.backend import is_device_array
from nnrun.nn import kernels
from nnrun.nn.losses import Loss
from nnrun.nn.model import MLP
from nnrun.nn.regularizers import Regularizer
from nnrun.optim import Optimizer

CAPTURED = "cuda graph"
"""`DeviceEpochs.path` once the step replays from a CUDA graph."""
UNCAPTURED = "uncaptured"
"""`DeviceEpochs.path` while every step is launched one kernel at a time (followed by the reason)."""


class DeviceEpochs:
    """The training epochs of `model` (on a GPU) over `X_train` (N, D) and `y_train` (N, ...), both on the GPU.

    `run_epoch(epoch, lr, order, augment_rng)` takes one epoch's steps and returns their (data loss, penalty)
    pairs (n_batches, 2) on the host; `capture=False` never records a graph. `dropout_key` seeds the
    counter-based dropout masks.
    """

    def __init__(self, model: MLP, loss_fn: Loss, optimizer: Optimizer, regularizer: Regularizer,
                 X_train: Any, y_train: Any, batch_size: int, augment: Any, dropout_key: int,
                 capture: bool = True) -> None:
        xp = model.xp
        if optimizer.fused is None:
            raise ValueError(f"{type(optimizer).__name__} has no fused GPU update (Optimizer.fused)")
        self.xp, self.model, self.loss_fn = xp, model, loss_fn
        self.optimizer, self.regularizer = optimizer, regularizer
        self.X_train, self.y_train = X_train, y_train
        self.batch = min(batch_size, len(X_train))
        self.n_train = len(X_train)
        self.n_batches = math.ceil(self.n_train / self.batch)
        self.stream = xp.cuda.Stream(non_blocking=True)
        self.dtype = dtype = model.params[0].value.dtype
        with self.stream:
            self.order = xp.zeros(self.n_train, dtype=xp.int64)
            self.counters = xp.zeros(2, dtype=xp.int64)
            self.losses = xp.zeros((self.n_batches, 2), dtype=xp.float64)
            self.table: Any = None  # (n_batches, scalars per step), made at the first epoch
            self.zero = xp.zeros(1, dtype=dtype)
            sizes = {self.batch, self.n_train - (self.n_batches - 1) * self.batch}
            self.inputs = {b: xp.empty((b, *X_train.shape[1:]), dtype=X_train.dtype) for b in sizes}
            self.labels = {b: xp.empty((b, *y_train.shape[1:]), dtype=y_train.dtype) for b in sizes}
            self.augment: Augmentation | None = None
            self.affine = None
            if isinstance(augment, Augmentation) and augment.active:
                self.augment = augment
                self.moves = xp.zeros((self.n_train, 3), dtype=xp.int32)
                if augment.pixel_affine is not None:
                    self.affine = tuple(xp.asarray(a, dtype=X_train.dtype) for a in augment.pixel_affine)
            elif augment is not None:
                raise ValueError("a GPU step augments with nnrun.augment.Augmentation only")
        model.set_dropout_counter(dropout_key, self.counters)
        self.capture = capture
        self.graph: Any = None
        self.pool: Any = None
        self.warm = False
        self.path = f"{UNCAPTURED} (train.cuda_graph: false)" if not capture else f"{UNCAPTURED} (not recorded yet)"

    def run_epoch(self, epoch: int, lr: float, order: np.ndarray, augment_rng: np.random.Generator | None) -> Any:
        """Train one epoch: the batches in `order` (N,) (a host permutation), at learning rate `lr`; returns the
        host array (n_batches, 2) of each step's data loss and penalty (float64). Draws each batch's moves from
        `augment_rng` when augmenting, batch by batch, as the CPU loop does."""
        xp, b, n = self.xp, self.batch, self.n_train
        table = np.array([self.optimizer.step_scalars(lr) for _ in range(self.n_batches)], dtype=self.dtype)
        xp.cuda.get_current_stream().synchronize()  # work queued outside (a resume's weights, evaluation) is done
        with self.stream:
            if self.table is None:
                self.table = xp.zeros(table.shape, dtype=self.dtype)
            self.order.set(np.ascontiguousarray(order, dtype=np.int64))
            self.table.set(table)
            self.counters.set(np.array([0, (epoch - 1) * self.n_batches], dtype=np.int64))
            if self.augment is not None:
                moves = np.empty((n, 3), dtype=np.int32)
                for start in range(0, n, b):
                    flips, shifts = self.augment.draws(min(b, n - start), augment_rng)
                    moves[start:start + len(flips)] = np.column_stack([flips, shifts[0], shifts[1]])
                self.moves.set(moves)
            for start in range(0, n, b):
                if min(b, n - start) == b and self.capture:
                    self._full_step()
                else:
                    self._step(min(b, n - start))
            return self.losses.get()

    def _full_step(self) -> None:
        """A full batch: replayed from the graph, recorded first when the kernels are warm, else launched."""
        if self.graph is None and self.warm:
            try:
                self._record()
                self.path = CAPTURED
            except Exception as e:  # CuPy's CUDA errors for whatever a capture cannot hold
                self.capture, self.graph, self.pool = False, None, None
                self.path = f"{UNCAPTURED} (recording the step failed: {type(e).__name__}: {e})"
                self._step(self.batch)
                return
        if self.graph is not None:
            self.graph.launch(stream=self.stream)
            return
        self._step(self.batch)
        self.warm = True

    def _record(self) -> None:
        """Record one full step as a CUDA graph (its temporaries from a pool of its own); nothing runs yet."""
        xp = self.xp
        pool = xp.cuda.MemoryPool()
        with xp.cuda.using_allocator(pool.malloc):
            self.stream.begin_capture()
            try:
                self._step(self.batch)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.stream.end_capture()
                raise
            graph = self.stream.end_capture()
        self.graph, self.pool = graph, pool

    def _step(self, b: int) -> None:
        """One training step on the batch of b rows at `counters[0]`: everything on the device."""
        model, xp = self.model, self.xp
        X, y = self.inputs[b], self.labels[b]
        if self.augment is not None:
            kernels.augment_rows(self.X_train, self.order, self.moves, self.counters, self.batch,
                                 self.augment.image_shape, self.augment.padding == "reflect", self.affine, X)
        else:
            kernels.gather_rows(self.X_train, self.order, self.counters, self.batch, X)
        kernels.gather_rows(self.y_train, self.order, self.counters, self.batch, y)
        scores = model.forward(X, train=True)
        data_loss, dscores = self.loss_fn.loss_and_grad(scores, y)
        model.backward(dscores)
        reg_loss = self.regularizer.add_penalty(model.params)
        self.optimizer.step_from_table(model.params, self.table, self.counters)
        if self.regularizer.has_max_norm:
            self.regularizer.project(model.params)
        kernels.record_losses(_device_scalar(data_loss, xp), _device_scalar(reg_loss, xp, self.zero), self.losses,
                              self.counters)

    def close(self) -> None:
        """Wait for the stream's work, drop the graph and its pool, and give dropout back its generator."""
        self.stream.synchronize()
        self.graph = self.pool = None
        self.model.set_dropout_counter(0, None)


def _device_scalar(value: Any, xp: Any, zero: Any = None) -> Any:
    """A loss value as a device array of one element (a host number is uploaded: possible only uncaptured)."""
    if is_device_array(value):
        return value.reshape(1)
    if zero is not None and value == 0:
        return zero
    return xp.asarray([float(value)])
