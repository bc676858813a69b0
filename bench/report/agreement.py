"""Do the protocols rank the strategies alike? Per section, Kendall's tau between the
orderings of the strategies (not the reference rows) by the cell means of two protocols,
with the caveat of n: with n strategies tau takes few values, and a one-sided permutation
p-value (the share of the n! orderings that agree at least as well) says how often chance
alone would agree as much (n = 3: identical orders 1 time in 6)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.report.metrics import metric_info, metric_order
from bench.report.stats import MIN_PAIRED_FOR_TEST
from bench.report.tables import Cell, Table

RANKED_GROUPS = ("accuracy", "dense", "fewshot", "layers")
MAX_PERMUTED = 8  # strategies up to which the permutation p-value is exact (8! orders)
BASE = "linear_top1"  # what each protocol table's ranking is set against
# When an ordering means something: enough strategies that chance rarely orders them alike
# (with 4, identical orders arise 1 time in 24), each cell with enough seeds that its mean is
# more than one draw. Below either, no agreement is shown.
MIN_STRATEGIES = 5
MIN_SEEDS = MIN_PAIRED_FOR_TEST
RULE = (f"protocol agreement is shown only for at least {MIN_STRATEGIES} strategies with at "
        f"least {MIN_SEEDS} seeds each (with {MIN_STRATEGIES - 1}, identical orders already "
        f"arise by chance 1 time in {math.factorial(MIN_STRATEGIES - 1)}), and it is "
        "exploratory: orderings of cell means, not claims tested in the verdict's family")


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either ordering count as neither agreement nor disagreement);
    NaN when either ordering is all ties."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    i, j = np.triu_indices(len(a), 1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    denom = math.sqrt(np.count_nonzero(da) * np.count_nonzero(db))
    return float((da * db).sum() / denom) if denom else math.nan


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """P(tau >= the observed tau) over every reordering of `b`; NaN above MAX_PERMUTED."""
    if len(a) > MAX_PERMUTED:
        return math.nan
    observed = kendall_tau(a, b)
    taus = [kendall_tau(a, p) for p in itertools.permutations(b)]
    return float(np.mean([t >= observed - 1e-12 for t in taus]))


def ranked_metrics(metrics: Sequence[str]) -> list[str]:
    """The protocols whose values rank strategies: higher is better, in a ranked group
    (accuracy, dense, few-shot, and the per-layer probe at its validation-chosen layer)."""
    def ranks(m: str) -> bool:
        info = metric_info(m)
        if info.group == "layers":  # each layer is a view of depth, not a protocol of its own
            return m == "linear_layer_best_top1"
        return info.higher_is_better is True and info.group in RANKED_GROUPS

    return [m for g in RANKED_GROUPS for m in metric_order(metrics, g) if ranks(m)]


def _means(stats: pd.DataFrame, metric: str) -> pd.Series:
    """The strategies' cell means of `metric`, of the cells with at least MIN_SEEDS seeds."""
    rows = stats[(stats.metric == metric) & ~stats.is_reference & stats["mean"].notna()
                 & (stats.n >= MIN_SEEDS)]
    return rows.set_index("label")["mean"]


def pair_agreement(stats: pd.DataFrame, a: str, b: str) -> tuple[float, float, int]:
    """(tau, permutation p, n) of the strategies both metrics have in `stats` (one section)
    with at least MIN_SEEDS seeds; tau and p NaN below MIN_STRATEGIES of them."""
    ma, mb = _means(stats, a), _means(stats, b)
    shared = [label for label in ma.index if label in mb.index]
    if len(shared) < MIN_STRATEGIES:
        return math.nan, math.nan, len(shared)
    x, y = ma[shared].to_numpy(), mb[shared].to_numpy()
    return kendall_tau(x, y), permutation_p(x, y), len(shared)


def describe(tau: float, p: float, n: int) -> str:
    if math.isnan(tau):
        return f"no ranking to compare (n = {n})"
    word = ("the same order" if tau == 1 else "the reverse order" if tau == -1
            else "mostly the same order" if tau > 0 else "mostly different orders"
            if tau < 0 else "no association")
    chance = "" if math.isnan(p) else f", chance agreement at least this good p = {p:.2g}"
    return f"τ = {tau:+.2f} ({word}; n = {n} strategies{chance})"


def against_base(stats: pd.DataFrame, metric: str) -> str:
    """One sentence: `metric`'s ranking of the strategies against the linear probe's, where
    there are enough strategies and seeds (RULE); else nothing."""
    if BASE not in set(stats.metric) or metric == BASE:
        return ""
    tau, p, n = pair_agreement(stats, metric, BASE)
    if math.isnan(tau):
        return ""
    return (f"Exploratory: the ranking of the strategies by {metric_info(metric).title} against "
            f"{metric_info(BASE).title}: {describe(tau, p, n)}.")


def agreement_table(stats: pd.DataFrame, metrics: Sequence[str], title: str
                    ) -> tuple[Table | None, str]:
    """Every pair of the section's ranked protocols: tau, p and n; and a one-line statement
    of whether they agree."""
    ranked = ranked_metrics(metrics)
    pairs = [(a, b, *pair_agreement(stats, a, b)) for a, b in itertools.combinations(ranked, 2)]
    found = max((p[4] for p in pairs), default=0)
    pairs = [p for p in pairs if not math.isnan(p[2])]
    if not pairs:
        what = ("fewer than two protocols ranked" if len(ranked) < 2 else
                f"at most {found} strategies have {MIN_SEEDS} seeds in two protocols")
        return None, f"Agreement between protocols is not shown ({what}): {RULE}."
    rows = [[Cell(f"{metric_info(a).title} vs {metric_info(b).title}"), Cell(f"{tau:+.2f}"),
             Cell("–" if math.isnan(p) else f"{p:.2g}"), Cell(str(n))]
            for a, b, tau, p, n in pairs]
    taus = [tau for _, _, tau, _, _ in pairs]
    same, partly = sum(t == 1 for t in taus), sum(0 < t < 1 for t in taus)
    n = max(p[4] for p in pairs)
    verdict = ("every pair ranks them alike" if same == len(pairs) else
               f"{partly} mostly alike (0 < τ < 1), {len(pairs) - same - partly} not (τ ≤ 0)")
    statement = (f"Exploratory: do the protocols agree? {same} of {len(pairs)} protocol pairs "
                 f"rank the {n} strategies in the same order (τ = 1); {verdict}. With n = {n} "
                 f"strategies identical orders arise by chance with probability "
                 f"1/{math.factorial(n)}, and τ moves in steps of {4 / (n * (n - 1)):.2g}; "
                 f"{RULE}.")
    table = Table(title, ["protocols", "Kendall τ", "p (permutation, one-sided)", "n"], rows,
                  "Kendall's tau-b between the orderings of the strategies (reference rows "
                  "excluded) by the cell means of two protocols; p: share of all orderings that "
                  "agree at least as well (exact up to 8 strategies).")
    return table, statement
