"""Weight init schemes, by name, each with the variance it gives.

Conventions: a weight matrix is `(fan_in, fan_out)`: row i holds input i's outgoing weights,
column j output neuron j's incoming weights. Each scheme draws with a function
`(fan_in, fan_out, rng, *, scale, k) -> W` (float32, options it does not use ignored) and states
its expected per-entry variance `(fan_in, fan_out, *, scale, k) -> float`. All draws come from
`rng` (the experiment's `init` stream).

| name         | W                                                    | variance            |
|--------------|------------------------------------------------------|---------------------|
| `zeros`      | all zero (every hidden unit stays identical)         | 0                   |
| `small`      | `scale * randn` (scale 0.01 by default)              | scale**2            |
| `small_uniform` | uniform on `[-sqrt(3) scale, sqrt(3) scale]`      | scale**2            |
| `calibrated` | `randn / sqrt(fan_in)`                               | 1 / fan_in          |
| `xavier`     | `randn * sqrt(2 / (fan_in + fan_out))`               | 2/(fan_in+fan_out)  |
| `he`         | `randn * sqrt(2 / fan_in)`                           | 2 / fan_in          |
| `sparse`     | zero except exactly k entries per column, `scale * randn` | k scale**2 / fan_in |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DEFAULT_SCALE = 0.01
"""Standard deviation of the `small` and `sparse` gaussians."""
DEFAULT_SPARSE_K = 10
"""Nonzero incoming weights per output neuron for `sparse`."""


class InitOptionError(ValueError):
    """An init option that does not fit the layer; `option` is its config key (`sparse_k`, `init_scale`)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def _gaussian(fan_in: int, fan_out: int, rng: np.random.Generator, std: float) -> np.ndarray:
    W = rng.standard_normal((fan_in, fan_out), dtype=np.float32)
    W *= np.float32(std)
    return W


def zeros(fan_in: int, fan_out: int, rng: np.random.Generator, **_: float) -> np.ndarray:
    """All zeros: the symmetry pitfall (every unit of a layer computes and learns the same thing)."""
    return np.zeros((fan_in, fan_out), dtype=np.float32)


def small(fan_in: int, fan_out: int, rng: np.random.Generator, *, scale: float = DEFAULT_SCALE,
          **_: float) -> np.ndarray:
    """`scale * randn`: small random numbers, variance scale**2 whatever the fan-in."""
    return _gaussian(fan_in, fan_out, rng, scale)


def small_uniform(fan_in: int, fan_out: int, rng: np.random.Generator, *, scale: float = DEFAULT_SCALE,
                  **_: float) -> np.ndarray:
    """Uniform on `[-sqrt(3) scale, sqrt(3) scale]`: small random numbers of `small`'s variance (scale**2)
    from a uniform instead of a gaussian distribution."""
    bound = np.float32(np.sqrt(3.0) * scale)
    W = rng.random((fan_in, fan_out), dtype=np.float32)
    W *= np.float32(2.0) * bound
    W -= bound
    return W


def calibrated(fan_in: int, fan_out: int, rng: np.random.Generator, **_: float) -> np.ndarray:
    """`randn / sqrt(fan_in)`: keeps the output variance of a linear unit equal to its input's."""
    return _gaussian(fan_in, fan_out, rng, 1.0 / np.sqrt(fan_in))


def xavier(fan_in: int, fan_out: int, rng: np.random.Generator, **_: float) -> np.ndarray:
    """Glorot and Bengio (2010): `randn * sqrt(2 / (fan_in + fan_out))`."""
    return _gaussian(fan_in, fan_out, rng, np.sqrt(2.0 / (fan_in + fan_out)))


def he(fan_in: int, fan_out: int, rng: np.random.Generator, **_: float) -> np.ndarray:
    """He et al. (2015): `randn * sqrt(2 / fan_in)`, variance 2/fan_in, for ReLU networks."""
    return _gaussian(fan_in, fan_out, rng, np.sqrt(2.0 / fan_in))


def sparse(fan_in: int, fan_out: int, rng: np.random.Generator, *, scale: float = DEFAULT_SCALE,
           k: int = DEFAULT_SPARSE_K, **_: float) -> np.ndarray:
    """Each output neuron (column) gets exactly `k` nonzero incoming weights, `scale * randn`.

    The k rows of each column are drawn without replacement; `k` must be in [1, fan_in].
    """
    if not 1 <= k <= fan_in:
        raise InitOptionError("sparse_k", f"the layer has only {fan_in} inputs, so k must be in 1..{fan_in}, got {k}")
    W = np.zeros((fan_in, fan_out), dtype=np.float32)
    if k == fan_in:
        rows = np.broadcast_to(np.arange(fan_in)[:, None], (fan_in, fan_out))
    else:
        rows = np.argpartition(rng.random((fan_in, fan_out), dtype=np.float32), k - 1, axis=0)[:k]
    values = rng.standard_normal((k, fan_out), dtype=np.float32) * np.float32(scale)
    np.put_along_axis(W, rows, values, axis=0)
    return W


@dataclass(frozen=True)
class InitScheme:
    """A registered scheme: `draw(fan_in, fan_out, rng, *, scale, k) -> W`, the expected variance of
    each entry `variance(fan_in, fan_out, *, scale, k)` (what the property tests check), and other
    names the scheme goes by (`aliases`: messages suggest the scheme for them)."""

    draw: Callable[..., np.ndarray]
    variance: Callable[..., float]
    aliases: tuple[str, ...] = ()


INIT_SCHEMES: dict[str, InitScheme] = {
    "zeros": InitScheme(zeros, lambda fan_in, fan_out, **_: 0.0),
    "small": InitScheme(small, lambda fan_in, fan_out, *, scale, **_: scale ** 2),
    "small_uniform": InitScheme(small_uniform, lambda fan_in, fan_out, *, scale, **_: scale ** 2),
    "calibrated": InitScheme(calibrated, lambda fan_in, fan_out, **_: 1.0 / fan_in, ("lecun", "lecun_normal")),
    "xavier": InitScheme(xavier, lambda fan_in, fan_out, **_: 2.0 / (fan_in + fan_out), ("glorot", "glorot_normal")),
    "he": InitScheme(he, lambda fan_in, fan_out, **_: 2.0 / fan_in, ("kaiming", "kaiming_normal", "msra")),
    "sparse": InitScheme(sparse, lambda fan_in, fan_out, *, scale, k, **_: k * scale ** 2 / fan_in),
}
"""Registry: config name -> `InitScheme`."""


def init_weights(name: str, fan_in: int, fan_out: int, rng: np.random.Generator, *,
                 scale: float = DEFAULT_SCALE, k: int = DEFAULT_SPARSE_K) -> np.ndarray:
    """W: (fan_in, fan_out) float32 from the scheme `name`; unknown names list the valid ones.

    Raises `InitOptionError` when an option does not fit the layer (sparse k > fan_in).
    """
    if name not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {name!r}; allowed: {', '.join(INIT_SCHEMES)}")
    return INIT_SCHEMES[name].draw(fan_in, fan_out, rng, scale=scale, k=k)
