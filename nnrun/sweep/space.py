"""The search space of a sweep: `--grid` lists and `--space` distributions, expanded into points.

- grid: `--grid optim.lr=1e-3,1e-2 --grid regularization.l2=0,1e-4` runs the cartesian
  product of the listed values (2 x 2 = 4 points here);
- random: `--random N --space 'optim.lr=loguniform(1e-4,1e-1)'` draws N points; each key of
  `--space` from its distribution (see `DISTRIBUTIONS`) and each `--grid` key uniformly from its
  list. The draws come from the `sweep` stream of the sweep seed and are made point by point, so
  `--random 20` starts with the 10 points of `--random 10`.
A point is a `{dotted key: value}` dict.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnrun.config import parse_value, split_top_level
from nnrun.errors import UserInputError, shorten
from nnrun.rng import stream

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
CALL_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.DOTALL)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The integers `randint` can draw (NumPy's int64)."""
MAX_FLOAT_SPAN = float(np.finfo(np.float64).max)
"""Widest span `high - low` of `uniform` and `loguniform` (beyond it a draw overflows)."""
LOG_MAX_FLOAT = math.log(MAX_FLOAT_SPAN)
"""Largest exponent a `loguniform` draw is taken at (the log of the largest float rounds so that its exp is finite)."""


def _bounds(name: str, args: tuple[Any, ...]) -> tuple[float, float]:
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise UserInputError(f"{name} takes two numbers (low, high), got {shorten(repr(args))}")
    low, high = float(args[0]), float(args[1])
    if not low < high:
        raise UserInputError(f"{name}(low, high) needs low < high, got {low}, {high}")
    if not math.isfinite(high - low):
        raise UserInputError(f"{name}(low, high) needs finite bounds less than {MAX_FLOAT_SPAN:g} apart, "
                             f"got {low:g}, {high:g}")
    return low, high


def sample_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A float drawn uniformly from [low, high)."""
    return float(rng.uniform(low, high))


def sample_loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A float whose log is uniform on [log low, log high): `exp(uniform(log low, log high))`, 0 < low."""
    return float(math.exp(min(rng.uniform(math.log(low), math.log(high)), LOG_MAX_FLOAT)))


def sample_randint(rng: np.random.Generator, low: int, high: int) -> int:
    """An integer drawn uniformly from low..high, both ends included."""
    return int(rng.integers(low, high, endpoint=True))


def sample_choice(rng: np.random.Generator, *values: Any) -> Any:
    """One of `values`, each with the same probability."""
    return copy.deepcopy(values[int(rng.integers(len(values)))])


def _check_uniform(args: tuple[Any, ...]) -> None:
    _bounds("uniform", args)


def _check_loguniform(args: tuple[Any, ...]) -> None:
    low, _ = _bounds("loguniform", args)
    if low <= 0:
        raise UserInputError(f"loguniform(low, high) needs 0 < low, got low={low}")


def _check_randint(args: tuple[Any, ...]) -> None:
    if len(args) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args) or args[0] > args[1]:
        raise UserInputError(f"randint takes two integers low <= high (both included), got {shorten(repr(args))}")
    if not all(INT64_MIN <= a <= INT64_MAX for a in args):
        raise UserInputError(f"randint(low, high) draws 64-bit integers: both within {INT64_MIN}..{INT64_MAX}, "
                             f"got {args[0]}, {args[1]}")


def _check_choice(args: tuple[Any, ...]) -> None:
    if not args:
        raise UserInputError("choice needs at least one value")


DISTRIBUTIONS: dict[str, tuple[Callable[..., Any], Callable[[tuple[Any, ...]], None]]] = {
    "uniform": (sample_uniform, _check_uniform),
    "loguniform": (sample_loguniform, _check_loguniform),
    "randint": (sample_randint, _check_randint),
    "choice": (sample_choice, _check_choice),
}
"""Registry: distribution name -> (sampler(rng, *args), argument check raising UserInputError)."""


@dataclass(frozen=True)
class Distribution:
    """A named distribution over one config value, e.g. `Distribution("loguniform", (1e-4, 1e-1))`."""

    name: str
    args: tuple[Any, ...]

    def __post_init__(self) -> None:
        if self.name not in DISTRIBUTIONS:
            raise UserInputError(f"unknown distribution {self.name!r}; allowed: {', '.join(DISTRIBUTIONS)}")
        DISTRIBUTIONS[self.name][1](self.args)

    def sample(self, rng: np.random.Generator) -> Any:
        """One draw from `rng`."""
        return DISTRIBUTIONS[self.name][0](rng, *self.args)

    def __str__(self) -> str:
        return f"{self.name}({', '.join(json.dumps(a) for a in self.args)})"


def _split_key(item: str, option: str, example: str) -> tuple[str, str]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not KEY_RE.match(key) or not text.strip():
        raise UserInputError(f"{option} expects KEY=VALUES with a dotted key, e.g. {example}; "
                             f"got {shorten(repr(item))}")
    return key, text


def parse_grid(items: list[str] | tuple[str, ...]) -> dict[str, list[Any]]:
    """`['optim.lr=1e-3,1e-2', 'model.hidden=[64],[64,32]']` -> `{key: [values]}`.

    Values are split on commas outside brackets and quotes and parsed like `--set` values
    (YAML, with `1e-3` read as a number). A key given twice is an error.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, text = _split_key(item, "--grid", "--grid optim.lr=1e-3,1e-2")
        if key in grid:
            raise UserInputError(f"--grid {key} is given twice; list all its values in one --grid option")
        parts = split_top_level(text)
        if any(not p.strip() for p in parts):
            raise UserInputError(f"--grid {shorten(repr(item))}: empty value in the list")
        grid[key] = [parse_value(p) for p in parts]
    return grid


def parse_distribution(text: str) -> Distribution:
    """`'loguniform(1e-4, 1e-1)'` -> `Distribution('loguniform', (0.0001, 0.1))`."""
    match = CALL_RE.match(text)
    if not match:
        raise UserInputError(f"expected NAME(ARGS) with NAME one of {', '.join(DISTRIBUTIONS)}, "
                             f"got {shorten(repr(text))}")
    name, inner = match.groups()
    args = tuple(parse_value(p) for p in split_top_level(inner)) if inner.strip() else ()
    return Distribution(name, args)


def parse_space(items: list[str] | tuple[str, ...]) -> dict[str, Distribution]:
    """`['optim.lr=loguniform(1e-4,1e-1)']` -> `{key: Distribution}`; a key given twice is an error."""
    space: dict[str, Distribution] = {}
    for item in items:
        key, text = _split_key(item, "--space", "--space 'optim.lr=loguniform(1e-4,1e-1)'")
        if key in space:
            raise UserInputError(f"--space {key} is given twice")
        try:
            space[key] = parse_distribution(text)
        except UserInputError as e:
            raise UserInputError(f"--space {shorten(repr(item))}: {e}") from None
    return space


def expand_points(grid: dict[str, list[Any]], space: dict[str, Distribution] | None = None,
                  n_random: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The sweep's points, each a `{dotted key: value}` dict.

    Without `n_random`: the cartesian product of the grid lists, the last key varying fastest
    (`[{}]`, one point, for an empty grid). With `n_random`: that many points drawn from the
    `sweep` stream of `seed`, space keys from their distribution and grid keys uniformly from
    their lists, point by point in key order.
    """
    space = space or {}
    both = sorted(set(grid) & set(space))
    if both:
        raise UserInputError(f"{', '.join(both)} given both as --grid and --space; choose one")
    if n_random is None:
        if space:
            raise UserInputError("--space draws random points: give their number with --random N")
        return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    if n_random < 1:
        raise UserInputError(f"--random needs a number of points >= 1, got {n_random}")
    distributions = {**{k: Distribution("choice", tuple(v)) for k, v in grid.items()}, **space}
    if not distributions:
        raise UserInputError("--random N needs keys to vary: give --space KEY=DIST(...) or --grid KEY=V1,V2")
    rng = stream(seed, "sweep")
    return [{k: d.sample(rng) for k, d in distributions.items()} for _ in range(n_random)]
