"""Seed statistics per cell, paired comparisons against a baseline, accuracy at equal compute,
read with the metric catalogue (bench/report/metrics.py) and rendered by bench/report/tables.py.

A cell is one (dataset, encoder, method, option set, variant) over its seeds; the variant holds
the other settings that differ between runs (bench/report/provenance.py, canonical JSON), so runs that
differ in anything but the seed are never pooled. Values are the final epoch's, always.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.core.outcomes import Outcome
from bench.core.references import REFERENCE_ROWS
from bench.report.metrics import CELL, SECTION, judged_metrics
from bench.report.stats import (
    ExampleVariance,
    Summary,
    example_variance,
    paired_difference,
    summarize,
)

# ---------------------------------------------------------------------------------------------
# Rows: cells, their labels and their order


def dedupe_runs(ok: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep one run per (cell, seed): the same configuration found in several results folders
    would otherwise count twice. Returns the table and how many runs were dropped."""
    runs = ok.drop_duplicates("run_dir").sort_values("run_dir")
    keep = runs.drop_duplicates([*CELL, "seed"]).run_dir
    return ok[ok.run_dir.isin(set(keep))], len(runs) - len(keep)


def _options_sort_key(options: dict[str, Any]) -> tuple:
    return tuple((k, isinstance(v, str), v if isinstance(v, str | int | float) else str(v))
                 for k, v in sorted(options.items()))


def usual_settings(ok: pd.DataFrame) -> dict[tuple[str, str], dict[str, str]]:
    """Per section, the most common value (ties: the smallest) of each setting that differs
    between its runs: rows are labelled only with where they depart from it."""
    runs = ok.drop_duplicates("run_dir")
    out: dict[tuple[str, str], dict[str, str]] = {}
    for section, group in runs.groupby(list(SECTION), sort=False):
        counts: dict[str, dict[str, int]] = {}
        for variant in group.variant:
            for key, value in json.loads(variant).items():
                counts.setdefault(key, {}).setdefault(value, 0)
                counts[key][value] += 1
        out[section] = {k: min(c, key=lambda v: (-c[v], v))
                        for k, c in sorted(counts.items()) if len(c) > 1}
    return out


def row_labels(ok: pd.DataFrame, baseline: str,
               option_defaults: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per cell: CELL columns, `label` (method, then the options that differ between
    its option sets in the section or from the method's `option_defaults`, then in brackets
    the settings that depart from the section's usual ones), `is_reference`, in table order:
    baseline, other methods, reference rows."""
    cells = ok[list(CELL)].drop_duplicates().reset_index(drop=True)
    parsed = {o: json.loads(o) for o in cells.options.unique()}
    usual = usual_settings(ok)
    labels, keys = [], []
    for row in cells.itertuples(index=False):
        same = cells[(cells.dataset == row.dataset) & (cells.encoder == row.encoder)
                     & (cells.method == row.method)]
        opts = parsed[row.options]
        defaults = (option_defaults or {}).get(row.method, {})
        differing = sorted(
            k for k in opts
            if len({json.dumps(parsed[o].get(k), sort_keys=True) for o in same.options}) > 1
            or (k in defaults and defaults[k] != opts[k])
        )
        parts = [row.method, *(f"{k}={opts[k]}" for k in differing)]
        common = usual[(row.dataset, row.encoder)]
        departs = [f"{k}={v}" for k, v in json.loads(row.variant).items()
                   if k in common and common[k] != v]
        if departs:
            parts.append(f"[{' '.join(departs)}]")
        labels.append(" ".join(parts))
        rank = 0 if row.method == baseline else 2 if row.method in REFERENCE_ROWS else 1
        ref_rank = list(REFERENCE_ROWS).index(row.method) if rank == 2 else 0
        keys.append((rank, ref_rank, row.method, _options_sort_key(opts), row.variant))
    cells["label"] = labels
    cells["is_reference"] = cells.method.isin(REFERENCE_ROWS)
    order = sorted(range(len(cells)), key=lambda i: (cells.dataset[i], cells.encoder[i], keys[i]))
    return cells.iloc[order].reset_index(drop=True)


def sections(cells: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(cells.dataset, cells.encoder)))


# ---------------------------------------------------------------------------------------------
# Statistics


def summary_of(row: Any) -> Summary:
    return Summary(row.mean, row.std, int(row.n), row.ci_low, row.ci_high)


# A run folder -> its per-example outcomes by metric (bench.core.outcomes; {} when none).
Outcomes = Callable[[str], Mapping[str, Outcome]]


def no_outcomes(run_dir: str) -> Mapping[str, Outcome]:
    return {}


def cell_key(row: Any) -> tuple:
    return tuple(getattr(row, k) for k in CELL)


def seed_runs(ok: pd.DataFrame) -> dict[tuple, dict[int, str]]:
    """Per cell, its run folder of each seed."""
    out: dict[tuple, dict[int, str]] = {}
    runs = ok.drop_duplicates("run_dir")
    for *cell, seed, run_dir in zip(*(runs[k] for k in (*CELL, "seed", "run_dir"))):
        out.setdefault(tuple(cell), {})[seed] = run_dir
    return out


def seed_values(ok: pd.DataFrame) -> dict[tuple, dict[int, float]]:
    """(cell, metric) -> {seed: value}."""
    by_seed: dict[tuple, dict[int, float]] = {}
    for *cell, metric, seed, value in zip(*(ok[k] for k in (*CELL, "metric", "seed", "value"))):
        by_seed.setdefault((tuple(cell), metric), {})[seed] = value
    return by_seed


def per_example(run_dirs: Sequence[str], metric: str, outcomes: Outcomes) -> np.ndarray | None:
    """`[runs, N]`: the runs' per-example scores of `metric`, or None unless every run recorded
    them on the same examples."""
    found = [outcomes(d).get(metric) for d in run_dirs]
    if not found or any(o is None for o in found):
        return None
    if len({(o.key, len(o.scores)) for o in found}) != 1:
        return None
    return np.stack([o.scores for o in found])


def contrast_variance(terms: Sequence[tuple[float, Sequence[str]]], metric: str,
                      outcomes: Outcomes) -> ExampleVariance | None:
    """The test set's share of the variance of a per-seed contrast sum_k c_k x_k(seed) (a
    cell: one term; a paired difference: +1, -1), from the per-example scores of each term's
    runs (one per shared seed, in seed order); None unless every run scored the same
    examples."""
    total = None
    key = None
    for coef, runs in terms:
        x = per_example(runs, metric, outcomes)
        if x is None:
            return None
        this = (outcomes(runs[0])[metric].key, x.shape)
        if key is not None and this != key:
            return None
        key = this
        total = coef * x if total is None else total + coef * x
    return None if total is None else example_variance(total)


def cell_stats(ok: pd.DataFrame, cells: pd.DataFrame,
               outcomes: Outcomes = no_outcomes) -> pd.DataFrame:
    """Mean, std, n and Student-t CI of every cell x metric: CELL + label + is_reference +
    metric, mean, std, n, ci_low, ci_high (unscaled units), test_var and test_examples (the
    test set's share of the variance where the runs recorded per-example outcomes, then in
    the CI; NaN / 0 where not), and median, min and max over seeds (what a machine figure,
    such as throughput, is shown as)."""
    runs = seed_runs(ok)
    rows = []
    for key, group in ok.groupby([*CELL, "metric"], sort=False):
        cell, metric = tuple(key[:-1]), key[-1]
        seeds = sorted(group.seed)
        test = contrast_variance([(1.0, [runs[cell][s] for s in seeds])], metric, outcomes)
        values = group.sort_values("seed").value.to_numpy()
        s = summarize(values, test=test)
        rows.append((*key, s.mean, s.std, s.n, s.ci_low, s.ci_high,
                     math.nan if test is None else test.var, 0 if test is None else test.examples,
                     float(np.median(values)), float(values.min()), float(values.max())))
    stats = pd.DataFrame(rows, columns=[*CELL, "metric", "mean", "std", "n", "ci_low", "ci_high",
                                        "test_var", "test_examples", "median", "min", "max"])
    return cells.merge(stats, on=list(CELL), how="inner")


def baseline_cells(cells: pd.DataFrame, ok: pd.DataFrame, baseline: str) -> dict[tuple, Any]:
    """Per section, the baseline cell: the baseline method's cell with the most seeds (ties:
    first in table order). Sections without the baseline have none."""
    seeds = ok.groupby(list(CELL)).seed.nunique()
    out: dict[tuple, Any] = {}
    for row in cells[cells.method == baseline].itertuples(index=False):
        section = (row.dataset, row.encoder)
        n = seeds[tuple(getattr(row, k) for k in CELL)]
        if section not in out or n > out[section][1]:
            out[section] = (row, n)
    return {k: row for k, (row, _) in out.items()}


PAIRED_COLUMNS = [*CELL, "label", "baseline", "baseline_method", "metric", "mean_diff", "ci_low", "ci_high", "n",
                  "p_value", "too_few", "seeds", "seed_sd", "test_var", "test_examples"]


def paired_rows(ok: pd.DataFrame, pairs: Sequence[tuple[Any, Any]],
                outcomes: Outcomes = no_outcomes, metrics: Sequence[str] | None = None
                ) -> pd.DataFrame:
    """Each (row, other) cell pair: row minus other per accuracy metric (or `metrics`) on the
    seeds both have: mean difference, its t CI and p (None when n < 3), with the test set's
    share of the variance where both recorded per-example outcomes on the same examples
    (PAIRED_COLUMNS)."""
    by_seed, runs = seed_values(ok), seed_runs(ok)
    rows = []
    for row, b in pairs:
        mine, theirs = cell_key(row), cell_key(b)
        present = [m for c, m in by_seed if c == mine]
        chosen = ([m for m in metrics if m in present] if metrics is not None
                  else judged_metrics(present))
        for metric in chosen:
            a_seeds, b_seeds = by_seed[mine, metric], by_seed.get((theirs, metric), {})
            shared = sorted(set(a_seeds) & set(b_seeds))
            test = contrast_variance([(1.0, [runs[mine][s] for s in shared]),
                                      (-1.0, [runs[theirs][s] for s in shared])], metric,
                                     outcomes) if shared else None
            p = paired_difference(a_seeds, b_seeds, test=test)
            rows.append((*mine, row.label, b.label, b.method, metric, p.mean_diff, p.ci_low, p.ci_high,
                         p.n, p.p_value, p.too_few, " ".join(map(str, p.seeds)), p.std,
                         math.nan if test is None else test.var,
                         0 if test is None else test.examples))
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def paired_stats(ok: pd.DataFrame, cells: pd.DataFrame, baseline: str,
                 outcomes: Outcomes = no_outcomes) -> pd.DataFrame:
    """Every non-baseline cell minus its section's baseline cell, per judged metric, on the
    seeds both have (`paired_rows`); bench.report.family adjusts them in the section's one
    family."""
    base = baseline_cells(cells, ok, baseline)
    pairs = [(row, b) for row in cells.itertuples(index=False)
             if (b := base.get((row.dataset, row.encoder))) is not None and b != row]
    return paired_rows(ok, pairs, outcomes)


# ---------------------------------------------------------------------------------------------
# Accuracy at equal pretraining compute


@dataclass(frozen=True)
class ComputeAxis:
    """A pretraining-compute axis: its name, what it measures, title, column in
    `compute_curves`, the factor from that column to `unit`, and whether values are written
    with SI prefixes."""

    name: str
    noun: str
    title: str
    column: str
    factor: float
    unit: str
    prefixed: bool

    def text(self, value: float) -> str:
        """`value` (in `unit`) as a reader wants it: '2.1 GFLOP', '3.5 s'."""
        return engineering(value, self.unit) if self.prefixed else f"{value:.3g} {self.unit}"

    def budget_value(self, budget: float) -> str:
        """A budget in the column's units, written in `unit`: '2.1 GFLOP'."""
        return self.text(budget * self.factor)

    def budget_text(self, budget: float) -> str:
        """A budget in the column's units, e.g. 'at 2.1 GFLOP of pretraining'."""
        return f"at {self.budget_value(budget)} of pretraining"


COMPUTE_AXES = (
    ComputeAxis("flops", "FLOPs", "pretraining compute (FLOP)", "pflops", 1e15, "FLOP", True),
    ComputeAxis("time", "time", "pretraining time (s)", "train_s", 1.0, "s", False),
)
_SI_PREFIXES = {-4: "p", -3: "n", -2: "µ", -1: "m", 0: "", 1: "k", 2: "M", 3: "G", 4: "T",
                5: "P", 6: "E", 7: "Z", 8: "Y"}


def si_prefix(value: float) -> tuple[float, str]:
    """The power of 1000 and SI prefix to write `value` with: 2.1e9 -> (1e9, 'G')."""
    if value == 0 or not math.isfinite(value):
        return 1.0, ""
    power = math.floor(math.log10(abs(value)) / 3)
    if abs(float(f"{value / 10.0 ** (3 * power):.3g}")) >= 1000:  # 999.7e3 -> 1 M, not 1e3 k
        power += 1
    power = min(max(power, min(_SI_PREFIXES)), max(_SI_PREFIXES))
    return 10.0 ** (3 * power), _SI_PREFIXES[power]


def engineering(value: float, unit: str) -> str:
    """`value` with an SI prefix and 3 significant digits: 2.1e9 FLOP -> '2.1 GFLOP'."""
    factor, prefix = si_prefix(value)
    return f"{value / factor:.3g} {prefix}{unit}"


POINT_COLUMNS = ["run_dir", "epoch", "value", "pflops", "train_s"]


def compute_curves(ok: pd.DataFrame, curve: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per run and epoch: `metric` with the pretraining compute spent so far. Points are the
    periodic evaluations of metrics.jsonl plus the final value at the last epoch. Cumulative
    FLOPs = FLOPs/sample x samples seen (samples/s x pretraining s, spread evenly over
    epochs); cumulative time = pretraining s x epoch / epochs. Reference rows spend nothing."""
    wide = ok[ok.metric.isin([metric, *[f"compute.{c}" for c in
                                        ("pretrain_flops_per_sample", "train_samples_per_s",
                                         "train_s", "wall_s")]])]
    wide = wide.pivot_table(index="run_dir", columns="metric", values="value", aggfunc="first")
    if metric not in wide or "compute.pretrain_flops_per_sample" not in wide:
        return pd.DataFrame(columns=POINT_COLUMNS)
    runs = ok.drop_duplicates("run_dir").set_index("run_dir")
    epochs = runs.epochs.astype("float64").reindex(wide.index)
    seconds = pd.Series(np.nan, index=wide.index)
    for column in ("compute.train_s", "compute.wall_s"):  # wall_s: runs that predate train_s
        if column in wide:
            seconds = seconds.fillna(wide[column])
    samples = (wide.get("compute.train_samples_per_s", 0.0) * seconds).fillna(0.0)
    total_pflops = wide["compute.pretrain_flops_per_sample"] * samples / 1e15
    final = pd.DataFrame({"run_dir": wide.index, "epoch": epochs.fillna(0.0).to_numpy(),
                          "value": wide[metric].to_numpy()})
    points = [final]
    if not curve.empty:
        periodic = curve[(curve.metric == metric) & curve.run_dir.isin(set(wide.index))]
        points.append(periodic[["run_dir", "epoch", "value"]].astype({"epoch": "float64"}))
    out = pd.concat(points, ignore_index=True).dropna(subset=["value"])
    out = out.drop_duplicates(["run_dir", "epoch"], keep="first")
    frac = (out.epoch / out.run_dir.map(epochs)).where(out.run_dir.map(epochs) > 0, 0.0)
    out["pflops"] = frac * out.run_dir.map(total_pflops).fillna(0.0)
    out["train_s"] = frac * out.run_dir.map(seconds).fillna(0.0)
    return out.sort_values(["run_dir", "epoch"]).reset_index(drop=True)


def values_at(points: pd.DataFrame, column: str, budget: pd.Series) -> pd.Series:
    """Per run (index of `budget`): `value` linearly interpolated at its budget along its
    points (sorted by run, then by compute); NaN where its points do not reach the budget."""
    b = points.run_dir.map(budget)
    below = points[points[column] <= b].groupby("run_dir").tail(1).set_index("run_dir")
    above = points[points[column] >= b].groupby("run_dir").head(1).set_index("run_dir")
    lo_x, lo_y = below[column].reindex(budget.index), below.value.reindex(budget.index)
    hi_x, hi_y = above[column].reindex(budget.index), above.value.reindex(budget.index)
    span = hi_x - lo_x
    frac = ((budget - lo_x) / span).where(span > 0, 0.0)
    return lo_y + frac * (hi_y - lo_y)


MATCHED_COLUMNS = [*SECTION, "label", "axis", "budget", "metric", "mean", "std", "n", "ci_low",
                   "ci_high"]
GAP_COLUMNS = [*SECTION, "axis", "budget", "without", "runs"]


def compute_matched(points: pd.DataFrame, ok: pd.DataFrame, cells: pd.DataFrame,
                    metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per section and compute axis: the largest budget every pretrained run reached (the
    smallest final compute), and each cell's `metric` there, interpolated along each run's
    curve, summarised over seeds (MATCHED_COLUMNS).

    Only where every pretrained run of the section has a value at the budget: a run whose
    first evaluation lies beyond it has none (nothing is extrapolated), and a view where only
    the cheapest runs have values would crown them. Those (section, axis) pairs are returned
    apart (GAP_COLUMNS: budget, runs without a value, pretrained runs), so the report can say
    why the view is absent: evaluate more often (--eval-every)."""
    if points.empty:
        return pd.DataFrame(columns=MATCHED_COLUMNS), pd.DataFrame(columns=GAP_COLUMNS)
    run_cell = ok.drop_duplicates("run_dir").set_index("run_dir")[list(CELL)]
    pts = points[~points.run_dir.map(run_cell.method).isin(REFERENCE_ROWS)]
    if pts.empty:  # only reference rows: nothing was pretrained, no budget to match
        return pd.DataFrame(columns=MATCHED_COLUMNS), pd.DataFrame(columns=GAP_COLUMNS)
    labels = cells.set_index(list(CELL)).label
    rows, gaps = [], []
    for axis in COMPUTE_AXES:
        runs = run_cell.join(pts.groupby("run_dir")[axis.column].max().rename("reached"),
                             how="inner")
        budget = runs.groupby(list(SECTION)).reached.transform("min")
        usable = runs.groupby(list(SECTION)).reached.transform(lambda r: (r > 0).all())
        runs = runs[usable.astype(bool)].assign(budget=budget)
        runs["value"] = values_at(pts, axis.column, runs.budget)
        for section, sec in runs.groupby(list(SECTION)):  # sorted, as the rows are
            without = int(sec.value.isna().sum())
            if without:
                gaps.append((*section, axis.name, sec.budget.iloc[0], without, len(sec)))
                continue
            by_cell = dict(list(sec.groupby(list(CELL), sort=False)))
            for key in labels.index:
                if key in by_cell:
                    group = by_cell[key]
                    s = summarize(group.value.to_numpy())
                    rows.append((key[0], key[1], labels[key], axis.name, group.budget.iloc[0],
                                 metric, s.mean, s.std, s.n, s.ci_low, s.ci_high))
    return pd.DataFrame(rows, columns=MATCHED_COLUMNS), pd.DataFrame(gaps, columns=GAP_COLUMNS)
