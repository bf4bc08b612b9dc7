"""Layers as forward/backward pairs, in the style of the course's `layers.py`.

Conventions: rows are examples; `forward(x, train)` caches what `backward` needs and returns
the output; `backward(dout)` fills each parameter's `.grad` and returns `dx` (the gradient with
respect to the input), or None when the layer was told its input needs no gradient.

In-place contract (it keeps the training step free of needless copies): a layer may overwrite
the `x` it is given in `forward` only when that `x` is the fresh output of the layer before it
(activations and BatchNorm follow a Linear layer, so they may); `backward` may overwrite `dout`.
A Linear layer never modifies its input, so the network's input batch is left untouched.
The element-wise passes of the Linear and ReLU layers run in row blocks (`nnrun.parallel`),
on every core for large batches, with the same results as whole-array operations.
Layers compute with the array module of their inputs (`nnrun.backend.xp_of`: NumPy, or CuPy on a
GPU, where the ReLU backward pass and dropout use fused kernels from `nnrun.nn.kernels`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from nnrun import cpu_kernels
from nnrun.backend import einsum, is_device_array, to_device, to_host, xp_of
from nnrun.nn import kernels
from nnrun.parallel import run_blocks


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
        self.grad = xp_of(self.value).zeros_like(self.value)

    def astype(self, dtype: np.dtype | type) -> None:
        """Convert value and gradient to `dtype` in place (float64 for gradient checks)."""
        self.value = self.value.astype(dtype)
        self.grad = xp_of(self.value).zeros_like(self.value)

    def to(self, xp: ModuleType) -> None:
        """Move value and gradient to the array module `xp` (NumPy: the host; CuPy: the GPU)."""
        self.value = to_device(to_host(self.value), xp)
        self.grad = xp.zeros_like(self.value)


class Layer:
    """Base class of every layer: no parameters or buffers until a subclass adds them.

    Subclasses implement `forward` and `backward`; the base versions raise `NotImplementedError`.
    """

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

    def astype(self, dtype: np.dtype | type) -> None:
        """Convert parameters (and buffers) to `dtype`."""
        for p in self.params:
            p.astype(dtype)

    def to(self, xp: ModuleType) -> None:
        """Move parameters (and buffers) to the array module `xp`."""
        for p in self.params:
            p.to(xp)

    def kinks(self) -> np.ndarray | None:
        """For piecewise-linear layers, which side of each kink the last forward's inputs were on.

        Gradient checks compare this pattern between `x + h` and `x - h`: where it differs, the
        centered difference straddled a kink and is not a derivative. None for smooth layers.
        """
        return None


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
        xp = xp_of(x)
        out = x @ self.W.value
        b = self.b.value
        if cpu_kernels.usable(out, b):
            cpu_kernels.add_bias(out, b)
        else:
            run_blocks([(lambda o: xp.add(o, b, out=o), (out,))])
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """dout: (N, fan_out) -> dx: (N, fan_in); sets dW = x.T @ dout and db = sum of dout."""
        xp = xp_of(dout)
        xp.matmul(self.x.T, dout, out=self.W.grad)
        xp.sum(dout, axis=0, out=self.b.grad)
        if not self.needs_input_grad:
            return None
        return dout @ self.W.value.T


class Activation(Layer):
    """Base class of the non-linearities: what their outputs can be and when a unit passes no gradient.

    `output_range`: (low, high) bounds of the output, None where unbounded; `dead_criterion`: when an
    output `a` counts as dead or saturated, in words (None: never); `dead_mask(a)` the test itself.
    """

    output_range: tuple[float | None, float | None] = (None, None)
    dead_criterion: str | None = None

    def dead_mask(self, a: np.ndarray) -> np.ndarray | None:
        """a: (N, H) outputs -> (N, H) bool, True where dead or saturated; None when the activation has neither."""
        return None


SATURATION = 0.99
"""tanh saturates where |a| > 0.99 (local gradient below 0.0199); sigmoid where a < 0.01 or a > 0.99."""


class ReLU(Activation):
    """`out = max(0, x)`; the gradient passes where the output is positive."""

    output_range = (0.0, None)
    dead_criterion = "output <= 0"

    def dead_mask(self, a: np.ndarray) -> np.ndarray:
        """The output and its gradient are 0 where a <= 0."""
        return a <= 0

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """x: (N, D) -> (N, D). Overwrites x, which is the previous layer's fresh output."""
        if cpu_kernels.usable(x):
            cpu_kernels.relu(x)
        else:
            xp = xp_of(x)
            run_blocks([(lambda a: xp.maximum(a, 0, out=a), (x,))])
        self.out = x
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout: (N, D) -> dx: (N, D). Overwrites dout (a multiply by the mask: far faster than masked assignment)."""
        if is_device_array(dout):
            return kernels.relu_backward(self.out, dout)
        if cpu_kernels.usable(dout, self.out):
            cpu_kernels.relu_backward(dout, self.out)
            return dout
        xp = xp_of(dout)
        run_blocks([(lambda d, o: xp.multiply(d, o > 0, out=d), (dout, self.out))])
        return dout

    def kinks(self) -> np.ndarray:
        return self.out > 0


class LeakyReLU(Activation):
    """`out = x` where x > 0, `slope * x` elsewhere (0 < slope < 1); dx = dout or slope * dout.

    The slope is the config's `model.leaky_slope`, the name of the constructor's argument.
    """

    dead_criterion = "output <= 0 (negative side)"

    def dead_mask(self, a: np.ndarray) -> np.ndarray:
        """Only the slope passes where a <= 0."""
        return a <= 0

    def __init__(self, leaky_slope: float = 0.01) -> None:
        super().__init__()
        if not 0 < leaky_slope < 1:
            raise ValueError(f"leaky ReLU slope must be in (0, 1), got {leaky_slope}")
        self.slope = leaky_slope

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """x: (N, D) -> (N, D). Overwrites x."""
        self.positive = x > 0
        return xp_of(x).maximum(x, x * x.dtype.type(self.slope), out=x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout: (N, D) -> dx: (N, D). Overwrites dout."""
        dout *= xp_of(dout).where(self.positive, dout.dtype.type(1), dout.dtype.type(self.slope))
        return dout

    def kinks(self) -> np.ndarray:
        return self.positive


class Tanh(Activation):
    """`out = tanh(x)`; dx = dout * (1 - out**2)."""

    output_range = (-1.0, 1.0)
    dead_criterion = f"|a| > {SATURATION}"

    def dead_mask(self, a: np.ndarray) -> np.ndarray:
        """Saturated where |a| > 0.99 (local gradient `1 - a**2 < 0.0199`)."""
        return xp_of(a).abs(a) > SATURATION

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """x: (N, D) -> (N, D). Overwrites x."""
        self.out = xp_of(x).tanh(x, out=x)
        return self.out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout: (N, D) -> dx: (N, D). Overwrites dout."""
        dout *= 1 - self.out * self.out
        return dout


class Sigmoid(Activation):
    """`out = 1 / (1 + exp(-x))`, computed stably as `0.5 * (1 + tanh(x / 2))`; dx = dout * out * (1 - out)."""

    output_range = (0.0, 1.0)
    dead_criterion = f"a < {1 - SATURATION:.2g} or a > {SATURATION}"

    def dead_mask(self, a: np.ndarray) -> np.ndarray:
        """Saturated where a < 0.01 or a > 0.99 (local gradient `a (1 - a) < 0.0099`)."""
        return (a < 1 - SATURATION) | (a > SATURATION)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """x: (N, D) -> (N, D). Overwrites x."""
        x *= 0.5
        xp_of(x).tanh(x, out=x)
        x += 1
        x *= 0.5
        self.out = x
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout: (N, D) -> dx: (N, D). Overwrites dout."""
        dout *= self.out * (1 - self.out)
        return dout


class Identity(Activation):
    """`out = x` (a linear network when used everywhere); never dead."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """x: (N, D) -> the same array."""
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout: (N, D) -> the same array."""
        return dout


ACTIVATIONS: dict[str, type[Activation]] = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "identity": Identity,
}
"""Registry: config name -> activation layer class. A class's constructor arguments are model config
keys (LeakyReLU takes `leaky_slope`); the model is built with the ones each class names."""


class BatchNorm(Layer):
    """Batch normalization of each feature, with a learned scale `gamma` and shift `beta`.

    Training: `xhat = (x - mean) / sqrt(var + eps)` with the batch's mean and biased variance
    (ddof 0), `out = gamma * xhat + beta`. Evaluation: the running averages replace the batch
    statistics. Running averages follow PyTorch's `BatchNorm1d` convention:
    `running = (1 - momentum) * running + momentum * batch_stat` (momentum 0.1 by default,
    which is the course's decay 0.9 with `decay = 1 - momentum`), and the running variance is
    the unbiased batch variance `var * N / (N - 1)` (the course code keeps the biased one).
    A training batch of one example leaves the running variance unchanged.
    Parameters `bn{i}.gamma`, `bn{i}.beta` (D,); buffers `bn{i}.running_mean`, `bn{i}.running_var` (D,).
    """

    def __init__(self, dim: int, index: int, momentum: float = 0.1, eps: float = 1e-5,
                 dtype: np.dtype | type = np.float32) -> None:
        super().__init__()
        self.index = index
        self.momentum = momentum
        self.eps = eps
        self.gamma = Parameter(f"bn{index}.gamma", np.ones(dim, dtype=dtype), "gamma", index)
        self.beta = Parameter(f"bn{index}.beta", np.zeros(dim, dtype=dtype), "beta", index)
        self.params = [self.gamma, self.beta]
        self.running_mean = np.zeros(dim, dtype=dtype)
        self.running_var = np.ones(dim, dtype=dtype)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """x: (N, D) -> (N, D). In training overwrites x with xhat (kept for the backward pass)."""
        self.train = train
        xp = xp_of(x)
        if not train:
            self.inv_std = 1.0 / xp.sqrt(self.running_var + x.dtype.type(self.eps))
            self.xhat = (x - self.running_mean) * self.inv_std
            return self.xhat * self.gamma.value + self.beta.value
        n = x.shape[0]
        if is_device_array(x):  # two fused launches (kernels.batchnorm_forward): same formulas, float64 sums
            out, self.inv_std = kernels.batchnorm_forward(x, self.gamma.value, self.beta.value, self.running_mean,
                                                          self.running_var, self.eps, self.momentum)
            self.xhat = x
            return out
        mean = x.mean(axis=0)
        fused = cpu_kernels.usable(x)
        if fused:
            cpu_kernels.subtract_row(x, mean)
        else:
            x -= mean
        var = xp.einsum("ij,ij->j", x, x) / x.dtype.type(n)
        self.inv_std = 1.0 / xp.sqrt(var + x.dtype.type(self.eps))
        if fused:
            out = xp.empty_like(x)
            cpu_kernels.batchnorm_normalize(x, self.inv_std, self.gamma.value, self.beta.value, out)
        else:
            x *= self.inv_std
        self.xhat = x
        m = self.running_mean.dtype.type(self.momentum)
        self.running_mean *= 1 - m
        self.running_mean += m * mean
        if n > 1:
            self.running_var *= 1 - m
            self.running_var += (m * n / (n - 1)) * var
        if not fused:
            out = x * self.gamma.value
            out += self.beta.value
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """dout: (N, D) -> dx: (N, D); dgamma = sum(dout * xhat), dbeta = sum(dout).

        Training: `dx = gamma * inv_std / N * (N * dout - dbeta - xhat * dgamma)`.
        Evaluation (running statistics are constants): `dx = gamma * inv_std * dout`.
        """
        xhat = self.xhat
        if self.train and self.needs_input_grad and is_device_array(dout):  # two fused launches, dout overwritten
            return kernels.batchnorm_backward(dout, xhat, self.gamma.value, self.inv_std, self.beta.grad,
                                              self.gamma.grad)
        xp = xp_of(dout)
        xp.sum(dout, axis=0, out=self.beta.grad)
        einsum("ij,ij->j", dout, xhat, out=self.gamma.grad)
        if not self.needs_input_grad:
            return None
        if not self.train:
            return dout * (self.inv_std * self.gamma.value)
        n = dout.shape[0]
        if cpu_kernels.usable(dout, xhat):
            dx = xp.empty_like(dout)
            cpu_kernels.batchnorm_input_grad(dout, xhat, self.beta.grad, self.gamma.grad,
                                             self.gamma.value * self.inv_std / dout.dtype.type(n), dx)
            return dx
        dx = dout * dout.dtype.type(n)
        dx -= self.beta.grad
        dx -= xhat * self.gamma.grad
        dx *= self.gamma.value * self.inv_std / dout.dtype.type(n)
        return dx

    def buffers(self) -> dict[str, np.ndarray]:
        return {f"bn{self.index}.running_mean": self.running_mean, f"bn{self.index}.running_var": self.running_var}

    def astype(self, dtype: np.dtype | type) -> None:
        super().astype(dtype)
        self.running_mean = self.running_mean.astype(dtype)
        self.running_var = self.running_var.astype(dtype)

    def to(self, xp: ModuleType) -> None:
        super().to(xp)
        self.running_mean = to_device(to_host(self.running_mean), xp)
        self.running_var = to_device(to_host(self.running_var), xp)


DROPOUT_MODES = ("inverted", "vanilla")
"""Dropout variants: `inverted` scales at train time (the default), `vanilla` at test time."""


class Dropout(Layer):
    """Dropout with keep probability `p` (the probability of keeping a unit, as in the notes).

    - inverted (default): train `out = x * mask` with `mask = (rand < p) / p`; test `out = x`.
    - vanilla: train `out = x * (rand < p)`; test `out = p * x`.
    Both give test-time activations equal to the expected train-time ones. Masks come from
    `rng` (the experiment's `dropout` stream); on a GPU, once `counter` is set (`MLP.set_dropout_counter`),
    from a counter-based generator instead (`kernels.dropout_counter`: a function of the run's key, the
    global step and the element, so a replayed CUDA graph and a resumed run draw the same masks). Setting
    `held_mask` to an array (N, D) reuses it instead of drawing, which gradient checks need to make the loss
    a deterministic function.
    """

    def __init__(self, p: float, rng: np.random.Generator, mode: str = "inverted") -> None:
        super().__init__()
        if not 0 < p <= 1:
            raise ValueError(f"dropout keep probability must be in (0, 1], got {p}")
        if mode not in DROPOUT_MODES:
            raise ValueError(f"unknown dropout mode {mode!r}; allowed: {', '.join(DROPOUT_MODES)}")
        self.p = p
        self.rng = rng
        self.mode = mode
        self.mask: np.ndarray | None = None
        self.held_mask: np.ndarray | None = None
        self.counter: tuple[int, np.ndarray, int] | None = None
        """(key, device counters [batch, global step], this layer's number) for counter-based GPU masks."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """x: (N, D) -> (N, D), a new array (x may be the cached output of the activation before)."""
        self.train = train
        if not train:
            return x if self.mode == "inverted" else x * x.dtype.type(self.p)
        if self.held_mask is not None:
            self.mask = self.held_mask
        elif is_device_array(x) and self.counter is not None:
            key, counters, layer = self.counter
            self.mask, out = kernels.dropout_counter(x, counters, key, layer, self.p,
                                                     1 / self.p if self.mode == "inverted" else 1.0)
            return out
        elif is_device_array(x):
            uniform = self.rng.random(x.shape, dtype=x.dtype)
            self.mask, out = kernels.dropout(x, uniform, self.p, 1 / self.p if self.mode == "inverted" else 1.0)
            return out
        else:
            uniform = self.rng.random(x.shape, dtype=np.float64 if x.dtype == np.float64 else np.float32)
            scale = 1 / self.p if self.mode == "inverted" else 1.0
            if cpu_kernels.usable(x, uniform):
                self.mask, out = xp_of(x).empty_like(x), xp_of(x).empty_like(x)
                cpu_kernels.dropout(x, uniform, self.p, scale, self.mask, out)
                return out
            self.mask = (uniform < self.p).astype(x.dtype)
            if scale != 1.0:
                self.mask *= x.dtype.type(scale)
        return x * self.mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout: (N, D) -> dx: (N, D) = dout * mask (train) or dout * (1 or p) (test). Overwrites dout."""
        if self.train:
            dout *= self.mask
        elif self.mode == "vanilla":
            dout *= dout.dtype.type(self.p)
        return dout
