"""Seed statistics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from bench.report.stats import (
    ExampleVariance,
    Summary,
    cis_overlap,
    detectable_difference,
    paired_difference,
    summarize,
    t_quantile,
    welch_df,
)

T_975_3 = 3.182446305284263  # t_{0.975, 3} from tables


def test_t_quantile_matches_table():
    assert t_quantile(3, 0.975) == pytest.approx(T_975_3, rel=1e-9)
    assert t_quantile(10_000, 0.975) == pytest.approx(1.96, abs=1e-3)


def test_summarize_four_values():
    s = summarize([1, 2, 3, 4])
    std = math.sqrt(5 / 3)  # squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, ddof=1
    half = T_975_3 * std / math.sqrt(4)
    assert (s.mean, s.n) == (2.5, 4)
    assert s.std == pytest.approx(std, rel=1e-12)
    assert s.ci_low == pytest.approx(2.5 - half, rel=1e-9)
    assert s.ci_high == pytest.approx(2.5 + half, rel=1e-9)
    assert s.half_width == pytest.approx(half, rel=1e-9)


def test_summarize_one_seed_has_no_spread():
    s = summarize([0.7])
    assert (s.mean, s.n) == (0.7, 1)
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)


def test_summarize_empty():
    s = summarize([])
    assert s.n == 0 and math.isnan(s.mean)


def test_paired_difference_known_case():
    # Differences on shared seeds 0-3: 1, 2, 1, 3. Seed 7 (only in b) is ignored.
    a = {0: 10.0, 1: 12.0, 2: 11.0, 3: 15.0}
    b = {0: 9.0, 1: 10.0, 2: 10.0, 3: 12.0, 7: 100.0}
    p = paired_difference(a, b)
    sd = math.sqrt(2.75 / 3)  # squared deviations from 1.75: 0.5625 + 0.0625 + 0.5625 + 1.5625
    se = sd / 2
    t = 1.75 / se
    # Student t with 3 df has a closed-form CDF: two-sided p = 1 - 2/pi * (x/(1+x^2) + atan x)
    x = t / math.sqrt(3)
    p_hand = 1 - 2 / math.pi * (x / (1 + x * x) + math.atan(x))
    assert (p.n, p.seeds, p.too_few) == (4, (0, 1, 2, 3), False)
    assert p.mean_diff == pytest.approx(1.75)
    assert p.ci_low == pytest.approx(1.75 - T_975_3 * se, rel=1e-9)
    assert p.ci_high == pytest.approx(1.75 + T_975_3 * se, rel=1e-9)
    assert p.p_value == pytest.approx(p_hand, rel=1e-9)


def test_paired_difference_too_few_seeds_has_no_p_value():
    p = paired_difference({0: 1.0, 1: 2.0, 5: 3.0}, {0: 0.5, 1: 1.0})
    assert (p.n, p.p_value, p.too_few) == (2, None, True)
    assert p.mean_diff == pytest.approx(0.75)
    one = paired_difference({0: 1.0}, {0: 0.5})
    assert one.too_few and one.p_value is None and math.isnan(one.ci_low)
    none = paired_difference({0: 1.0}, {1: 0.5})
    assert none.n == 0 and none.too_few


def test_paired_difference_identical_differences():
    p = paired_difference({0: 2.0, 1: 3.0, 2: 4.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert p.p_value == 0.0 and p.ci_low == p.ci_high == 1.0


def _ci(low: float, high: float) -> Summary:
    return Summary((low + high) / 2, math.nan, 3, low, high)


def test_cis_overlap():
    assert not cis_overlap(_ci(0.80, 0.82), _ci(0.75, 0.79))
    assert cis_overlap(_ci(0.80, 0.82), _ci(0.78, 0.80))
    assert cis_overlap(_ci(0.78, 0.90), _ci(0.80, 0.82))
    assert cis_overlap(summarize([0.9]), _ci(0.1, 0.2))  # one seed: never "clearly best"


def test_infinite_values_propagate_without_warnings():
    """A diverged run (inf) gives inf or NaN, never numpy's or scipy's RuntimeWarning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summarize([1.0, math.inf, 2.0])
        p = paired_difference({0: math.inf, 1: 1.0, 2: 2.0}, {0: math.inf, 1: 0.0, 2: 0.5})
        q = paired_difference({0: math.inf, 1: 1.0, 2: 2.0}, {0: 1.0, 1: 0.0, 2: 0.5})
    assert s.mean == math.inf and math.isnan(s.std) and math.isnan(s.ci_low)
    assert math.isnan(p.mean_diff) and math.isnan(p.p_value) and not p.too_few
    assert q.mean_diff == math.inf and math.isnan(q.p_value)


# (seeds, family) a report meets: 3 to 8 seeds, families of 1 to 10 tests.
POWER_CASES = [(3, 1), (5, 1), (8, 10), (10, 5), (30, 1)]


@pytest.mark.parametrize("n, family", POWER_CASES)
def test_detectable_difference_is_statsmodels_exact_power(n, family):
    """The smallest difference a two-sided paired t-test at 5 %/family detects with 80 %
    power, per unit of per-seed spread, is the effect size statsmodels' TTestPower solves for
    (noncentral t, both tails). The shortcut (t_{1-a/2} + t_power) x SE it replaced is 3-7 %
    too small at these n (1.741 instead of 1.805 at 8 seeds, a family of 10)."""
    from statsmodels.stats.power import TTestPower

    alpha = 0.05 / family
    effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=0.8,
                                      alternative="two-sided")
    assert TTestPower().power(effect, n, alpha) == pytest.approx(0.8, abs=1e-6)  # solved
    assert detectable_difference(2.0, n, None, family) == pytest.approx(2.0 * effect, rel=1e-6)


@pytest.mark.parametrize("n, family", [(5, 10), (5, 20), (3, 32)])
def test_detectable_difference_has_80_percent_power_where_statsmodels_fails(n, family):
    """At small n and large families (the reference's 5 seeds, 10-32 tests) statsmodels'
    solver stops short (its nct.cdf lower tail is NaN far out); the difference found still
    has exactly 80 % power, and more than the shortcut's 71-73 %."""
    from bench.report.stats import t_test_power

    std = 1.5
    found = detectable_difference(std, n, None, family)
    se = std / math.sqrt(n)
    assert t_test_power(found / se, n - 1, 0.05 / family) == pytest.approx(0.8, abs=1e-9)
    shortcut = t_quantile(n - 1, 1 - 0.025 / family) + t_quantile(n - 1, 0.8)
    assert t_test_power(shortcut, n - 1, 0.05 / family) < 0.75


def test_power_with_the_test_sets_variance_uses_welch_df():
    """With the test set's share of the variance the power is that of the Welch df, at the
    combined standard error."""
    from bench.report.stats import t_test_power

    test = ExampleVariance(var=0.0004, examples=2000)
    found = detectable_difference(0.02, 5, test, 10)
    var = 0.02 ** 2 / 5 + test.var
    df = welch_df(0.02 ** 2 / 5, 4, test.var, 1999)
    assert t_test_power(found / math.sqrt(var), df, 0.005) == pytest.approx(0.8, abs=1e-9)
