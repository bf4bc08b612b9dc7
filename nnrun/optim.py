"""Update rules. Each updates parameters in place from their `.grad`.

`Optimizer.step(params, lr)` applies one update with learning rate `lr` (the schedule lives in
the training loop); per-parameter state (velocity, moments) is kept by parameter name.
"""

from __future__ import annotations

import numpy as np

from nnrun.nn.layers import Parameter


class SGD:
    """Plain gradient descent: `w -= lr * dw`."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def step(self, params: list[Parameter], lr: float) -> None:
        """Update every parameter in place."""
        for p in params:
            p.value -= np.float32(lr) * p.grad


class Momentum:
    """Momentum SGD as in the notes: `v = mu * v - lr * dw; w += v`."""

    def __init__(self, cfg) -> None:
        self.mu = np.float32(cfg.momentum)
        self.velocity: dict[str, np.ndarray] = {}

    def step(self, params: list[Parameter], lr: float) -> None:
        """Update every parameter in place."""
        lr32 = np.float32(lr)
        for p in params:
            v = self.velocity.get(p.name)
            if v is None:
                v = self.velocity[p.name] = np.zeros_like(p.value)
            v *= self.mu
            v -= lr32 * p.grad
            p.value += v


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
}
"""Registry: config name -> optimizer class (constructed with the `OptimConfig`)."""
