"""Update rules and learning-rate schedules. Each rule updates parameters in place from `.grad`.

`Optimizer.step(params, lr)` applies one update with learning rate `lr`; the schedule gives
`lr` per epoch (`learning_rate(cfg, epoch, epochs)`) and the training loop passes it in.
Per-parameter state (velocity, moments) is kept by parameter name, in the parameter's dtype.

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

Schedules (epoch e = 0, 1, ..., E - 1 of E epochs, base rate lr):
- `constant`:    lr
- `step`:        `lr * lr_decay ** floor(e / step_epochs)` (PyTorch StepLR)
- `exponential`: `lr * lr_decay ** e` (PyTorch ExponentialLR)
- `cosine`:      `min_lr + (lr - min_lr) * (1 + cos(pi * e / E)) / 2` (PyTorch CosineAnnealingLR, T_max = E)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from nnrun.nn.layers import Parameter


class Optimizer:
    """Base class: per-parameter state arrays created lazily, keyed by parameter name."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def _state(self, p: Parameter, *names: str) -> list[np.ndarray]:
        slot = self.state.get(p.name)
        if slot is None:
            slot = self.state[p.name] = {name: np.zeros_like(p.value) for name in names}
        return [slot[name] for name in names]

    def step(self, params: list[Parameter], lr: float) -> None:
        """Update every parameter in place."""
        raise NotImplementedError


class SGD(Optimizer):
    """Plain gradient descent: `w -= lr * g`."""

    def step(self, params: list[Parameter], lr: float) -> None:
        for p in params:
            p.grad *= -p.value.dtype.type(lr)
            p.value += p.grad


class Momentum(Optimizer):
    """Momentum SGD as in the notes: `v = mu * v - lr * g; w += v`."""

    def step(self, params: list[Parameter], lr: float) -> None:
        for p in params:
            (v,) = self._state(p, "velocity")
            dt = p.value.dtype.type
            v *= dt(self.cfg.momentum)
            p.grad *= dt(lr)
            v -= p.grad
            p.value += v


class Nesterov(Optimizer):
    """Nesterov momentum as in the notes: `v_prev = v; v = mu v - lr g; w += -mu v_prev + (1 + mu) v`.

    Written as `w += mu * v_new - lr * g`, which is the same update without keeping v_prev.
    """

    def step(self, params: list[Parameter], lr: float) -> None:
        for p in params:
            (v,) = self._state(p, "velocity")
            dt = p.value.dtype.type
            mu = dt(self.cfg.momentum)
            p.grad *= dt(lr)
            v *= mu
            v -= p.grad
            p.value -= p.grad
            p.value += mu * v


class Adam(Optimizer):
    """Adam (Kingma and Ba) with bias correction; `beta1`, `beta2`, `eps` from the config."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.t = 0

    def step(self, params: list[Parameter], lr: float) -> None:
        self.t += 1
        b1, b2, eps = self.cfg.beta1, self.cfg.beta2, self.cfg.eps
        correction1 = 1 - b1 ** self.t
        correction2 = 1 - b2 ** self.t
        for p in params:
            m, v = self._state(p, "m", "v")
            dt = p.value.dtype.type
            g = p.grad
            m *= dt(b1)
            m += dt(1 - b1) * g
            v *= dt(b2)
            g *= g
            g *= dt(1 - b2)
            v += g
            # g is spent: reuse it for the denominator sqrt(v / c2) + eps.
            np.multiply(v, dt(1 / correction2), out=g)
            np.sqrt(g, out=g)
            g += dt(eps)
            np.divide(m, g, out=g)
            g *= dt(lr / correction1)
            p.value -= g


class RMSprop(Optimizer):
    """RMSprop: `c = decay * c + (1 - decay) * g**2; w -= lr * g / (sqrt(c) + eps)`."""

    def step(self, params: list[Parameter], lr: float) -> None:
        decay, eps = self.cfg.decay_rate, self.cfg.eps
        for p in params:
            (c,) = self._state(p, "cache")
            dt = p.value.dtype.type
            g = p.grad
            c *= dt(decay)
            c += dt(1 - decay) * (g * g)
            denom = np.sqrt(c)
            denom += dt(eps)
            g *= dt(lr)
            g /= denom
            p.value -= g


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adam": Adam,
    "rmsprop": RMSprop,
}
"""Registry: config name -> optimizer class (constructed with the `OptimConfig`).

Note: `step` uses each `.grad` as scratch space (it is recomputed by the next backward pass).
"""


def constant(cfg, epoch: int, epochs: int) -> float:
    """`lr` every epoch."""
    return cfg.lr


def step(cfg, epoch: int, epochs: int) -> float:
    """`lr * lr_decay ** floor(epoch / step_epochs)`."""
    return cfg.lr * cfg.lr_decay ** (epoch // cfg.step_epochs)


def exponential(cfg, epoch: int, epochs: int) -> float:
    """`lr * lr_decay ** epoch`."""
    return cfg.lr * cfg.lr_decay ** epoch


def cosine(cfg, epoch: int, epochs: int) -> float:
    """`min_lr + (lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2`."""
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * epoch / epochs)) / 2


SCHEDULES: dict[str, Callable[..., float]] = {
    "constant": constant,
    "step": step,
    "exponential": exponential,
    "cosine": cosine,
}
"""Registry: config name -> schedule `(OptimConfig, epoch from 0, total epochs) -> lr`."""


def learning_rate(cfg, epoch: int, epochs: int) -> float:
    """The learning rate of `epoch` (0-based) out of `epochs` under `cfg.schedule` (an `OptimConfig`)."""
    return SCHEDULES[cfg.schedule](cfg, epoch, epochs)
