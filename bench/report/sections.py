"""One (dataset, encoder) section of the report: its tables in order, its verdict, its
fairness warnings and the fill, contribution and method-diagnostic tables gathered later."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from bench.report.analysis import Analysis
from bench.report.cells import (
    COMPUTE_AXES,
)
from bench.report.factorial import EFFECT_COLUMNS, section_factorial
from bench.report.metrics import (
    CELL,
    DEFAULT_PRIMARY,
    MAIN_COMPUTE,
    NOT_COMPARABLE,
    metric_order,
)
from bench.report.provenance import UNRECORDED
from bench.report.recipes import recipe_table
from bench.report.spatial import probe_views
from bench.report.tables import (
    CI_NOTE,
    Table,
    list_table,
    matched_table,
    paired_table,
    stat_table,
    with_column,
)
from bench.report.verdict import fairness, verdict
from methods import method_cards

MAIN_TABLE_ID = "main-table"


@dataclass
class Section:
    """One (dataset, encoder) section of the report."""

    content: list[Table | str]  # tables in order; a str says where a view is left out, why
    verdict: list[str]  # who beats the baseline, in words (bench.report.verdict)
    warnings: list[str]  # where compared rows ran with a different setup
    fill: Table | None = None  # the reconstruction by distance of the rows that report it
    # each method's own diagnostics (its card's), by method name
    methods: dict[str, Table] = field(default_factory=dict)
    effects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EFFECT_COLUMNS))
    contribution: Table | None = None  # recon loss with the learned fill and with ablated ones

    @property
    def tables(self) -> list[Table]:
        return [t for t in self.content if isinstance(t, Table)]


def build_section(a: Analysis, dataset: str, encoder: str, first: bool) -> Section:
    """Main, fairness, paired, compute-matched, compute and task tables of one section, its
    verdict and its fairness warnings."""
    where = lambda f: f[(f.dataset == dataset) & (f.encoder == encoder)]  # noqa: E731
    cells, stats = where(a.cells), where(a.stats)
    primary = a.primary.get((dataset, encoder), DEFAULT_PRIMARY)
    metrics = list(stats.metric.unique())
    accuracy = metric_order(metrics, "accuracy")
    name = section_name(a, dataset, encoder)
    usual = a.usual.get((dataset, encoder))
    settings = (" Rows without [brackets] have " + ", ".join(f"{k}={v}" for k, v in usual.items())
                + "." if usual else "")
    tables: list[Table | str] = [stat_table(
        stats, cells, accuracy + [m for m in MAIN_COMPUTE if m in metrics], f"{name}: main table",
        CI_NOTE + ". Bold: best row of a column whose CI does not overlap the runner-up's "
        "(reference rows are not ranked)." + settings, MAIN_TABLE_ID if first else "")]
    runs = _run_labels(a, cells)
    rules = {label: a.rules.get(run_dir, "") for label, run_dir in runs}
    fair, warnings = fairness(stats, cells, rules, f"{name}: setup of each row (fairness)")
    tables.append(fair)
    tables += _recipes(a, cells, runs, name)
    paired = where(a.paired)
    if not accuracy:
        said = ["no verdict: no probe accuracy (unlabelled data: the runs only pretrain, and "
                f"their pretext-task metrics are {NOT_COMPARABLE})"]
    elif paired.empty:
        said = [f"no verdict: the baseline {a.baseline!r} has no finished run in this section"]
    else:
        said = verdict(paired, a.baseline, primary, where(a.references))
    if not paired.empty:
        tables.append(paired_table(
            paired, f"{name}: paired difference to the baseline {paired.baseline.iloc[0]}",
            "Mean of (row - baseline) over the seeds both have ± half-width of its 95 % t CI "
            "(n = shared seeds; with per-example outcomes the CI and test also hold the test "
            "set's variance), p from a paired t-test (two-sided), Holm p: adjusted over the "
            "section's family (non-reference rows x metrics with a test), the p the verdict "
            "reads; fewer than 3 shared seeds: no test."))
    factorial, effects = section_factorial(a.ok, cells, stats, primary, a.outcomes, name)
    tables += factorial
    l2 = probe_l2_table(a.ok, cells, f"{name}: linear-probe L2 chosen on a validation split")
    if l2 is not None:
        tables.append(l2)
    matched = where(a.matched)
    if not matched.empty:
        tables.append(matched_table(
            matched, f"{name}: accuracy at equal pretraining compute",
            f"{a.compute_metric} interpolated along each run's curve at the largest budget "
            "every pretrained run reached (in FLOPs; in pretraining time), mean ± 95 % t CI "
            "over seeds; every pretrained run has evaluations at or below the budget."))
    tables += _absent_matched(where(a.gaps), a.compute_metric)
    compute = metric_order(metrics, "compute")
    if compute:
        table = stat_table(stats, cells, compute, f"{name}: compute",
                           f"{CI_NOTE}. {THROUGHPUT_NOTE}.")
        devices = _row_devices(a, runs)
        if len(set().union(*devices.values())) > 1:
            table = with_column(table, "device",
                                {label: ", ".join(sorted(d)) for label, d in devices.items()})
        tables.append(table)
    task = metric_order(metrics, "task")
    if task:
        tables.append(stat_table(stats, cells, task, f"{name}: pretext-task metrics",
                                 f"{', '.join(task)}: {NOT_COMPARABLE}. {CI_NOTE}."))
    tables += probe_views(stats, cells, metrics, name)
    by_distance = metric_order(metrics, "fill")
    fill = stat_table(stats, cells, by_distance, f"{name}: reconstruction by distance from the "
                      "visible part", CI_NOTE) if by_distance else None
    ablated = metric_order(metrics, "contribution")
    contribution = stat_table(stats, cells, [m for m in ("recon_loss",) if m in metrics] + ablated,
                              f"{name}: what the learned fill contributes",
                              CI_NOTE) if ablated else None
    own = {}
    for method in dict.fromkeys(cells.method):
        if method in method_cards() and (figures_ := metric_order(metrics, f"method:{method}")):
            title = method_cards().get(method).diagnostics_title or f"{method}: diagnostics"
            own[method] = stat_table(stats, cells, figures_, f"{name}: {title}", CI_NOTE)
    return Section(tables, said, warnings, fill, own, effects, contribution)


def probe_l2_table(ok: pd.DataFrame, cells: pd.DataFrame, title: str) -> Table | None:
    """Per row, the linear probe's L2 penalty each seed's run chose (summary.json
    `linear_l2`): the value and how many seeds chose it."""
    chosen = ok[ok.metric == "linear_l2"].merge(cells[[*CELL, "label"]], on=list(CELL))
    if chosen.empty:
        return None
    rows = []
    for label in cells.label:
        values = chosen[chosen.label == label].value
        if len(values):
            counts = values.value_counts().sort_index()
            rows.append((label, ", ".join(f"{v:.0e} ({n} seed{'s' * (n > 1)})"
                                          for v, n in counts.items())))
    return list_table(pd.DataFrame(rows, columns=["row", "L2 (seeds)"]), title,
                      "Each run fits the probe at every L2 of 1e-6 .. 1e-1 on its training "
                      "split less a seeded 20 % validation share, keeps the best on that share "
                      "(ties: the larger), refits on the whole training split, and only then "
                      "scores the test split.")


def _recipes(a: Analysis, cells: pd.DataFrame, runs: list[tuple[str, str]],
             name: str) -> list[Table | str]:
    """The sentence saying how the rows' recipes were set, and the recipe of each row."""
    first = dict(reversed(runs))  # label -> one of its run folders
    reference = dict(zip(cells.label, cells.is_reference))
    run_ids = dict(zip(a.ok.run_dir, a.ok.run_id))
    table, sentence = recipe_table(
        [(label, first[label], bool(reference[label])) for label in cells.label if label in first],
        a.agg.configs, run_ids, a.tunings, f"{name}: recipe of each row")
    return [sentence, table]


THROUGHPUT_NOTE = ("samples/s and seconds were measured on each run's machine under the load "
                   "it had then: they are not comparable across runs measured on different "
                   "machines or under different loads")


def _absent_matched(gaps: pd.DataFrame, metric: str | None) -> list[str]:
    """Why a section's accuracy at equal compute is not shown (on the axes in `gaps`), and
    how to get it."""
    if gaps.empty:
        return []
    axes = {axis.name: axis for axis in COMPUTE_AXES}
    along = " and ".join(axes[n].noun for n in gaps.axis)
    counts = sorted(set(gaps.without))
    without = (str(counts[0]) if len(counts) == 1 else
               " and ".join(f"{g.without} ({axes[g.axis].noun})" for g in gaps.itertuples()))
    budgets = "; ".join(axes[g.axis].budget_value(g.budget) for g in gaps.itertuples())
    return [f"Accuracy at equal pretraining {along} is not shown: {without} of the "
            f"{gaps.runs.max()} pretrained runs have no {metric} evaluation at or below the "
            f"budget every pretrained run reached ({budgets} of pretraining), so only the "
            "cheapest would have a value there (without --eval-every a run is evaluated once, "
            "at its end). Run with --eval-every K (evaluate every K epochs) to get this view."]


def _row_devices(a: Analysis, runs: list[tuple[str, str]]) -> dict[str, set[str]]:
    """The devices each row's runs (`_run_labels`) ran on, as their summary.json names them."""
    devices: dict[str, set[str]] = {}
    for label, run_dir in runs:
        devices.setdefault(label, set()).add(a.agg.devices.get(run_dir) or UNRECORDED)
    return devices


def _run_labels(a: Analysis, cells: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, run_dir) of every finished run of the cells' rows."""
    runs = a.ok.drop_duplicates("run_dir").merge(cells[[*CELL, "label"]], on=list(CELL))
    return list(zip(runs.label, runs.run_dir))


def section_name(a: Analysis, dataset: str, encoder: str) -> str:
    """`dataset · encoder`, and the text level where some of its runs are at the sentence level
    (a section at the default token level says nothing, as before the sentence level)."""
    runs = a.ok[(a.ok.dataset == dataset) & (a.ok.encoder == encoder)].run_dir.unique()
    levels = {a.agg.configs.get(r, {}).get("granularity", "token") for r in runs}
    level = {frozenset({"sentence"}): " · sentence level",
             frozenset({"token", "sentence"}): " · token and sentence level"}.get(frozenset(levels))
    return f"{dataset} · {encoder}{level or ''}"
