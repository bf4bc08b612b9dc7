"""Confidence intervals for the difference between two arms, and the verdict rule.

Intervals (95 % by default) are Welch's t intervals: for arms a and b with means m_a, m_b, sample
variances s_a^2, s_b^2 (ddof 1) and n_a, n_b values,

    d = m_a - m_b,  se = sqrt(s_a^2 / n_a + s_b^2 / n_b),
    df = se^4 / ((s_a^2 / n_a)^2 / (n_a - 1) + (s_b^2 / n_b)^2 / (n_b - 1))   (Welch-Satterthwaite),
    interval = d -+ t_{0.975, df} * se.

Against a fixed value v it is the one-sample t interval of m_a - v (df = n_a - 1). Each arm needs
at least two values. When every value of both arms is the same (se = 0) the interval is the point
d itself. The arms of a study share their seeds (the same split and initial draws); Welch's
interval treats them as independent samples, which makes it wider (more cautious) than a paired
one whenever the seed-matched values are positively correlated, as they usually are.

The verdict of one relation, from the interval [lo, hi] of d and the margin m:

| relation | supported | contradicted | otherwise |
| --- | --- | --- | --- |
| greater | lo > 0 | hi < 0 | not resolved |
| less | hi < 0 | lo > 0 | not resolved |
| about_equal | -m < lo and hi < m (equivalent within the margin) | lo > m or hi < -m (not equivalent) | not resolved |
| at_least | lo > -m | hi < -m | not resolved |
| at_most | hi < m | lo > m | not resolved |
| diverges | every run of a diverged and none of b | no run of a diverged, or every run of b did | not resolved |

A claim with several relations is supported when all are, contradicted when any is, and not
resolved otherwise. No correction for the number of relations is made: with many of them, some
intervals miss the true difference by chance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
"""Confidence level of the intervals."""
SUPPORTED, CONTRADICTED, NOT_RESOLVED = "supported", "contradicted", "not resolved"
"""The verdicts."""


@dataclass(frozen=True)
class Interval:
    """A confidence interval of a difference: `estimate` in [`low`, `high`], its standard error `se` and the
    degrees of freedom `df` of the t distribution (None when se = 0); `method` names how it was made."""

    estimate: float
    low: float
    high: float
    se: float
    df: float | None
    method: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(values: Sequence[float]) -> dict[str, float | int | None]:
    """`n`, `mean`, `std` (ddof 1; None below two values) of `values`."""
    x = np.asarray(values, dtype=np.float64)
    return {"n": int(x.size), "mean": _mean(x) if x.size else None,
            "std": float(np.sqrt(_variance(x))) if x.size > 1 else None}


def _mean(x: np.ndarray) -> float:
    """The mean, exactly the value itself when every value is the same (not a rounding residue)."""
    return float(x[0]) if np.ptp(x) == 0 else float(x.mean())


def _variance(x: np.ndarray) -> float:
    """The sample variance (ddof 1), exactly 0 when every value is the same (not a rounding residue)."""
    return 0.0 if np.ptp(x) == 0 else float(x.var(ddof=1))


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval | None:
    """Welch's t interval of mean(a) - mean(b) (module docstring); None when an arm has fewer than two values."""
    from scipy.stats import t

    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.size < 2 or xb.size < 2:
        return None
    d = _mean(xa) - _mean(xb)
    va, vb = _variance(xa) / xa.size, _variance(xb) / xb.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Interval(d, d, d, 0.0, None, "welch")
    df = (va + vb) ** 2 / (va ** 2 / (xa.size - 1) + vb ** 2 / (xb.size - 1))
    half = float(t.ppf(0.5 + level / 2, df)) * se
    return Interval(d, d - half, d + half, se, float(df), "welch")


def one_sample_interval(a: Sequence[float], value: float, level: float = LEVEL) -> Interval | None:
    """The t interval of mean(a) - value (df = n - 1); None below two values."""
    from scipy.stats import t

    xa = np.asarray(a, dtype=np.float64)
    if xa.size < 2:
        return None
    d = _mean(xa) - float(value)
    se = math.sqrt(_variance(xa) / xa.size)
    if se == 0.0:
        return Interval(d, d, d, 0.0, None, "one-sample t")
    df = float(xa.size - 1)
    half = float(t.ppf(0.5 + level / 2, df)) * se
    return Interval(d, d - half, d + half, se, df, "one-sample t")


def verdict(relation: str, interval: Interval | None, margin: float | None = None) -> str:
    """The verdict of `relation` (greater, less, about_equal, at_least, at_most) from the interval of the
    difference a - b (module docstring); `not resolved` without an interval."""
    if interval is None:
        return NOT_RESOLVED
    lo, hi, m = interval.low, interval.high, margin or 0.0
    rules = {
        "greater": (lo > 0, hi < 0),
        "less": (hi < 0, lo > 0),
        "about_equal": (-m < lo and hi < m, lo > m or hi < -m),
        "at_least": (lo > -m, hi < -m),
        "at_most": (hi < m, lo > m),
    }
    if relation not in rules:
        raise ValueError(f"unknown relation {relation!r}; allowed: {', '.join(rules)}")
    supported, contradicted = rules[relation]
    return SUPPORTED if supported else CONTRADICTED if contradicted else NOT_RESOLVED


def divergence_verdict(diverged_a: int, runs_a: int, diverged_b: int | None = None, runs_b: int | None = None) -> str:
    """`a diverges (and b does not)`: supported when every run of a diverged and none of b; contradicted when
    none of a did or every run of b did; not resolved otherwise (or without runs)."""
    if runs_a == 0 or (runs_b is not None and runs_b == 0):
        return NOT_RESOLVED
    with_b = runs_b is not None
    if diverged_a == runs_a and (not with_b or diverged_b == 0):
        return SUPPORTED
    if diverged_a == 0 or (with_b and diverged_b == runs_b):
        return CONTRADICTED
    return NOT_RESOLVED


def combine(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its relations': supported when all are, contradicted when any is."""
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    if any(v == CONTRADICTED for v in verdicts):
        return CONTRADICTED
    return NOT_RESOLVED


def verdict_label(relation: str, result: str) -> str:
    """How the report words a verdict: `about_equal` relations say equivalent (or not) within the margin."""
    if relation == "about_equal":
        return {SUPPORTED: "equivalent within the margin", CONTRADICTED: "not equivalent"}.get(
            result, "not resolved at this budget")
    return result if result != NOT_RESOLVED else "not resolved at this budget"
