"""Confidence intervals, tests and the verdict rule of a study's relations, chosen before any data is seen.

**Intervals** (95 %) of the difference d between arm a and arm b (or a fixed value v), by the
relation's `analysis`, a key of the study file (default `paired`; never picked from the results):

- `paired`: the arms run at the same seeds, and a seed drives every random stream of a run (split,
  init, batch order, dropout, augmentation), so the seed-matched values form pairs. With
  d_i = a_i - b_i over the n seeds where both arms have a value, sd the standard deviation of the
  d_i (ddof 1): se = sd / sqrt(n), df = n - 1, interval = mean(d) -+ t_{0.975, df} * se;
- `welch`: the arms as independent samples, means m_a, m_b, variances s_a^2, s_b^2 (ddof 1):
  se = sqrt(s_a^2 / n_a + s_b^2 / n_b),
  df = se^4 / ((s_a^2 / n_a)^2 / (n_a - 1) + (s_b^2 / n_b)^2 / (n_b - 1)) (Welch-Satterthwaite);
- against a fixed value v: the one-sample t interval of m_a - v (df = n_a - 1).

Each needs two values (pairs) or more; with no spread at all (se = 0) the interval is the point d.

**Tests.** Each relation has two one-sided tests, each at level `ALPHA / 2` (0.025), so that a
test rejects exactly when the 95 % two-sided interval excludes its threshold. Their p-values are
given doubled (capped at 1), `p_support` and `p_contradict`, to be compared with `ALPHA` (0.05):

| relation | supported (interval) | contradicted (interval) |
| --- | --- | --- |
| greater | lo > 0 | hi < 0 |
| less | hi < 0 | lo > 0 |
| about_equal | -m < lo and hi < m (equivalent within the margin: TOST) | lo > m or hi < -m (not equivalent) |
| at_least | lo > -m | hi < -m |
| at_most | hi < m | lo > m |

With T = (d - theta) / se: the test that d > theta has p = 2 P(t_df >= T), that d < theta has
p = 2 P(t_df <= T); `about_equal`'s support is the larger of its two tests' p, its contradiction
the smaller.

`diverges` counts diverged runs (a loss that was not finite) with exact tests:

- with b, Fisher's exact test of the 2 x 2 table (diverged, not) x (a, b): supported when a
  diverges more often than b (one-sided `greater` p < 0.025), contradicted when less often
  (`less` p < 0.025). 3 of 3 against 0 of 3 gives p = 2 x 0.05 = 0.1: not resolved;
- without b, the exact binomial test of a's divergence rate against 1/2: supported when a diverges
  in more than half its runs (the exact Clopper-Pearson 95 % interval of its rate lies above 1/2),
  contradicted when in fewer than half (the interval lies below 1/2).

**A claim's verdict** from its k relations: supported when every relation is supported (an
intersection-union test: each at level 0.05 makes the claim's at 0.05, no correction needed);
contradicted when a relation's contradiction survives Holm's step-down correction across the
claim's k relations (its Holm-adjusted `p_contradict` < 0.05; a relation without a test counts
with p = 1), which keeps the chance that any relation of the claim is contradicted wrongly at
0.05 or less; not resolved otherwise. A relation contradicted by its own interval but not after
the correction is not resolved, and says so.

**Effect sizes**: the difference d with its interval, and d in units of its spread: paired d_z =
mean(d_i) / sd(d_i); Welch d_av = (m_a - m_b) / sqrt((s_a^2 + s_b^2) / 2); one-sample (m_a - v) /
s_a. For `diverges`, the difference of the divergence rates (a's rate - 1/2 without b).

**Seeds needed** by a relation not resolved, taking the observed difference and spread as the
true ones: the smallest n (per arm) at which the test against the relation's nearest threshold
theta (0 for greater and less, -m for at_least, +m for at_most, the nearer of -m and +m for
about_equal) has 80 % power at ALPHA, by the t approximation
|d - theta| / se(n) >= t_{0.975, df(n)} + t_{0.80, df(n)}, with se(n) and df(n) the analysis'
formulas at n seeds (paired: sd / sqrt(n), n - 1; Welch: sqrt((s_a^2 + s_b^2) / n) and its
Welch-Satterthwaite df; one-sample: s_a / sqrt(n), n - 1). For `diverges`, the smallest n at
which the exact test's power, summed over binomial outcomes at the observed rates, reaches 80 %.
It is a planning figure, not evidence: the observed difference of a few seeds is itself uncertain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
"""Confidence level of the intervals."""
ALPHA = 0.05
"""1 - LEVEL: the level each (doubled) p-value is compared with, after Holm's correction for contradictions."""
POWER = 0.8
"""The power the seeds-needed figure asks for."""
ANALYSES = ("paired", "welch")
"""How a relation between two arms is analysed (module docstring); `paired` is the default."""
DEFAULT_ANALYSIS = "paired"
ONE_SAMPLE = "one-sample"
"""The analysis of a relation against a fixed value."""
DIVERGE_RATE = 0.5
"""`diverges` without b: the divergence rate a's must exceed (more than half its runs)."""
MAX_SEEDS_NEEDED = 10_000
"""The largest seeds-needed figure a t relation reports (beyond it: `None`, with the reason)."""
MAX_EXACT_SEEDS = 100
"""The largest seeds-needed figure a `diverges` relation searches (its exact power is summed over outcomes)."""
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
    se, df = welch_se_df(_variance(xa), xa.size, _variance(xb), xb.size)
    if se == 0.0:
        return Interval(d, d, d, 0.0, None, "welch")
    half = float(t.ppf(0.5 + level / 2, df)) * se
    return Interval(d, d - half, d + half, se, float(df), "welch")


def welch_se_df(var_a: float, n_a: int, var_b: float, n_b: int) -> tuple[float, float | None]:
    """`(se, df)` of a difference of two independent means with sample variances `var_a`, `var_b` over `n_a`,
    `n_b` values: se = sqrt(s_a^2 / n_a + s_b^2 / n_b) and the Welch-Satterthwaite df (None when se = 0)."""
    va, vb = var_a / n_a, var_b / n_b
    se = math.sqrt(va + vb)
    if se == 0.0:
        return 0.0, None
    return se, (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))


def one_sample_interval(a: Sequence[float], value: float, level: float = LEVEL) -> Interval | None:
    """The t interval of mean(a) - value (df = n - 1); None below two values."""
    return _t_interval(np.asarray(a, dtype=np.float64) - float(value), level, "one-sample t")


def _t_interval(x: np.ndarray, level: float, test: str) -> Interval | None:
    """The t interval of mean(x) (df = n - 1), named `test`; None below two values."""
    from scipy.stats import t

    if x.size < 2:
        return None
    estimate = _mean(x)
    se = math.sqrt(_variance(x) / x.size)
    if se == 0.0:
        return Interval(estimate, estimate, estimate, 0.0, None, test)
    df = float(x.size - 1)
    half = float(t.ppf(0.5 + level / 2, df)) * se
    return Interval(estimate, estimate - half, estimate + half, se, df, test)


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


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval | None:
    """The paired t interval of mean(a_i - b_i) over seed-matched values `a` and `b` (same length, pair i
    at position i; module docstring); None below two pairs."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape:
        raise ValueError(f"paired values need the same length, got {xa.size} and {xb.size}")
    return _t_interval(xa - xb, level, "paired t")


def thresholds(relation: str, margin: float | None) -> tuple[float, ...]:
    """The values of the difference a relation's tests compare it with: 0, -m, +m or both margins."""
    m = margin or 0.0
    return {"greater": (0.0,), "less": (0.0,), "at_least": (-m,), "at_most": (m,),
            "about_equal": (-m, m)}[relation]


def p_values(relation: str, interval: Interval | None, margin: float | None = None) -> tuple[float, float] | None:
    """`(p_support, p_contradict)` of a relation from the interval of its difference: each twice a one-sided t
    test's p-value, capped at 1 (module docstring); None without an interval. With se = 0 a test's p is 0
    when the point lies strictly beyond its threshold, else 1."""
    from scipy.stats import t

    if interval is None:
        return None
    d, se, m = interval.estimate, interval.se, margin or 0.0

    def above(theta: float) -> float:  # evidence that the difference exceeds theta
        if se == 0.0 or interval.df is None:
            return 0.0 if d > theta else 1.0
        return min(1.0, 2.0 * float(t.sf((d - theta) / se, interval.df)))

    def below(theta: float) -> float:  # evidence that the difference is below theta
        if se == 0.0 or interval.df is None:
            return 0.0 if d < theta else 1.0
        return min(1.0, 2.0 * float(t.cdf((d - theta) / se, interval.df)))

    tests = {"greater": (above(0.0), below(0.0)), "less": (below(0.0), above(0.0)),
             "at_least": (above(-m), below(-m)), "at_most": (below(m), above(m)),
             "about_equal": (max(above(-m), below(m)), min(above(m), below(-m)))}
    if relation not in tests:
        raise ValueError(f"unknown relation {relation!r}; allowed: {', '.join(tests)}")
    return tests[relation]


def effect_size(analysis: str, a: Sequence[float], b: Sequence[float] | None = None,
                value: float | None = None) -> dict[str, Any] | None:
    """The difference in units of its spread (module docstring): `{"standardized", "kind"}` with kind `d_z`
    (paired: `a`, `b` seed-matched), `d_av` (Welch) or `d` (one-sample, against `value`); None below two
    values or without spread."""
    xa = np.asarray(a, dtype=np.float64)
    if xa.size < 2:
        return None
    if analysis == ONE_SAMPLE:
        spread, diff, kind = math.sqrt(_variance(xa)), _mean(xa) - float(value or 0.0), "d"
    else:
        xb = np.asarray(b, dtype=np.float64)
        if xb.size < 2:
            return None
        if analysis == "paired":
            d = xa - xb
            spread, diff, kind = math.sqrt(_variance(d)), _mean(d), "d_z"
        else:
            spread, diff, kind = math.sqrt((_variance(xa) + _variance(xb)) / 2), _mean(xa) - _mean(xb), "d_av"
    if spread == 0.0:
        return None
    return {"standardized": diff / spread, "kind": kind}


def seeds_needed(relation: str, margin: float | None, estimate: float, analysis: str,
                 spreads: Sequence[float]) -> tuple[int | None, str | None]:
    """The seeds per arm at which a relation's test against its nearest threshold reaches `POWER` if the
    observed difference `estimate` and standard deviations `spreads` were the true ones (module docstring):
    `(n, None)`, or `(None, why)` when no number is expected to resolve it or it is over `MAX_SEEDS_NEEDED`.
    `spreads`: (sd of the paired differences,), (s_a, s_b) for Welch, (s_a,) for one sample."""
    from scipy.stats import t

    distance = min(abs(estimate - theta) for theta in thresholds(relation, margin))
    if analysis == "paired" and estimate == 0.0 and spreads[0] == 0.0:
        return None, ("the two arms gave the same value at every seed: the setting they differ in changed "
                      "no run, so no number of seeds can resolve it")
    if distance == 0.0:
        return None, "the difference sits on the relation's threshold: no number of seeds is expected to resolve it"
    if all(s == 0.0 for s in spreads):
        return None, "the values have no spread over seeds"

    def enough(n: int) -> bool:
        if analysis == "welch":
            se, df = welch_se_df(spreads[0] ** 2, n, spreads[1] ** 2, n)  # se > 0: some spread, checked above
        else:
            se, df = spreads[0] / math.sqrt(n), float(n - 1)
        return distance / se >= float(t.ppf(1 - ALPHA / 2, df)) + float(t.ppf(POWER, df))

    if not enough(MAX_SEEDS_NEEDED):
        return None, f"more than {MAX_SEEDS_NEEDED:,} seeds"
    low, high = 2, MAX_SEEDS_NEEDED  # enough() only turns true as n grows: the smallest such n by bisection
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle + 1, high)
    return low, None


@dataclass(frozen=True)
class DivergenceTest:
    """The exact test of a `diverges` relation (module docstring): `method` (`fisher exact` with b, `exact
    binomial` without), the doubled one-sided `p_support` and `p_contradict`, each arm's diverged runs, runs,
    rate and exact (Clopper-Pearson) interval of the rate, and `effect`: a's rate - b's (a's rate - 1/2)."""

    method: str
    p_support: float
    p_contradict: float
    rates: dict[str, dict[str, float]]
    effect: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def divergence_test(diverged_a: int, runs_a: int, diverged_b: int | None = None,
                    runs_b: int | None = None) -> DivergenceTest | None:
    """`a diverges` (more often than b, or in more than half its runs without b), tested exactly; None when an
    arm has no finished run."""
    from scipy.stats import binomtest, fisher_exact

    if runs_a == 0 or (runs_b is not None and runs_b == 0):
        return None
    rates = {"a": _rate(diverged_a, runs_a)}
    if runs_b is None or diverged_b is None:
        greater = binomtest(diverged_a, runs_a, DIVERGE_RATE, alternative="greater").pvalue
        less = binomtest(diverged_a, runs_a, DIVERGE_RATE, alternative="less").pvalue
        method, effect = "exact binomial", rates["a"]["rate"] - DIVERGE_RATE
    else:
        rates["b"] = _rate(diverged_b, runs_b)
        table = [[diverged_a, runs_a - diverged_a], [diverged_b, runs_b - diverged_b]]
        greater = fisher_exact(table, alternative="greater").pvalue
        less = fisher_exact(table, alternative="less").pvalue
        method, effect = "fisher exact", rates["a"]["rate"] - rates["b"]["rate"]
    return DivergenceTest(method, min(1.0, 2.0 * float(greater)), min(1.0, 2.0 * float(less)), rates, effect)


def _rate(diverged: int, runs: int) -> dict[str, float]:
    from scipy.stats import binomtest

    ci = binomtest(diverged, runs).proportion_ci(LEVEL, method="exact")
    return {"diverged": diverged, "runs": runs, "rate": diverged / runs, "low": float(ci.low), "high": float(ci.high)}


def verdict_of_tests(p: tuple[float, float] | None) -> str:
    """The verdict of a relation's two tests alone (before Holm): supported when `p_support` < ALPHA,
    contradicted when `p_contradict` < ALPHA."""
    if p is None:
        return NOT_RESOLVED
    return SUPPORTED if p[0] < ALPHA else CONTRADICTED if p[1] < ALPHA else NOT_RESOLVED


def divergence_seeds_needed(diverged_a: int, runs_a: int, diverged_b: int | None = None,
                            runs_b: int | None = None) -> tuple[int | None, str | None]:
    """The runs per arm at which `divergence_test` rejects in the direction the observed rates point to with
    `POWER`, were those rates the true ones (exact: summed over the binomial outcomes); `(None, why)` when the
    rates point nowhere or it is over `MAX_EXACT_SEEDS`."""
    from scipy.stats import binom, hypergeom

    rate_a = diverged_a / runs_a
    with_b = runs_b is not None and diverged_b is not None
    other = diverged_b / runs_b if with_b else DIVERGE_RATE  # type: ignore[operator]
    if rate_a == other:
        return None, "the observed divergence rates point neither way"
    up = rate_a > other
    for n in range(2, MAX_EXACT_SEEDS + 1):
        x = np.arange(n + 1)
        if not with_b:
            p = binom.sf(x - 1, n, DIVERGE_RATE) if up else binom.cdf(x, n, DIVERGE_RATE)
            power = float(binom.pmf(x, n, rate_a)[2 * p < ALPHA].sum())
        else:
            xa, xb = np.meshgrid(x, x, indexing="ij")
            total = xa + xb
            p = hypergeom.sf(xa - 1, 2 * n, total, n) if up else hypergeom.cdf(xa, 2 * n, total, n)
            weight = np.outer(binom.pmf(x, n, rate_a), binom.pmf(x, n, other))
            power = float(weight[2 * p < ALPHA].sum())
        if power >= POWER:
            return n, None
    return None, f"more than {MAX_EXACT_SEEDS} runs per arm"


def holm(p: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values of a family (a claim's relations): sorted ascending, the i-th
    (from 0) of k is max over j <= i of min(1, (k - j) p_(j)). A missing p counts as 1 and stays None."""
    k = len(p)
    values = [1.0 if x is None else float(x) for x in p]
    adjusted = [1.0] * k
    running = 0.0
    for rank, i in enumerate(sorted(range(k), key=values.__getitem__)):
        running = max(running, min(1.0, (k - rank) * values[i]))
        adjusted[i] = running
    return [None if x is None else a for x, a in zip(p, adjusted, strict=True)]


def holm_verdicts(verdicts: Sequence[str],
                  p_contradict: Sequence[float | None]) -> tuple[list[str], list[float | None]]:
    """The relations' verdicts within their claim, and their Holm-adjusted `p_contradict`: a contradiction
    stands only when its adjusted p is below ALPHA, and is not resolved otherwise (module docstring)."""
    adjusted = holm(p_contradict)
    final = []
    for v, q in zip(verdicts, adjusted, strict=True):
        if v == CONTRADICTED and (q is None or q >= ALPHA):
            v = NOT_RESOLVED
        final.append(v)
    return final, adjusted


def settings(analysis: str) -> dict[str, Any]:
    """The rules a study's numbers were made by (`study.json`'s `statistics`), `analysis` the study's default."""
    return {"level": LEVEL, "alpha": ALPHA, "power": POWER, "analysis": analysis,
            "intervals": "paired t on seed-matched differences, or Welch's t, as each relation's analysis says; "
                         "one-sample t against a value",
            "p_values": "twice the one-sided p of each test, compared with alpha",
            "divergence": f"Fisher's exact test between two arms; exact binomial against {DIVERGE_RATE:g} for one",
            "claim": "supported when every relation is; contradicted when a relation's contradiction survives "
                     "Holm's correction over the claim's relations; not resolved otherwise",
            "diverged_runs": "counted as the claim's diverged_value; without it a relation with diverged runs is "
                             "not resolved",
            "seeds_needed": f"{POWER:.0%} power at alpha against the nearest threshold, the observed difference and "
                            "spread taken as true"}


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
