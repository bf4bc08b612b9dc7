"""Independent random streams derived from the one `seed` of a config.

Each consumer (split, init, shuffle, dropout, ...) gets its own `numpy.random.Generator`
keyed by name, so drawing more numbers in one stream never moves another.
"""

import zlib

import numpy as np


def stream(seed: int, name: str) -> np.random.Generator:
    """A generator for the stream `name` of experiment `seed` (stable across runs and versions)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])
