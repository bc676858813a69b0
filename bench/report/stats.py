"""Seed statistics for reports: means with Student-t CIs and paired comparisons between methods.

Runs are few (3-5 seeds), so intervals use the t distribution, never a normal approximation,
and comparisons pair runs by seed so that shared seed effects (data order, init) cancel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

CONFIDENCE = 0.95
MIN_PAIRED_FOR_TEST = 3  # below this a p-value is too unstable to report


@functools.lru_cache(maxsize=4096)  # scipy's ppf costs ~0.3 ms; reports ask for few (df, q)
def t_quantile(df: float, q: float) -> float:
    """Quantile `q` of Student's t with `df` degrees of freedom (e.g. q=0.975 for a 95 % CI)."""
    import scipy.stats  # here, not at import: it costs ~0.5 s of every command's start

    return float(scipy.stats.t.ppf(q, df))


def _t_interval(mean: float, std: float, n: int, confidence: float) -> tuple[float, float]:
    """Two-sided t interval around `mean`; NaN when n < 2 (no spread can be estimated)."""
    if n < 2:
        return math.nan, math.nan
    half = t_quantile(n - 1, 0.5 + confidence / 2) * std / math.sqrt(n)
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


def summarize(values: ArrayLike, confidence: float = CONFIDENCE) -> Summary:
    """Summary of one cell (one method/option set/dataset, all seeds). NaN values propagate,
    and so do infinite ones, without numpy's warnings (inf - inf is NaN: no spread)."""
    arr = np.asarray(values, dtype=float).ravel()
    n = int(arr.size)
    if n == 0:
        return Summary(math.nan, math.nan, 0, math.nan, math.nan)
    with np.errstate(invalid="ignore"):
        mean = float(arr.mean())
        std = float(arr.std(ddof=1)) if n > 1 else math.nan
    low, high = _t_interval(mean, std, n, confidence)
    return Summary(mean, std, n, low, high)


@dataclass(frozen=True)
class Paired:
    """Mean of a - b over shared seeds, its t CI and a paired t-test p-value.

    `p_value` is None and `too_few` True when fewer than 3 seeds are shared: say so in the
    report instead of printing a meaningless p.
    """

    mean_diff: float
    ci_low: float
    ci_high: float
    n: int
    p_value: float | None
    too_few: bool
    seeds: tuple[int, ...]


def paired_difference(
    a_by_seed: Mapping[int, float],
    b_by_seed: Mapping[int, float],
    confidence: float = CONFIDENCE,
) -> Paired:
    """Compare a with b on the seeds both have; seeds present in only one are ignored."""
    seeds = tuple(sorted(set(a_by_seed) & set(b_by_seed)))
    a = np.array([a_by_seed[s] for s in seeds], dtype=float)
    b = np.array([b_by_seed[s] for s in seeds], dtype=float)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as in summarize
        diff = a - b
    n = len(seeds)
    s = summarize(diff, confidence)
    if n < MIN_PAIRED_FOR_TEST:
        return Paired(s.mean, s.ci_low, s.ci_high, n, None, True, seeds)
    if not np.isfinite(diff).all():
        p = math.nan  # a diverged run: no test is defined, and scipy would only warn
    elif np.ptp(diff) == 0:
        # Identical differences: t is infinite (p = 0) or 0/0 (undefined); scipy would only warn.
        p = 0.0 if s.mean != 0 else math.nan
    else:
        import scipy.stats

        p = float(scipy.stats.ttest_rel(a, b).pvalue)
    return Paired(s.mean, s.ci_low, s.ci_high, n, p, False, seeds)


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
