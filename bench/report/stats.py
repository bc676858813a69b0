"""Seed statistics for reports: means with Student-t CIs and paired comparisons between methods,
the test set's own sampling variance, Holm-Bonferroni over a family of comparisons, and the
smallest difference a comparison could have detected.

Runs are few (3-5 seeds), so intervals use the t distribution, never a normal approximation,
and comparisons pair runs by seed so that shared seed effects (data order, init) cancel.

Two sources of chance: the seed (init, data order, masks), seen as the spread over seeds, and
the test set (a sample of the population of examples), which is the same for every seed and
row and so never shows in that spread. Where runs recorded their per-example outcomes
(bench.core.outcomes) the second is added: the variance of the seed-mean over examples,
estimated from the per-example values (for a paired comparison, per-example differences of two
runs that scored the same examples), less the share the seed spread already holds; the two
are combined with Welch-Satterthwaite degrees of freedom.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE  # family-wise error rate of the claims a report words
POWER = 0.8  # the power at which a report states the smallest detectable difference
MIN_PAIRED_FOR_TEST = 3  # below this a p-value is too unstable to report


@functools.lru_cache(maxsize=4096)  # scipy's ppf costs ~0.3 ms; reports ask for few (df, q)
def t_quantile(df: float, q: float) -> float:
    """Quantile `q` of Student's t with `df` degrees of freedom (e.g. q=0.975 for a 95 % CI)."""
    import scipy.stats  # here, not at import: it costs ~0.5 s of every command's start

    return float(scipy.stats.t.ppf(q, df))


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p of Student's t statistic `t` with `df` degrees of freedom."""
    import scipy.stats

    return float(2 * scipy.stats.t.sf(abs(t), df))


@dataclass(frozen=True)
class ExampleVariance:
    """What sampling the test set adds to the variance of a seed-mean (of a metric, or of a
    difference between two rows): `var` (units of the metric squared) estimated from
    `examples` per-example values."""

    var: float
    examples: int


def example_variance(per_example: ArrayLike) -> ExampleVariance:
    """From `per_example [seeds, N]` (each seed's per-example values, e.g. correctness, or the
    per-example difference of two runs on the same examples): the variance over examples of
    their seed-mean, / N, less the within-example seed variance / (seeds x N) that the seed
    spread already counts (floored at 0: an unbiased variance-components estimate)."""
    x = np.asarray(per_example, dtype=float)
    seeds, n = x.shape
    if n < 2:
        return ExampleVariance(0.0, n)
    between = x.mean(0).var(ddof=1) / n
    within = x.var(0, ddof=1).mean() / (seeds * n) if seeds > 1 else 0.0
    return ExampleVariance(float(max(between - within, 0.0)), n)


def welch_df(v1: float, df1: float, v2: float, df2: float) -> float:
    """Welch-Satterthwaite degrees of freedom of the sum of two variance estimates."""
    terms = (v1 * v1 / df1 if df1 > 0 else 0.0) + (v2 * v2 / df2 if df2 > 0 else 0.0)
    return (v1 + v2) ** 2 / terms if terms > 0 else max(df1, 1.0)


def _variance(std: float, n: int, test: ExampleVariance | None) -> tuple[float, float]:
    """Variance of a seed-mean (seed spread, plus the test set's share) and its df."""
    seed_var = std * std / n
    if test is None or test.var == 0:
        return seed_var, n - 1
    return seed_var + test.var, welch_df(seed_var, n - 1, test.var, test.examples - 1)


def _t_interval(mean: float, std: float, n: int, confidence: float,
                test: ExampleVariance | None = None) -> tuple[float, float]:
    """Two-sided t interval around `mean`; NaN when n < 2 (no spread can be estimated)."""
    if n < 2:
        return math.nan, math.nan
    var, df = _variance(std, n, test)
    half = t_quantile(df, 0.5 + confidence / 2) * math.sqrt(var)
    return mean - half, mean + half


@dataclass(frozen=True)
class Summary:
    """Mean over seeds with sample std (ddof=1) and a Student-t CI; std/CI are NaN when n == 1."""

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def summarize(values: ArrayLike, confidence: float = CONFIDENCE,
              test: ExampleVariance | None = None) -> Summary:
    """Summary of one cell (one method/option set/dataset, all seeds). NaN values propagate,
    and so do infinite ones, without numpy's warnings (inf - inf is NaN: no spread). `test`:
    the test set's share of the variance, added to the seeds' in the CI."""
    arr = np.asarray(values, dtype=float).ravel()
    n = int(arr.size)
    if n == 0:
        return Summary(math.nan, math.nan, 0, math.nan, math.nan)
    with np.errstate(invalid="ignore"):
        mean = float(arr.mean())
        std = float(arr.std(ddof=1)) if n > 1 else math.nan
    low, high = _t_interval(mean, std, n, confidence, test)
    return Summary(mean, std, n, low, high)


@dataclass(frozen=True)
class Paired:
    """Mean of a - b over shared seeds, its t CI and a paired t-test p-value.

    `p_value` is None and `too_few` True when fewer than 3 seeds are shared: say so in the
    report instead of printing a meaningless p. `std`: the spread of the per-seed
    differences; `test`: the test set's share of the variance (None: seed variance only).
    """

    mean_diff: float
    ci_low: float
    ci_high: float
    n: int
    p_value: float | None
    too_few: bool
    seeds: tuple[int, ...]
    std: float = math.nan
    test: ExampleVariance | None = None


def paired_difference(
    a_by_seed: Mapping[int, float],
    b_by_seed: Mapping[int, float],
    confidence: float = CONFIDENCE,
    test: ExampleVariance | None = None,
) -> Paired:
    """Compare a with b on the seeds both have; seeds present in only one are ignored.
    `test`: the test set's share of the variance of the mean difference (`example_variance`
    of the per-example differences on those seeds), added to the seeds' (Welch df)."""
    seeds = tuple(sorted(set(a_by_seed) & set(b_by_seed)))
    a = np.array([a_by_seed[s] for s in seeds], dtype=float)
    b = np.array([b_by_seed[s] for s in seeds], dtype=float)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as in summarize
        diff = a - b
    return contrast_test(diff, seeds, confidence, test)


def contrast_test(values: ArrayLike, seeds: tuple[int, ...], confidence: float = CONFIDENCE,
                  test: ExampleVariance | None = None) -> Paired:
    """A per-seed contrast (a paired difference, or any combination of rows per seed) against
    0: its mean, t CI and two-sided p with the seeds' variance and `test`'s."""
    diff = np.asarray(values, dtype=float)
    n = len(seeds)
    s = summarize(diff, confidence, test)
    if n < MIN_PAIRED_FOR_TEST:
        return Paired(s.mean, s.ci_low, s.ci_high, n, None, True, seeds, s.std, test)
    var, df = _variance(s.std, n, test)
    if not np.isfinite(diff).all():
        p = math.nan  # a diverged run: no test is defined, and scipy would only warn
    elif var == 0:
        # Identical differences: t is infinite (p = 0) or 0/0 (undefined); scipy would only warn.
        p = 0.0 if s.mean != 0 else math.nan
    else:
        p = t_two_sided_p(s.mean / math.sqrt(var), df)
    return Paired(s.mean, s.ci_low, s.ci_high, n, p, False, seeds, s.std, test)


def holm(p_values: Sequence[float | None]) -> list[float]:
    """Holm-Bonferroni adjusted p-values of one family, in the given order: the i-th smallest
    of the m valid ones times (m - i + 1), made monotone, capped at 1. A claim is made where
    the adjusted p is below ALPHA: the chance of any false claim in the family is then at
    most ALPHA, whatever the dependence between the tests. None / NaN (no test) stay NaN and
    do not count in m."""
    valid = [(p, i) for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(valid)):
        running = max(running, min(1.0, (len(valid) - rank) * p))
        out[i] = running
    return out


def t_test_power(shift: float, df: float, level: float) -> float:
    """Power of a two-sided t-test at `level` with `df` degrees of freedom when the true
    difference is `shift` standard errors: the probability that the noncentral t (noncentrality
    `shift`) falls beyond either critical value."""
    import scipy.stats

    crit = t_quantile(df, 1 - level / 2)  # the lower tail by symmetry: nct.cdf is NaN far out
    return float(scipy.stats.nct.sf(crit, df, shift) + scipy.stats.nct.sf(crit, df, -shift))


def detectable_difference(std: float, n: int, test: ExampleVariance | None = None,
                          family: int = 1, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true difference a two-sided paired t-test at level alpha / family (the
    first step of Holm's procedure over `family` tests: the level one true effect among nulls
    must pass) finds with probability `power`, at `n` seeds with per-seed spread `std` and the
    test set's variance `test`: the noncentrality at which the noncentral t reaches `power`
    (`t_test_power`), times the standard error. The shortcut (t_{1 - a/2} + t_power) x SE
    overstates the power (72-77 % instead of 80 % at 5 seeds and a family of 10-20)."""
    if n < 2 or math.isnan(std):
        return math.nan
    import scipy.optimize

    var, df = _variance(std, n, test)
    level = alpha / family
    if var == 0:
        return 0.0
    high = t_quantile(df, 1 - level / 2) + t_quantile(df, power)  # the shortcut: a bracket
    while t_test_power(high, df, level) < power:
        high *= 2
    shift = scipy.optimize.brentq(lambda s: t_test_power(s, df, level) - power, 0.0, high,
                                  xtol=1e-10)
    return shift * math.sqrt(var)


class _Interval(Protocol):
    @property
    def ci_low(self) -> float: ...

    @property
    def ci_high(self) -> float: ...


def cis_overlap(a: _Interval, b: _Interval) -> bool:
    """Whether two CIs overlap; a missing (NaN) CI counts as overlapping, so nothing is bolded
    on a single seed. Bold a best cell only when this is False against the runner-up."""
    bounds = (a.ci_low, a.ci_high, b.ci_low, b.ci_high)
    if any(math.isnan(x) for x in bounds):
        return True
    return a.ci_low <= b.ci_high and b.ci_low <= a.ci_high
