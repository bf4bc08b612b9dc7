"""Layers as forward/backward pairs, in the style of the course's `layers.py`.

Conventions: rows are examples; `forward(x, train)` caches what `backward` needs and returns
the output; `backward(dout)` fills each parameter's `.grad` and returns `dx` (the gradient with
respect to the input), or None when the layer was told its input needs no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Parameter:
    """A trainable array and its gradient (same shape and dtype).

    `kind` says what it is for regularizers ('weight', 'bias', 'gamma', 'beta');
    `layer` is the index of the Linear block it belongs to (0 = first hidden layer).
    """

    name: str
    value: np.ndarray
    kind: str
    layer: int
    grad: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.grad = np.zeros_like(self.value)


class Layer:
    """Base class: no parameters, identity in both directions."""

    params: list[Parameter]
    needs_input_grad: bool = True

    def __init__(self) -> None:
        self.params = []

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """x: (N, D) -> out: (N, M)."""
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """dout: (N, M) -> dx: (N, D)."""
        raise NotImplementedError

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state saved with the model (such as BatchNorm running averages)."""
        return {}


class Linear(Layer):
    """Affine layer `out = x @ W + b` with W: (fan_in, fan_out), b: (fan_out,)."""

    def __init__(self, W: np.ndarray, b: np.ndarray, index: int) -> None:
        super().__init__()
        self.W = Parameter(f"fc{index}.W", W, "weight", index)
        self.b = Parameter(f"fc{index}.b", b, "bias", index)
        self.params = [self.W, self.b]
        self.x: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """x: (N, fan_in) -> (N, fan_out)."""
        self.x = x
        out = x @ self.W.value
        out += self.b.value
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """dout: (N, fan_out) -> dx: (N, fan_in); sets dW = x.T @ dout and db = sum of dout."""
        np.matmul(self.x.T, dout, out=self.W.grad)
        np.sum(dout, axis=0, out=self.b.grad)
        if not self.needs_input_grad:
            return None
        return dout @ self.W.value.T


class ReLU(Layer):
    """`out = max(0, x)`; the gradient passes where the output is positive."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """x: (N, D) -> (N, D). Overwrites x, which is the previous layer's fresh output."""
        self.out = np.maximum(x, 0, out=x)
        return self.out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout: (N, D) -> dx: (N, D). Overwrites dout."""
        dout[self.out <= 0] = 0
        return dout


ACTIVATIONS: dict[str, type[Layer]] = {
    "relu": ReLU,
}
"""Registry: config name -> activation layer class."""
