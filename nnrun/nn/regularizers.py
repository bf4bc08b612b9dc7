"""Weight penalties with their gradients, and the max-norm projection applied after each update.

Conventions (per weight matrix W: (fan_in, fan_out)):
- `l2`: adds `0.5 * l2 * sum(W**2)`, gradient `l2 * W` (what SGD's `weight_decay = l2` does).
- `l1`: adds `l1 * sum(|W|)`, gradient `l1 * sign(W)` (the subgradient 0 at W = 0).
- both together: elastic net.
- `max_norm`: not a penalty but a constraint: after every update each output neuron's incoming
  weight vector (a column of W) is scaled down to norm <= c; columns already inside are untouched.
`PENALTIES` is the registry of penalties: each name is also the config key of its strength
(`regularization.l2`, `model.layers.0.l1`). Biases are penalized only with `regularize_bias`,
BatchNorm gamma and beta only with `regularize_bn` (then with their layer's strengths). Max-norm
applies to weight matrices alone. Every strength can be overridden per Linear layer (index 0 =
first hidden layer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from nnrun import cpu_kernels
from nnrun.backend import is_device_array, loss_scalar, xp_of
from nnrun.nn.layers import Parameter


def l2_penalty(w: np.ndarray, strength: float) -> tuple[float, np.ndarray]:
    """L2 strength: adds 0.5 * l2 * sum(W**2) per weight matrix (gradient l2 * W).

    Returns `(0.5 * strength * sum(w**2), strength * w)`; the gradient has w's shape and dtype.
    """
    return l2_value(w, strength), w * w.dtype.type(strength)


def l2_value(w: np.ndarray, strength: float) -> float:
    """`0.5 * strength * sum(w**2)`, the L2 penalty alone."""
    # On a GPU a reduction kernel (vdot may go through cuBLAS, whose host-side result would stop a CUDA graph).
    total = (w * w).sum() if is_device_array(w) else loss_scalar(xp_of(w).vdot(w, w))
    return 0.5 * strength * total


def l1_penalty(w: np.ndarray, strength: float) -> tuple[float, np.ndarray]:
    """L1 strength: adds l1 * sum(|W|) per weight matrix (with l2: elastic net).

    Returns `(strength * sum(|w|), strength * sign(w))`; the gradient has w's shape and dtype.
    """
    xp = xp_of(w)
    return strength * loss_scalar(xp.abs(w).sum(dtype=xp.float64)), xp.sign(w) * w.dtype.type(strength)


PENALTIES: dict[str, Callable[[np.ndarray, float], tuple[float, np.ndarray]]] = {
    "l2": l2_penalty,
    "l1": l1_penalty,
}
"""Registry: strength name (the config key) -> penalty function `(w, strength) -> (penalty, gradient)`.
The first line of each function's docstring describes the key in the config schema."""


def max_norm_project(W: np.ndarray, c: float) -> None:
    """Scale, in place, each column of W: (fan_in, fan_out) whose L2 norm exceeds `c` down to norm c.

    Columns inside the bound are multiplied by exactly 1 (`c / max(norm, c)`), which leaves them unchanged
    without a data-dependent branch (a GPU would have to stop and report one); on the CPU a matrix with no
    column outside the bound is left alone without that pass."""
    xp = xp_of(W)
    norms = xp.sqrt(xp.einsum("ij,ij->j", W, W))
    if not is_device_array(W) and not (norms > c).any():
        return
    W *= c / xp.maximum(norms, c)


@dataclass(frozen=True)
class Strengths:
    """The regularization of one Linear layer (and of its bias and BatchNorm, when switched on):
    the strength of each penalty by `PENALTIES` name (missing or 0: off) and the max-norm bound."""

    penalties: Mapping[str, float] = field(default_factory=dict)
    max_norm: float | None = None

    def strength(self, name: str) -> float:
        """The strength of penalty `name` (0 when off)."""
        return self.penalties.get(name, 0.0)


class Regularizer:
    """Penalties and max-norm for a network, with per-layer strengths.

    `default` applies to every layer not in `per_layer`; `per_layer` maps a Linear layer index
    to its own `Strengths`.
    """

    def __init__(self, default: Strengths, per_layer: dict[int, Strengths] | None = None,
                 regularize_bias: bool = False, regularize_bn: bool = False) -> None:
        self.default = default
        self.per_layer = dict(per_layer or {})
        self.penalized_kinds = {"weight"} | ({"bias"} if regularize_bias else set()) | (
            {"gamma", "beta"} if regularize_bn else set())

    def strengths(self, layer: int) -> Strengths:
        """The strengths of Linear layer `layer`."""
        return self.per_layer.get(layer, self.default)

    def _penalized(self, params: Iterable[Parameter]) -> Iterable[tuple[Parameter, list[tuple[str, float]]]]:
        """Each penalized parameter with its (penalty name, strength) pairs, in `PENALTIES` order."""
        for p in params:
            if p.kind in self.penalized_kinds:
                s = self.strengths(p.layer)
                active = [(name, s.strength(name)) for name in PENALTIES if s.strength(name)]
                if active:
                    yield p, active

    def add_penalty(self, params: Iterable[Parameter]) -> float:
        """Add each penalty's gradient into `.grad` (after backward); return the total penalty. L2's gradient goes in
        through one compiled pass where the kernels serve (the same bytes as `grad += strength * W`, without
        the temporary matrix and its extra pass)."""
        total = 0.0
        for p, active in self._penalized(params):
            for name, strength in active:
                if name == "l2" and cpu_kernels.usable(p.grad, p.value):
                    total += l2_value(p.value, strength)
                    cpu_kernels.add_scaled(p.grad, p.value, strength)
                    continue
                value, grad = PENALTIES[name](p.value, strength)
                total += value
                p.grad += grad
        return total

    def penalty(self, params: Iterable[Parameter]) -> float:
        """The total penalty alone (gradients untouched)."""
        return sum(PENALTIES[name](p.value, strength)[0]
                   for p, active in self._penalized(params) for name, strength in active)

    def project(self, params: Iterable[Parameter]) -> None:
        """Apply max-norm to every weight matrix whose layer has one (call after each update)."""
        for p in params:
            if p.kind == "weight":
                c = self.strengths(p.layer).max_norm
                if c is not None:
                    max_norm_project(p.value, c)

    @property
    def has_max_norm(self) -> bool:
        """Whether any layer has a max-norm constraint (so the loop can skip `project`)."""
        return self.default.max_norm is not None or any(s.max_norm is not None for s in self.per_layer.values())

    def l1_weights(self, params: Iterable[Parameter]) -> list[Parameter]:
        """The parameters carrying an L1 penalty (gradient checks avoid |w| < h there: a kink at 0)."""
        return [p for p, active in self._penalized(params) if any(name == "l1" for name, _ in active)]
