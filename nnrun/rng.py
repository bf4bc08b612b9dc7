"""Independent random streams derived from the one `seed` of a config.

Each consumer (split, init, shuffle, dropout, ...) gets its own `numpy.random.Generator`
keyed by name, so drawing more numbers in one stream never moves another.
"""

import zlib

import numpy as np


def stream(seed: int, name: str) -> np.random.Generator:
    """A generator for the stream `name` of experiment `seed` (stable across runs and versions)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def generator_state(rng: np.random.Generator) -> dict:
    """The state of `rng` as plain JSON-ready data (to save it in a checkpoint)."""
    return rng.bit_generator.state


def set_generator_state(rng: np.random.Generator, state: dict) -> None:
    """Put `rng` back into a state from `generator_state` (the next draws are those that would have followed)."""
    rng.bit_generator.state = state
