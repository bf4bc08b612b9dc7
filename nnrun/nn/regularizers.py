"""Weight penalties with their gradients.

L2 adds `0.5 * l2 * sum(W**2)` per weight matrix, gradient `l2 * W`. Biases are not penalized.
"""

from __future__ import annotations

import numpy as np

from nnrun.nn.layers import Parameter


def add_penalty(params: list[Parameter], cfg) -> float:
    """Add the penalty gradients of `cfg` (a `RegularizationConfig`) into each `.grad`; return the penalty."""
    if cfg.l2 == 0:
        return 0.0
    total = 0.0
    l2 = np.float32(cfg.l2)
    for p in params:
        if p.kind != "weight":
            continue
        total += 0.5 * cfg.l2 * float(np.vdot(p.value, p.value))
        p.grad += l2 * p.value
    return total
