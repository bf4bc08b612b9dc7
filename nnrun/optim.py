"""Update rules and learning-rate schedules. Each rule updates parameters in place from `.grad`.

`Optimizer.step(params, lr)` applies one update with learning rate `lr`; a schedule gives `lr`
per epoch (`schedule(epoch, epochs, lr=..., ...)`) and the training loop passes it in.
Per-parameter state (velocity, moments) is kept by parameter name, in the parameter's dtype.
Constructor arguments of the optimizers and keyword options of the schedules are named like the
optim config keys (`momentum`, `beta1`, `lr_decay`, ...): the experiment passes each the ones it names.

Update rules (g = gradient, t = step count starting at 1):
- `sgd`:       `w -= lr * g`
- `momentum`:  `v = mu * v - lr * g; w += v` (the notes' form). PyTorch keeps `b = mu * b + g;
  w -= lr * b`: identical while lr is constant; when a schedule changes lr, here the velocity
  keeps the old lr's steps, in PyTorch the whole buffer is rescaled by the new lr.
- `nesterov`:  `v_prev = v; v = mu * v - lr * g; w += -mu * v_prev + (1 + mu) * v` (the notes'
  form), which equals PyTorch's `nesterov=True` (`w -= lr * (g + mu * b)`) at constant lr.
- `adam`:      `m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g**2;
  w -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)` (PyTorch's Adam, same eps place).
- `rmsprop`:   `c = decay * c + (1 - decay) * g**2; w -= lr * g / (sqrt(c) + eps)`
  (PyTorch's RMSprop with `alpha = decay`).
- `adamw`, `sgdw`: Adam and momentum with decoupled weight decay (Loshchilov and Hutter):
  each step first shrinks every weight matrix, `w -= lr * weight_decay * w` (biases, BatchNorm
  gamma and beta untouched), then takes the rule's step on g alone. PyTorch's AdamW, and SGD with
  the same shrink in front. An L2 penalty instead adds `l2 * w` to g, which Adam then divides by
  its running root of g**2: weights with large gradients are barely decayed. Decoupled, every
  weight shrinks by the same factor whatever its gradient history; for plain momentum SGD at a
  constant rate the two differ only in that the L2 term also passes through the velocity.

Schedules (epoch e = 0, 1, ..., E - 1 of E epochs, base rate lr):
- `constant`:    lr
- `step`:        `lr * lr_decay ** floor(e / step_epochs)` (PyTorch StepLR)
- `exponential`: `lr * lr_decay ** e` (PyTorch ExponentialLR)
- `cosine`:      `min_lr + (lr - min_lr) * (1 + cos(pi * e / E)) / 2` (PyTorch CosineAnnealingLR, T_max = E)
- `one_cycle`:   from `lr / div_factor` up to `lr` by epoch `pct_start * E - 1`, then down to
  `lr / (div_factor * final_div_factor)` at epoch E - 1, each half a cosine (PyTorch OneCycleLR with
  `total_steps = E`, stepped once per epoch, cosine annealing, two phases).

`with_warmup(schedule, w)` puts a linear warmup of w epochs in front of any of them: epoch e < w
runs at `first * (e + 1) / (w + 1)`, with `first` the schedule's first rate, and the schedule then
runs over the remaining E - w epochs as if they were all (its epoch e - w of E - w).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from nnrun import cpu_kernels
from nnrun.backend import host_copy, is_device_array, to_device, xp_of
from nnrun.nn import kernels
from nnrun.nn.layers import Parameter
from nnrun.parallel import run_blocks


class Optimizer:
    """Base class: per-parameter state arrays created lazily, keyed by parameter name.

    `state_dict()` / `load_state_dict()` save and restore that state (and any step counter named in
    `counters`), so that training continued from a checkpoint takes exactly the steps it would have.
    """

    slots: tuple[str, ...] = ()
    """The per-parameter state arrays of the rule (each the size of its parameter)."""
    counters: tuple[str, ...] = ()
    """Integer attributes that are part of the state: step counts, advanced once per step (Adam's `t`)."""
    fused: str | None = None
    """The rule's one-launch GPU kernel (a `nnrun.nn.kernels.UPDATES` name), taking `fused_scalars(lr)`."""
    weight_decay: float = 0.0
    """Decoupled weight decay applied before each step (`decay_weights`); set by `adamw` and `sgdw`."""

    def __init__(self) -> None:
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def _state(self, p: Parameter, *names: str) -> list[np.ndarray]:
        slot = self.state.get(p.name)
        xp = xp_of(p.value)
        if slot is None:
            slot = self.state[p.name] = {name: xp.zeros_like(p.value) for name in names}
        elif is_device_array(p.value) and not all(is_device_array(a) for a in slot.values()):
            slot.update({name: to_device(a, xp) for name, a in slot.items()})  # loaded from a checkpoint
        return [slot[name] for name in names]

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of the state: `PARAM/SLOT` -> array for each parameter's slot, `#COUNTER` -> 0-d int64."""
        arrays = {f"{name}/{slot}": host_copy(value) for name, slots in self.state.items()
                  for slot, value in slots.items()}
        arrays.update({f"#{counter}": np.array(getattr(self, counter), dtype=np.int64) for counter in self.counters})
        return arrays

    def load_state_dict(self, arrays: dict[str, np.ndarray], params: list[Parameter] | None = None) -> None:
        """Restore the state `state_dict` returned (arrays are copied; on a GPU they move there at the next step).

        Only the state the rule declares is restored: its `slots` per parameter and its `counters` (0-d
        integers >= 0); any other key (`#momentum`, a slot of another rule) is a `ValueError` naming it, and
        nothing is changed. With `params` see `check_state`.
        """
        self.check_state(arrays, params)
        counters = {f"#{c}": c for c in self.counters}
        self.state = {}
        for key, value in arrays.items():
            if key in counters:
                setattr(self, counters[key], int(value))
            else:
                name, _, slot = key.rpartition("/")
                self.state.setdefault(name, {})[slot] = np.array(value, copy=True)

    def check_state(self, arrays: dict[str, np.ndarray], params: list[Parameter] | None = None) -> None:
        """Refuse (`ValueError` naming the key) state this rule does not keep: keys other than its `slots` per
        parameter and its `counters`, counters that are not 0-d integers >= 0, slots that are not finite floats.
        With `params` (the model's parameters, every one of which has taken a step) the keys must be exactly
        each parameter's slots and the counters, each slot of its parameter's shape and dtype."""
        counters = {f"#{c}": c for c in self.counters}
        unknown = sorted(k for k in arrays if k not in counters and (k.startswith("#") or "/" not in k
                                                                    or k.rpartition("/")[2] not in self.slots))
        if unknown:
            raise ValueError(f"{type(self).__name__} keeps no state {', '.join(unknown[:5])}"
                             f"{' ...' if len(unknown) > 5 else ''} (its state: "
                             f"{', '.join([f'PARAM/{s}' for s in self.slots] + list(counters)) or 'none'})")
        expected = dict.fromkeys(counters)
        if params is not None:
            expected.update({f"{p.name}/{slot}": p for p in params for slot in self.slots})
        missing = sorted(set(expected) - set(arrays))
        if missing or (params is not None and len(arrays) != len(expected)):
            extra = sorted(set(arrays) - set(expected))
            raise ValueError(f"optimizer state {'lacks ' + ', '.join(missing[:5]) if missing else ''}"
                             f"{' and ' if missing and extra else ''}"
                             f"{'has ' + ', '.join(extra[:5]) + ' for no parameter of the model' if extra else ''}")
        for key, value in arrays.items():
            value = np.asarray(value)
            if key in counters:
                if value.shape != () or value.dtype.kind not in "iu" or int(value) < 0:
                    raise ValueError(f"optimizer counter {key} must be a whole number >= 0, got {value.dtype} "
                                     f"{value.shape}")
                continue
            p = expected.get(key)
            if p is not None and (value.shape != p.value.shape or value.dtype != p.value.dtype):
                raise ValueError(f"optimizer state {key} is {value.dtype} {value.shape}; its parameter is "
                                 f"{p.value.dtype} {p.value.shape}")
            if value.dtype.kind != "f" or not np.isfinite(value).all():
                raise ValueError(f"optimizer state {key} must hold finite floats")

    def advance(self) -> None:
        """Count one step (Adam's `t`); `step` and `step_scalars` call it first."""

    def step_scalars(self, lr: float) -> tuple[float, ...]:
        """Count one step and return its scalars as a GPU step reads them from a device table (`step_from_table`):
        the fused kernel's `fused_scalars(lr)`, then the decoupled decay factor `1 - lr * weight_decay`."""
        self.advance()
        return (*self.fused_scalars(lr), 1 - lr * self.weight_decay)

    def step_from_table(self, params: list[Parameter], table: np.ndarray, counters: np.ndarray) -> None:
        """The GPU update of a step whose scalars (`step_scalars`, one row per step) are in the device `table`,
        row `counters[0]`: the decay, then the fused kernel, each reading the table (a CUDA graph replays this
        with the table's values of the step it runs). Adam's count advanced when the table was filled."""
        if self.weight_decay:
            for p in params:
                if p.kind == "weight":
                    kernels.decay_from_table(p.value, table, counters, table.shape[1] - 1)
        for p in params:
            kernels.update_from_table(self.fused, p.value, p.grad, tuple(self._state(p, *self.slots)), table,
                                      counters)

    def step(self, params: list[Parameter], lr: float) -> None:
        """Update every parameter in place: `update` on blocks of rows of each, spread over the element-wise
        thread pool (`nnrun.parallel`); every element sees the same operations as a whole-array update. On a GPU
        the rule's fused kernel (`fused`) updates each parameter in one launch. A `weight_decay` shrinks the
        weight matrices first."""
        self.advance()
        decay_weights(params, lr, self.weight_decay)
        if self.fused is not None and params and is_device_array(params[0].value):
            scalars = self.fused_scalars(lr)
            for p in params:
                kernels.update(self.fused, p.value, p.grad, tuple(self._state(p, *self.slots)), scalars)
            return
        update = functools.partial(self.update, lr=lr)
        blocks, scalars = [], None
        for p in params:
            arrays = (p.value, p.grad, *self._state(p, *self.slots))
            if self.fused is not None and cpu_kernels.usable(*arrays):
                scalars = scalars or self.fused_scalars(lr)  # once per step, not per parameter
                cpu_kernels.update(self.fused, p.value, p.grad, arrays[2:], scalars)
            else:
                blocks.append((update, arrays))
        run_blocks(blocks)

    def update(self, w: np.ndarray, g: np.ndarray, *slots: np.ndarray, lr: float) -> None:
        """The rule on one block: weights `w`, gradient `g` (scratch space: the next backward refills it) and the
        rule's state arrays `slots`, all the same shape, updated in place with learning rate `lr`."""
        raise NotImplementedError

    def fused_scalars(self, lr: float) -> tuple[float, ...]:
        """The scalar arguments of the `fused` kernel for learning rate `lr` (see `nnrun.nn.kernels.UPDATES`)."""
        raise NotImplementedError


class SGD(Optimizer):
    """Plain gradient descent: `w -= lr * g`."""

    fused = "sgd"

    def fused_scalars(self, lr: float) -> tuple[float, ...]:
        return (lr,)

    def update(self, w: np.ndarray, g: np.ndarray, *slots: np.ndarray, lr: float) -> None:
        g *= -w.dtype.type(lr)
        w += g


class Momentum(Optimizer):
    """Momentum SGD as in the notes: `v = mu * v - lr * g; w += v`."""

    slots = ("velocity",)
    fused = "momentum"

    def __init__(self, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum

    def fused_scalars(self, lr: float) -> tuple[float, ...]:
        return (lr, self.momentum)

    def update(self, w: np.ndarray, g: np.ndarray, v: np.ndarray, *, lr: float) -> None:
        v *= w.dtype.type(self.momentum)
        g *= w.dtype.type(lr)
        v -= g
        w += v


class Nesterov(Optimizer):
    """Nesterov momentum as in the notes: `v_prev = v; v = mu v - lr g; w += -mu v_prev + (1 + mu) v`.

    Written as `w += mu * v_new - lr * g`, which is the same update without keeping v_prev.
    """

    slots = ("velocity",)
    fused = "nesterov"

    def __init__(self, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum

    def fused_scalars(self, lr: float) -> tuple[float, ...]:
        return (lr, self.momentum)

    def update(self, w: np.ndarray, g: np.ndarray, v: np.ndarray, *, lr: float) -> None:
        mu = w.dtype.type(self.momentum)
        g *= w.dtype.type(lr)
        v *= mu
        v -= g
        w -= g
        w += mu * v


class Adam(Optimizer):
    """Adam (Kingma and Ba) with bias correction; `beta1`, `beta2`, `eps` from the config."""

    slots = ("m", "v")
    counters = ("t",)
    fused = "adam"

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        super().__init__()
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0

    def advance(self) -> None:
        self.t += 1

    def fused_scalars(self, lr: float) -> tuple[float, ...]:
        correction1 = 1 - self.beta1 ** self.t
        correction2 = 1 - self.beta2 ** self.t
        return (self.beta1, 1 - self.beta1, self.beta2, 1 - self.beta2, 1 / correction2, lr / correction1, self.eps)

    def update(self, w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, *, lr: float) -> None:
        dt = w.dtype.type
        b1, b2 = self.beta1, self.beta2
        correction1 = 1 - b1 ** self.t
        correction2 = 1 - b2 ** self.t
        m *= dt(b1)
        m += dt(1 - b1) * g
        v *= dt(b2)
        g *= g
        g *= dt(1 - b2)
        v += g
        # g is spent: reuse it for the denominator sqrt(v / c2) + eps.
        xp = xp_of(w)
        xp.multiply(v, dt(1 / correction2), out=g)
        xp.sqrt(g, out=g)
        g += dt(self.eps)
        xp.divide(m, g, out=g)
        g *= dt(lr / correction1)
        w -= g


class RMSprop(Optimizer):
    """RMSprop: `c = decay * c + (1 - decay) * g**2; w -= lr * g / (sqrt(c) + eps)`."""

    slots = ("cache",)
    fused = "rmsprop"

    def __init__(self, decay_rate: float = 0.99, eps: float = 1e-8) -> None:
        super().__init__()
        self.decay_rate, self.eps = decay_rate, eps

    def fused_scalars(self, lr: float) -> tuple[float, ...]:
        return (lr, self.decay_rate, 1 - self.decay_rate, self.eps)

    def update(self, w: np.ndarray, g: np.ndarray, c: np.ndarray, *, lr: float) -> None:
        dt = w.dtype.type
        c *= dt(self.decay_rate)
        c += dt(1 - self.decay_rate) * (g * g)
        denom = xp_of(w).sqrt(c)
        denom += dt(self.eps)
        g *= dt(lr)
        g /= denom
        w -= g


def decay_weights(params: list[Parameter], lr: float, weight_decay: float) -> None:
    """Decoupled weight decay: `w *= 1 - lr * weight_decay` for each weight matrix (kind 'weight') in place."""
    if weight_decay:
        for p in params:
            if p.kind == "weight":
                p.value *= p.value.dtype.type(1 - lr * weight_decay)


class AdamW(Adam):
    """Adam with decoupled weight decay: `w -= lr * weight_decay * w`, then Adam's step (PyTorch's AdamW)."""

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(beta1, beta2, eps)
        self.weight_decay = weight_decay


class SGDW(Momentum):
    """Momentum SGD with decoupled weight decay: `w -= lr * weight_decay * w`, then `v = mu v - lr g; w += v`."""

    def __init__(self, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__(momentum)
        self.weight_decay = weight_decay


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adam": Adam,
    "rmsprop": RMSprop,
    "adamw": AdamW,
    "sgdw": SGDW,
}
"""Registry: config name -> optimizer class (constructed with the optim config keys its `__init__` names).

Note: `step` uses each `.grad` as scratch space (it is recomputed by the next backward pass).
"""


def constant(epoch: int, epochs: int, *, lr: float) -> float:
    """`lr` every epoch."""
    return lr


def step(epoch: int, epochs: int, *, lr: float, lr_decay: float, step_epochs: int) -> float:
    """`lr * lr_decay ** floor(epoch / step_epochs)`."""
    return lr * lr_decay ** (epoch // step_epochs)


def exponential(epoch: int, epochs: int, *, lr: float, lr_decay: float) -> float:
    """`lr * lr_decay ** epoch`."""
    return lr * lr_decay ** epoch


def cosine(epoch: int, epochs: int, *, lr: float, min_lr: float) -> float:
    """`min_lr + (lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2`."""
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def one_cycle(epoch: int, epochs: int, *, lr: float, pct_start: float, div_factor: float,
              final_div_factor: float) -> float:
    """`lr / div_factor` rising to `lr` at epoch `pct_start * epochs - 1`, then falling to
    `lr / (div_factor * final_div_factor)` at the last epoch; cosine halves (PyTorch OneCycleLR, one step per epoch)."""
    initial, peak_epoch = lr / div_factor, pct_start * epochs - 1
    # (first epoch, last epoch, rate at the first, rate at the last) of each phase
    phases = ((0.0, peak_epoch, initial, lr), (peak_epoch, epochs - 1.0, lr, initial / final_div_factor))
    for i, (first, last, begin, end) in enumerate(phases):
        if epoch <= last or i == len(phases) - 1:
            fraction = (epoch - first) / (last - first) if last > first else 1.0
            return end + (begin - end) * (1 + math.cos(math.pi * fraction)) / 2
    raise AssertionError("unreachable: the last phase always returns")


SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": constant,
    "step": step,
    "exponential": exponential,
    "cosine": cosine,
    "one_cycle": one_cycle,
}
"""Registry: config name -> schedule `(epoch from 0, total epochs, *, lr, ...options) -> lr`."""

Schedule = Callable[[int, int], float]
"""A schedule with its options bound: `(epoch from 0, total epochs) -> learning rate`."""


def with_warmup(schedule: Schedule, warmup_epochs: int) -> Schedule:
    """`schedule` behind a linear warmup of `warmup_epochs` epochs: epoch e < w runs at
    `first * (e + 1) / (w + 1)` (`first`: the schedule's first rate), then the schedule runs over the
    remaining epochs, its epoch e - w of epochs - w. Needs epochs > w."""
    if warmup_epochs == 0:
        return schedule

    def warmed(epoch: int, epochs: int) -> float:
        if epoch < warmup_epochs:
            return schedule(0, epochs - warmup_epochs) * (epoch + 1) / (warmup_epochs + 1)
        return schedule(epoch - warmup_epochs, epochs - warmup_epochs)

    return warmed
