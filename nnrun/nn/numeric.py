"""Numeric gradients: analytic gradients against centered differences, in float64.

`numeric_gradient(f, x)` is the reusable helper (tests use it for every layer, loss and
penalty); `check_model_gradients` checks a whole network with its loss and penalties (what
`nnrun gradcheck` runs on the configured model and a small batch of real training data).

Error measure, per entry: `|a - n| / max(|a| + |n|, floor)` with a the analytic and n the
numeric derivative, and `floor = 1e7 * eps * max(|loss|, 1) / h` (eps = float64 machine
epsilon; about 2e-4 * |loss| for h = 1e-5). A centered difference carries rounding noise of
`eps * |loss| / h` times up to ~100 (rounding accumulated in the forward pass); the floor sits
1e5 above that, so with the default tolerance 1e-5 derivatives that are zero up to rounding (a
Linear bias followed by BatchNorm, whose effect BatchNorm removes) do not turn noise into large
ratios, while a wrong derivative of any size above the floor still shows. h = 1e-5 balances
truncation error (~h**2) against rounding noise (~1/h); the shipped configs stay below 1e-6.

Kinks: ReLU, leaky ReLU, `|w|` (L1), the hinge losses (svm, squared_hinge, attribute_hinge)
and the L1 regression loss are not differentiable at their kinks, and a centered difference
whose two points straddle a kink measures an average of two slopes, not a derivative. With
h = 1e-5 in float64 this is rare but happens; such entries are skipped and counted, not failed:
an entry is skipped when a kinked layer's on/off pattern differs between `w + h` and `w - h`
(see `Layer.kinks`), when the loss's `kinks(scores, y)` pattern differs the same way, or when
the entry carries an L1 penalty and `|w| < h`. Dropout masks are drawn once and held fixed, so
the loss is a deterministic function of the parameters. Max-norm is a projection after each
update, not a term of the loss: it is applied once before the check, as after a training step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nnrun.backend import host_copy, to_host
from nnrun.nn.layers import Parameter
from nnrun.nn.losses import Loss
from nnrun.nn.model import MLP
from nnrun.nn.regularizers import Regularizer

DEFAULT_H = 1e-5
"""Step of the centered differences (float64)."""
DEFAULT_TOL = 1e-5
"""Largest acceptable relative error."""
FLOOR_FACTOR = 1e7
"""The relative error's floor in units of the rounding noise `eps * |loss| / h` (see the module docstring)."""


def error_floor(loss: float, h: float) -> float:
    """`FLOOR_FACTOR * eps * max(|loss|, 1) / h`: the smallest denominator of the relative error."""
    return FLOOR_FACTOR * float(np.finfo(np.float64).eps) * max(abs(loss), 1.0) / h


def numeric_gradient(f: Callable[[], float], x: np.ndarray, h: float = DEFAULT_H,
                     indices: np.ndarray | None = None) -> np.ndarray:
    """Centered differences `(f(x + h e_i) - f(x - h e_i)) / 2h` of the scalar `f()` with respect to `x`.

    `f` reads `x` (an array it closes over), which is perturbed in place and restored.
    With `indices` (flat indices into x) only those entries are computed and the result has
    their length; otherwise the result has x's shape.
    """
    flat = x.reshape(-1)
    chosen = np.arange(flat.size) if indices is None else np.asarray(indices)
    grad = np.empty(len(chosen), dtype=np.float64)
    for j, i in enumerate(chosen):
        old = flat[i].item()  # a value: on a GPU `flat[i]` is a 0-d view, which the writes below would change
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        grad[j] = (plus - minus) / (2 * h)
    return grad.reshape(x.shape) if indices is None else grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """Entrywise `|a - n| / max(|a| + |n|, floor)`."""
    a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    return np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor)


@dataclass
class ParamCheck:
    """The check of one parameter array."""

    name: str
    shape: tuple[int, ...]
    checked: int
    skipped: int
    max_rel_error: float
    max_abs_error: float
    passed: bool


def check_model_gradients(model: MLP, loss_fn: Loss, X: np.ndarray, y: np.ndarray,
                          regularizer: Regularizer | None = None, *, h: float = DEFAULT_H, tol: float = DEFAULT_TOL,
                          max_entries: int | None = None, rng: np.random.Generator | None = None,
                          progress: Callable[[str, int, int], None] | None = None) -> list[ParamCheck]:
    """Compare every parameter's analytic gradient of `data loss + penalty` with centered differences.

    The model should be float64 (`model.astype(np.float64)`) and X: (N, D) float64; model, X and y may
    all live on a GPU (the perturbed entries are then set there, the losses read back). The loss is
    evaluated in training mode (batch statistics) with dropout masks held fixed. At most
    `max_entries` entries per parameter are checked (a random sample from `rng`; None: all).
    BatchNorm running averages are restored afterwards. The relative error's floor comes from
    `error_floor` (see the module docstring). `progress(name, done, total)` is called after every entry
    (total: the entries of every parameter).

    A perturbation of a parameter of layer L changes nothing below L: the input of layer L is computed
    once per parameter (an unperturbed forward of the layers below it, whose caches and kink patterns
    are then exactly those of a full forward) and each perturbed loss runs only the layers from L up, on
    a copy of it. The losses are bit for bit those of full forward passes, at a fraction of the cost.
    """
    params = model.params
    saved = model.snapshot()
    rng = rng or np.random.default_rng(0)
    l1_params = {id(p) for p in regularizer.l1_weights(params)} if regularizer is not None else set()

    scores = model.forward(X, train=True)
    dropouts = model.dropout_layers()
    for layer in dropouts:
        layer.held_mask = layer.mask
    try:
        loss0, dscores = loss_fn.loss_and_grad(scores, y)
        model.backward(dscores)
        if regularizer is not None:
            loss0 += regularizer.add_penalty(params)
        floor = error_floor(float(loss0), h)
        analytic = {p.name: host_copy(p.grad) for p in params}

        y_host = to_host(y)

        owner = {id(p): i for i, layer in enumerate(model.layers) for p in layer.params}
        start, below = 0, X

        def evaluate() -> tuple[float, list[np.ndarray]]:
            x = X if start == 0 else below.copy(order="K")  # a copy: a layer may work on its input in place
            for layer in model.layers[start:]:
                x = layer.forward(x, True)
            s = to_host(x)
            loss = loss_fn.loss(s, y_host)
            if regularizer is not None:
                loss += regularizer.penalty(params)
            kinks = model.kinks()
            loss_kinks = loss_fn.kinks(s, y_host)
            if loss_kinks is not None:
                kinks.append(loss_kinks)
            return float(loss), [to_host(k) for k in kinks]

        total = sum(p.value.size if max_entries is None else min(p.value.size, max_entries) for p in params)
        done = [0]

        def entry_done(name: str) -> None:
            done[0] += 1
            if progress is not None:
                progress(name, done[0], total)

        checks = []
        for p in params:
            start = owner[id(p)]
            below = X
            for layer in model.layers[:start]:  # the unperturbed input of the parameter's layer
                below = layer.forward(below, True)
            checks.append(_check_param(p, analytic[p.name], evaluate, h, tol, floor, max_entries, rng,
                                       id(p) in l1_params, entry_done))
        return checks
    finally:
        for layer in dropouts:
            layer.held_mask = None
        model.load_state_dict(saved)


def _check_param(p: Parameter, analytic: np.ndarray, evaluate: Callable[[], tuple[float, list[np.ndarray]]],
                 h: float, tol: float, floor: float, max_entries: int | None, rng: np.random.Generator,
                 has_l1: bool, entry_done: Callable[[str], None] = lambda name: None) -> ParamCheck:
    flat = p.value.reshape(-1)
    if max_entries is not None and flat.size > max_entries:
        indices = np.sort(rng.choice(flat.size, max_entries, replace=False))
    else:
        indices = np.arange(flat.size)
    numeric, used = [], []
    for i in indices:
        entry_done(p.name)
        old = flat[i].item()  # a value, not CuPy's 0-d view of the entry (see numeric_gradient)
        if has_l1 and abs(old) < h:
            continue
        flat[i] = old + h
        plus, kinks_plus = evaluate()
        flat[i] = old - h
        minus, kinks_minus = evaluate()
        flat[i] = old
        if any(not np.array_equal(a, b) for a, b in zip(kinks_plus, kinks_minus, strict=True)):
            continue
        numeric.append((plus - minus) / (2 * h))
        used.append(i)
    a = analytic.reshape(-1)[used]
    n = np.asarray(numeric, dtype=np.float64)
    rel = relative_error(a, n, floor) if used else np.zeros(0)
    max_rel = float(rel.max()) if rel.size else 0.0
    max_abs = float(np.abs(a - n).max()) if rel.size else 0.0
    return ParamCheck(p.name, tuple(p.value.shape), len(used), len(indices) - len(used), max_rel, max_abs,
                      max_rel <= tol)
