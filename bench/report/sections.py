"""One (dataset, encoder) section of the report: its tables in order, its verdict, its
fairness warnings and the fill, contribution and method-diagnostic tables gathered later."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from bench.report.analysis import Analysis
from bench.report.cells import (
    COMPUTE_AXES,
)
from bench.report.factorial import EFFECT_COLUMNS, factorial_tables
from bench.report.gate import curve_separation, schedule
from bench.report.metrics import (
    CELL,
    DEFAULT_PRIMARY,
    MAIN_COMPUTE,
    NOT_COMPARABLE,
    metric_info,
    metric_order,
)
from bench.report.provenance import UNRECORDED
from bench.report.recipes import recipe_table
from bench.report.spatial import probe_views
from bench.report.tables import (
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
    """Main, fairness, gate, paired, factorial, compute-matched, compute and task tables of
    one section, its verdict (gate first) and its fairness warnings."""
    where = lambda f: f[(f.dataset == dataset) & (f.encoder == encoder)]  # noqa: E731
    cells, stats = where(a.cells), where(a.stats)
    primary = a.primary.get((dataset, encoder), DEFAULT_PRIMARY)
    metrics = list(stats.metric.unique())
    accuracy = metric_order(metrics, "accuracy")
    name = section_name(a, dataset, encoder)
    usual = a.usual.get((dataset, encoder))
    settings = (" Rows without [brackets] have " + ", ".join(f"{k}={v}" for k, v in usual.items())
                + "." if usual else "")
    main = accuracy + [m for m in MAIN_COMPUTE if m in metrics]
    tables: list[Table | str] = [stat_table(
        stats, cells, main, f"{name}: main table",
        "Bold: best row of a column whose CI does not overlap the runner-up's (reference rows "
        "are not ranked; descriptive, not a tested claim: the verdict's claims are the tested "
        f"ones).{_machine_note(main)}" + settings, MAIN_TABLE_ID if first else "")]
    runs = _run_labels(a, cells)
    rules = {label: a.rules.get(run_dir, "") for label, run_dir in runs}
    fair, warnings = fairness(stats, cells, rules, f"{name}: setup of each row (fairness)")
    tables.append(_with_threads(fair, a, runs))
    tables += _recipes(a, cells, runs, name)
    family = a.family.section(dataset, encoder)
    paired = family.paired
    if not accuracy:
        said = ["no verdict: no probe accuracy (unlabelled data: the runs only pretrain, and "
                f"their pretext-task metrics are {NOT_COMPARABLE})"]
    elif paired.empty:
        said = [f"no verdict: the baseline {a.baseline!r} has no finished run in this section"]
    else:
        separation = (curve_separation(a.points, a.ok, a.cells, a.compute_metric, dataset,
                                       encoder) if a.compute_metric else None)
        said = verdict(family, a.baseline, primary,
                       schedule(a.ok, a.agg.configs, dataset, encoder), separation)
    gate = family.gate()
    if not gate.empty:
        tables.append(paired_table(
            gate, f"{name}: pretraining gate, each row against {gate.baseline.iloc[0]}",
            "Row - the untrained encoder on the primary metric, paired by seed: did "
            f"pretraining move it at all? {PAIRED_NOTE}"))
    if not paired.empty:
        tables.append(paired_table(
            paired, f"{name}: paired difference to the baseline {paired.baseline.iloc[0]}",
            PAIRED_NOTE))
    if (dataset, encoder) in a.factorials:
        tables += factorial_tables(stats, a.factorials[dataset, encoder], family.effects,
                                   primary, name)
    l2 = probe_l2_table(a.ok, cells, f"{name}: probe L2 chosen on a validation split")
    if l2 is not None:
        tables.append(l2)
    matched = where(a.matched)
    if not matched.empty:
        tables.append(matched_table(
            matched, f"{name}: accuracy at equal pretraining compute",
            f"{a.compute_metric} interpolated along each run's curve at the largest budget "
            "every pretrained run reached (in FLOPs; in pretraining time); every pretrained "
            "run has evaluations at or below the budget. Descriptive: not in the verdict's "
            "family."))
    tables += _absent_matched(where(a.gaps), a.compute_metric)
    compute = metric_order(metrics, "compute")
    if compute:
        table = stat_table(stats, cells, compute, f"{name}: compute",
                           f"{_machine_note(compute).strip()} {THROUGHPUT_NOTE}.".strip())
        devices = _row_devices(a, runs)
        if len(set().union(*devices.values())) > 1:
            table = with_column(table, "device",
                                {label: ", ".join(sorted(d)) for label, d in devices.items()})
        tables.append(table)
    task = metric_order(metrics, "task")
    if task:
        tables.append(stat_table(stats, cells, task, f"{name}: pretext-task metrics",
                                 f"{', '.join(task)}: {NOT_COMPARABLE}."))
    tables += probe_views(where(a.ok), stats, cells, metrics, name)
    by_distance = metric_order(metrics, "fill")
    fill = stat_table(stats, cells, by_distance, f"{name}: reconstruction by distance from the "
                      "visible part") if by_distance else None
    ablated = metric_order(metrics, "contribution")
    contribution = stat_table(stats, cells, [m for m in ("recon_loss",) if m in metrics] + ablated,
                              f"{name}: what the learned fill contributes") if ablated else None
    own = {}
    for method in dict.fromkeys(cells.method):
        if method in method_cards() and (figures_ := metric_order(metrics, f"method:{method}")):
            title = method_cards().get(method).diagnostics_title or f"{method}: diagnostics"
            own[method] = stat_table(stats, cells, figures_, f"{name}: {title}")
    return Section(tables, said, warnings, fill, own, family.effects, contribution)


PAIRED_NOTE = ("Mean of the per-seed differences over the seeds both have ± half-width of its "
               "95 % t CI (n = shared seeds; with per-example outcomes the CI and test also "
               "hold the test set's variance), p from a paired t-test (two-sided), Holm p: "
               "adjusted in the section's one family (pretraining gate, baseline comparisons, "
               "reference claim, factorial effects), the p the verdict reads; fewer than 3 "
               "shared seeds: no test.")
# The probes whose L2 penalty each run chooses on a validation split (summary.json).
CHOSEN_L2 = {"linear_l2": "linear probe", "dense_l2": "dense probe"}


def probe_l2_table(ok: pd.DataFrame, cells: pd.DataFrame, title: str) -> Table | None:
    """Per row, the L2 penalty each seed's run chose for each probe that chooses one
    (CHOSEN_L2): the values and how many seeds chose each."""
    chosen = ok[ok.metric.isin(list(CHOSEN_L2))].merge(cells[[*CELL, "label"]], on=list(CELL))
    if chosen.empty:
        return None
    probes = [m for m in CHOSEN_L2 if m in set(chosen.metric)]
    rows = []
    for label in cells.label:
        mine = chosen[chosen.label == label]
        if len(mine):
            rows.append((label, *(_seed_counts(mine[mine.metric == m].value) for m in probes)))
    columns = ["row", *(f"{CHOSEN_L2[m]} L2 (seeds)" for m in probes)]
    return list_table(pd.DataFrame(rows, columns=columns), title,
                      "Each run fits each probe at every L2 of its grid (1e-6 .. 1e-1) on its "
                      "training split less a seeded validation share (the dense probe: a "
                      "held-out share of its own training canvases), keeps the best on that "
                      "share (ties: the larger), refits on the whole training split, and only "
                      "then scores the test split.")


def _seed_counts(values: pd.Series) -> str:
    """'1e-05 (2 seeds), 1e-04 (1 seed)'; '–' where no run recorded a value."""
    counts = values.value_counts().sort_index()
    return ", ".join(f"{v:.0e} ({n} seed{'s' * (n > 1)})" for v, n in counts.items()) or "–"


def _with_threads(table: Table, a: Analysis, runs: list[tuple[str, str]]) -> Table:
    """The setup table with each row's CPU thread count(s) (summary.json compute.threads)
    where the section's runs differ in it (float reductions, so the last digits, differ with
    it); as it is where they agree or no run recorded it."""
    recorded = a.ok[a.ok.metric == "compute.threads"].set_index("run_dir").value
    threads: dict[str, set[int]] = {}
    for label, run_dir in runs:
        if run_dir in recorded.index:
            threads.setdefault(label, set()).add(int(recorded[run_dir]))
    if len(set().union(*threads.values())) < 2:
        return table
    return with_column(table, metric_info("compute.threads").title,
                       {label: ", ".join(map(str, sorted(t))) for label, t in threads.items()})


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


def _machine_note(metrics: list[str]) -> str:
    """' Machine figures: ...' where `metrics` hold one (throughput, seconds), else ''."""
    machine = [metric_info(m).title for m in metrics if metric_info(m).machine]
    if not machine:
        return ""
    return (f" {', '.join(machine)}: median [min–max] over seeds, machine figures with no CI; "
            "reference rows pretrain nothing ('–').")


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
