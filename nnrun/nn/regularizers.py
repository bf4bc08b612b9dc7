"""Weight penalties with their gradients, and the max-norm projection applied after each update.

Conventions (per weight matrix W: (fan_in, fan_out)):
- `l2`: adds `0.5 * l2 * sum(W**2)`, gradient `l2 * W` (what SGD's `weight_decay = l2` does).
- `l1`: adds `l1 * sum(|W|)`, gradient `l1 * sign(W)` (the subgradient 0 at W = 0).
- both together: elastic net.
- `max_norm`: not a penalty but a constraint: after every update each output neuron's incoming
  weight vector (a column of W) is scaled down to norm <= c; columns already inside are untouched.
Biases are penalized only with `regularize_bias`, BatchNorm gamma and beta only with
`regularize_bn` (then with their layer's l2/l1). Max-norm applies to weight matrices alone.
Every strength can be overridden per Linear layer (index 0 = first hidden layer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from nnrun.nn.layers import Parameter


def l2_penalty(w: np.ndarray, strength: float) -> tuple[float, np.ndarray]:
    """L2: `(0.5 * strength * sum(w**2), strength * w)`; the gradient has w's shape and dtype."""
    return 0.5 * strength * float(np.vdot(w, w)), w * w.dtype.type(strength)


def l1_penalty(w: np.ndarray, strength: float) -> tuple[float, np.ndarray]:
    """L1: `(strength * sum(|w|), strength * sign(w))`; the gradient has w's shape and dtype."""
    return strength * float(np.abs(w).sum(dtype=np.float64)), np.sign(w) * w.dtype.type(strength)


PENALTIES: dict[str, Callable[[np.ndarray, float], tuple[float, np.ndarray]]] = {
    "l2": l2_penalty,
    "l1": l1_penalty,
}
"""Registry: strength name -> penalty function `(w, strength) -> (penalty, gradient)`."""


def max_norm_project(W: np.ndarray, c: float) -> None:
    """Scale, in place, each column of W: (fan_in, fan_out) whose L2 norm exceeds `c` down to norm c."""
    norms = np.sqrt(np.einsum("ij,ij->j", W, W))
    too_big = norms > c
    if too_big.any():
        scale = np.ones_like(norms)
        scale[too_big] = c / norms[too_big]
        W *= scale


@dataclass(frozen=True)
class Strengths:
    """The regularization of one Linear layer (and of its bias and BatchNorm, when switched on)."""

    l2: float = 0.0
    l1: float = 0.0
    max_norm: float | None = None


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

    @classmethod
    def from_config(cls, reg_cfg, model_cfg=None) -> Regularizer:
        """From a `RegularizationConfig` and (for per-layer overrides) a `ModelConfig`."""
        default = Strengths(reg_cfg.l2, reg_cfg.l1, reg_cfg.max_norm)
        per_layer: dict[int, Strengths] = {}
        for index, layer in (getattr(model_cfg, "layers", None) or {}).items():
            per_layer[index] = Strengths(
                default.l2 if layer.l2 is None else layer.l2,
                default.l1 if layer.l1 is None else layer.l1,
                default.max_norm if layer.max_norm is None else layer.max_norm)
        return cls(default, per_layer, reg_cfg.regularize_bias, reg_cfg.regularize_bn)

    def strengths(self, layer: int) -> Strengths:
        """The strengths of Linear layer `layer`."""
        return self.per_layer.get(layer, self.default)

    def _penalized(self, params: Iterable[Parameter]) -> Iterable[tuple[Parameter, Strengths]]:
        for p in params:
            if p.kind in self.penalized_kinds:
                s = self.strengths(p.layer)
                if s.l2 or s.l1:
                    yield p, s

    def add_penalty(self, params: Iterable[Parameter]) -> float:
        """Add each penalty's gradient into `.grad` (after backward); return the total penalty."""
        total = 0.0
        for p, s in self._penalized(params):
            if s.l2:
                total += 0.5 * s.l2 * float(np.vdot(p.value, p.value))
                p.grad += p.value * p.value.dtype.type(s.l2)
            if s.l1:
                total += s.l1 * float(np.abs(p.value).sum(dtype=np.float64))
                p.grad += np.sign(p.value) * p.value.dtype.type(s.l1)
        return total

    def penalty(self, params: Iterable[Parameter]) -> float:
        """The total penalty alone (gradients untouched)."""
        total = 0.0
        for p, s in self._penalized(params):
            for name in ("l2", "l1"):
                strength = getattr(s, name)
                if strength:
                    total += PENALTIES[name](p.value, strength)[0]
        return total

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
        return [p for p, s in self._penalized(params) if s.l1]
