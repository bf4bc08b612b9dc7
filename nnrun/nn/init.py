"""Weight init schemes, by name.

Conventions: a weight matrix is `(fan_in, fan_out)`; each scheme is a function
`(fan_in, fan_out, rng, **options) -> W` returning float32.
"""

from collections.abc import Callable

import numpy as np


def he(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """He et al. (2015): `randn * sqrt(2 / fan_in)`, variance 2/fan_in, for ReLU networks."""
    return (rng.standard_normal((fan_in, fan_out), dtype=np.float32) * np.sqrt(2.0 / fan_in)).astype(np.float32)


INIT_SCHEMES: dict[str, Callable[..., np.ndarray]] = {
    "he": he,
}
"""Registry: config name -> init function."""
