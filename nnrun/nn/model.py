"""The MLP: a list of layers built from the model config, with train/eval forward passes.

Layout for `hidden = [H1, H2]`: Linear(D, H1) -> act -> Linear(H1, H2) -> act -> Linear(H2, C).
Linear layer i is named `fc{i}`; its parameters are `fc{i}.W` (fan_in, fan_out) and `fc{i}.b`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nnrun.nn.init import INIT_SCHEMES
from nnrun.nn.layers import ACTIVATIONS, Layer, Linear, Parameter


class MLP:
    """A feed-forward network: `forward(x, train)` -> scores, `backward(dscores)` fills grads."""

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers
        self.params: list[Parameter] = [p for layer in layers for p in layer.params]
        # The input needs no gradient: the first layer skips computing dx.
        layers[0].needs_input_grad = False

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """x: (N, D) -> scores: (N, C). `train` selects batch statistics and dropout masks."""
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dscores: np.ndarray) -> None:
        """dscores: (N, C); fills `.grad` of every parameter."""
        dout = dscores
        for layer in reversed(self.layers):
            dout = layer.backward(dout)

    def linear_layers(self) -> Iterator[Linear]:
        """The Linear layers, input side first."""
        return (layer for layer in self.layers if isinstance(layer, Linear))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer by name (the keys of `model.npz`)."""
        state = {p.name: p.value for p in self.params}
        for layer in self.layers:
            state.update(layer.buffers())
        return state

    def snapshot(self) -> dict[str, np.ndarray]:
        """A copy of `state_dict()` to restore later."""
        return {k: v.copy() for k, v in self.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays from `state` into the model in place (names and shapes must match)."""
        current = self.state_dict()
        missing = set(current) - set(state)
        if missing:
            raise KeyError(f"state is missing {sorted(missing)}")
        for name, array in current.items():
            if array.shape != state[name].shape:
                raise ValueError(f"{name}: shape {state[name].shape} does not match {array.shape}")
            array[...] = state[name]


def build_mlp(cfg, input_dim: int, output_dim: int, rng: np.random.Generator) -> MLP:
    """Build the MLP that `cfg` (a `ModelConfig`) describes, float32, weights drawn from `rng`."""
    sizes = [input_dim, *cfg.hidden, output_dim]
    layers: list[Layer] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = INIT_SCHEMES[cfg.init](fan_in, fan_out, rng)
        b = np.full(fan_out, cfg.bias_init, dtype=np.float32)
        layers.append(Linear(W, b, i))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[cfg.activation]())
    return MLP(layers)
