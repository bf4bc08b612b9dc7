"""The MLP: a list of layers with train/eval forward passes, a backward pass and its state by name.

Layout for `hidden = [H1, H2]`: Linear(D, H1) -> act -> Linear(H1, H2) -> act -> Linear(H2, C),
with BatchNorm between each hidden Linear layer and its activation when `batchnorm` is on, and
Dropout after each hidden activation when the keep probability is below 1.
Linear layer i is named `fc{i}`; its parameters are `fc{i}.W` (fan_in, fan_out) and `fc{i}.b`.
BatchNorm i has parameters `bn{i}.gamma`, `bn{i}.beta` and buffers `bn{i}.running_mean`,
`bn{i}.running_var` (all (H_i,)); `state_dict()` holds them all (the keys of `model.npz`).
`to(xp)` moves the network to an array module's device (CuPy: the GPU); `snapshot()` and
`scores()` always return host (NumPy) arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import ModuleType

import numpy as np

from nnrun.backend import host_copy, to_device, to_host, xp_of
from nnrun.nn.layers import BatchNorm, Dropout, Layer, Linear, Parameter


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

    def dropout_layers(self) -> list[Dropout]:
        """The Dropout layers, input side first."""
        return [layer for layer in self.layers if isinstance(layer, Dropout)]

    def set_dropout_rng(self, rng: np.random.Generator) -> None:
        """Draw every dropout mask from `rng` (the experiment's `dropout` stream)."""
        for layer in self.dropout_layers():
            layer.rng = rng

    def set_dropout_counter(self, key: int, counters: np.ndarray | None) -> None:
        """On a GPU, draw every dropout mask from the counter-based generator of `key` at the global step
        `counters[1]` (a device array; see `Dropout`); None goes back to the generator of `set_dropout_rng`."""
        for number, layer in enumerate(self.dropout_layers()):
            layer.counter = (key, counters, number) if counters is not None else None

    def astype(self, dtype: np.dtype | type) -> MLP:
        """Convert every parameter and buffer to `dtype` in place (float64 for gradient checks)."""
        for layer in self.layers:
            layer.astype(dtype)
        return self

    def to(self, xp: ModuleType) -> MLP:
        """Move every parameter and buffer to the array module `xp` (CuPy: the GPU; NumPy: the host)."""
        for layer in self.layers:
            layer.to(xp)
        return self

    @property
    def xp(self) -> ModuleType:
        """The array module the network computes with (that of its parameters)."""
        return xp_of(self.params[0].value)

    def scores(self, X: np.ndarray, batch_size: int,
               transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Evaluation-mode outputs for X: (N, D), in batches of `batch_size` rows on the network's device -> (N, K),
        a host array. `transform` (such as `nnrun.augment.Mirror`) changes each batch on the device first."""
        xp = self.xp
        transform = transform or (lambda batch: batch)
        parts = [self.forward(transform(to_device(X[i:i + batch_size], xp)), train=False)
                 for i in range(0, len(X), batch_size)]
        if not parts:
            return np.zeros((0, list(self.linear_layers())[-1].W.value.shape[1]), dtype=np.float32)
        return to_host(xp.concatenate(parts))

    def kinks(self) -> list[np.ndarray]:
        """The kink-side patterns of the last forward pass (see `Layer.kinks`), input side first."""
        return [k for k in (layer.kinks() for layer in self.layers) if k is not None]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer by name (the keys of `model.npz`)."""
        state = {p.name: p.value for p in self.params}
        for layer in self.layers:
            state.update(layer.buffers())
        return state

    def snapshot(self) -> dict[str, np.ndarray]:
        """A host copy of `state_dict()` (to restore later, or to save)."""
        return {k: host_copy(v) for k, v in self.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays from `state` into the model in place (names and shapes must match)."""
        current = self.state_dict()
        missing = set(current) - set(state)
        if missing:
            raise KeyError(f"state is missing {sorted(missing)}")
        for name, array in current.items():
            if array.shape != state[name].shape:
                raise ValueError(f"{name}: shape {state[name].shape} does not match {array.shape}")
            array[...] = to_device(state[name], xp_of(array))


def build_mlp(weights: Sequence[tuple[np.ndarray, np.ndarray]], *, activation: Callable[[], Layer],
              batchnorm: bool = False, bn_momentum: float = 0.1, bn_eps: float = 1e-5, dropout: float = 1.0,
              dropout_mode: str = "inverted", dropout_rng: np.random.Generator | None = None) -> MLP:
    """The MLP over the Linear layers `weights`: one `(W (fan_in, fan_out), b (fan_out,))` pair per layer.

    Each hidden Linear layer is followed by BatchNorm (when `batchnorm`, with `bn_momentum` and
    `bn_eps`), a fresh `activation()` layer, and Dropout (keep probability `dropout` < 1, mode
    `dropout_mode`, masks from `dropout_rng`; default a generator seeded with 0, which training
    replaces with the experiment's `dropout` stream). The arrays are used as given, not copied.
    """
    dropout_rng = dropout_rng if dropout_rng is not None else np.random.default_rng(0)
    layers: list[Layer] = []
    for i, (W, b) in enumerate(weights):
        layers.append(Linear(W, b, i))
        if i < len(weights) - 1:
            if batchnorm:
                layers.append(BatchNorm(W.shape[1], i, momentum=bn_momentum, eps=bn_eps))
            layers.append(activation())
            if dropout < 1:
                layers.append(Dropout(dropout, dropout_rng, dropout_mode))
    return MLP(layers)
