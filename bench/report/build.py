"""Run folders -> the comparison report: report.html (self-contained) and report.md with the
same content, tables.tex (booktabs), CSVs (runs, per-cell statistics, paired comparisons,
accuracy at equal compute) and figures (PNG + SVG).

Every value is a run's final-epoch value; no epoch is ever chosen on test data. Cells are
summarised over seeds with a Student-t CI and compared with a baseline by paired differences
on shared seeds (bench.report.stats).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from bench.core import store
from bench.core.errors import ConfigError, DataNotFoundError
from bench.core.exports import export_command, export_format
from bench.core.outcomes import read_outcomes
from bench.core.references import REFERENCE_ROWS
from bench.core.runfolder import MISMATCHED
from bench.report import figures
from bench.report.aggregate import Aggregate, collect, curves
from bench.report.cells import (
    COMPUTE_AXES,
    PAIRED_COLUMNS,
    POINT_COLUMNS,
    Outcomes,
    cell_stats,
    compute_curves,
    compute_matched,
    dedupe_runs,
    no_outcomes,
    paired_rows,
    paired_stats,
    row_labels,
    sections,
    usual_settings,
)
from bench.report.document import (
    Block,
    Bullets,
    FigureBlock,
    Heading,
    Paragraph,
    TableBlock,
    render_markdown,
)
from bench.report.factorial import EFFECT_COLUMNS, section_factorial
from bench.report.html import render_html
from bench.report.metrics import (
    CELL,
    DEFAULT_PRIMARY,
    MAIN_COMPUTE,
    METRICS,
    NOT_COMPARABLE,
    check_primary,
    metric_order,
)
from bench.report.provenance import UNRECORDED, Provenance, describe_runs
from bench.report.recipes import Tunings, is_trial, read_tunings, recipe_table, tuning_tables
from bench.report.spatial import probe_figures, probe_views
from bench.report.tables import (
    CI_NOTE,
    Table,
    list_table,
    matched_table,
    paired_table,
    stat_table,
    to_latex,
    with_column,
)
from bench.report.verdict import fairness, verdict
from bench.runtime import progress
from methods import method_cards

log = logging.getLogger(__name__)
TITLE = "Maskbench report"
CURVE_METRICS = ("loss",)  # metrics.jsonl columns drawn besides the accuracy ones
MAIN_TABLE_ID = "main-table"
DEFAULT_BASELINE = "mae"  # compared against when no baseline is named, if it has runs


@dataclass
class Analysis:
    """Everything the report shows, computed once from the aggregated runs."""

    agg: Aggregate
    ok: pd.DataFrame  # finished runs, one per (cell, seed), with the variant column
    cells: pd.DataFrame
    stats: pd.DataFrame
    paired: pd.DataFrame
    points: pd.DataFrame  # compute_curves of the compute metric
    matched: pd.DataFrame  # compute_matched: where every pretrained run has a value
    gaps: pd.DataFrame  # compute_matched: (section, axis) where some have none
    curve: pd.DataFrame
    provenance: Provenance
    usual: dict[tuple[str, str], dict[str, str]]  # per section, its usual differing settings
    baseline: str
    compute_metric: str | None
    notes: list[str] = field(default_factory=list)
    rules: dict[str, str] = field(default_factory=dict)  # run_dir -> its weight-decay rule
    primary: dict[tuple[str, str], str] = field(default_factory=dict)  # per section
    references: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PAIRED_COLUMNS))
    outcomes: Outcomes = no_outcomes
    tunings: Tunings = field(default_factory=lambda: Tunings([]))  # bench tune's choices


def primary_metrics(ok: pd.DataFrame, configs: dict[str, dict], chosen: str | None,
                    notes: list[str]) -> dict[tuple[str, str], str]:
    """Per section, the metric its headline verdict speaks of: `chosen` (bench report
    --primary), else the primary_metric its runs name (the most common; a note where they
    differ), else linear_top1. Where the section has no value of it, its first accuracy
    metric, with a note."""
    out = {}
    for section, group in ok.groupby(["dataset", "encoder"]):
        runs = group.run_dir.unique()
        named = pd.Series([chosen] if chosen is not None else [
            configs.get(d, {}).get("primary_metric") or DEFAULT_PRIMARY for d in runs
        ]).value_counts()
        out[section] = str(named.index[0])
        where = " · ".join(section)
        if len(named) > 1:
            notes.append(f"{where}: runs name different primary metrics "
                         f"({', '.join(named.index)}); the verdict uses the most common, "
                         f"{out[section]} (bench report --primary chooses)")
        present = metric_order(group.metric.unique(), "accuracy")
        if present and out[section] not in present:
            notes.append(f"{where}: no run reports the primary metric {out[section]}; the "
                         f"verdict takes {present[0]} as primary")
            out[section] = present[0]
    return out


def reference_stats(ok: pd.DataFrame, cells: pd.DataFrame, primary: dict[tuple[str, str], str],
                    outcomes: Outcomes) -> pd.DataFrame:
    """Each strategy row minus each reference row of its section on the section's primary
    metric, paired by seed (`paired_rows`): what the verdict's reference line reads."""
    by_metric: dict[str, list] = {}  # one pass over the runs per primary metric
    for section, group in cells.groupby(["dataset", "encoder"], sort=False):
        refs = group[group.is_reference]
        if section in primary:
            by_metric.setdefault(primary[section], []).extend(
                (row, ref) for row in group[~group.is_reference].itertuples(index=False)
                for ref in refs.itertuples(index=False))
    frames = [paired_rows(ok, pairs, outcomes, [metric])
              for metric, pairs in by_metric.items() if pairs]
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=PAIRED_COLUMNS))


def analyse(dirs: Sequence[Path], baseline: str | None = None,
            option_defaults: dict[str, dict[str, Any]] | None = None,
            primary: str | None = None) -> Analysis:
    """Aggregate `dirs` and compute every table of the report. `baseline` None: mae, where
    it has finished runs; a baseline named must be a row (ConfigError naming the rows). Row
    labels name the options not at `option_defaults` (by method; planning knows them).
    `primary`: the headline verdict's metric for every section (default: what the runs
    name)."""
    if primary is not None:
        check_primary(primary)
    agg = collect(dirs)
    named, baseline = baseline is not None, baseline or DEFAULT_BASELINE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        curve = curves(dirs)
    notes = [f"curves: {w.message}" for w in caught]
    mismatched = [p for p in agg.problems if MISMATCHED in p.reason]
    if mismatched:
        notes.append(f"{len(mismatched)} run folder(s) left out: their config.json does not "
                     f"hash to their run id, so it {MISMATCHED} (first: {mismatched[0].path}; "
                     "see Skipped folders)")
        log.warning(notes[-1])
    # bench tune's trials are scored on a validation split: not rows of the comparison.
    trials = {d for d, c in agg.configs.items() if is_trial(c)}
    if trials and not curve.empty:
        curve = curve[~curve.run_dir.isin(trials)]
    prov = describe_runs({d: c for d, c in agg.configs.items() if d not in trials}, agg.devices,
                         REFERENCE_ROWS)
    table = agg.table[~agg.table.run_dir.isin(trials)]
    table = table.assign(variant=table.run_dir.map(prov.variant).fillna("{}"))
    ok, dupes = dedupe_runs(table[table.status == "ok"])
    if dupes:
        notes.append(f"{dupes} run(s) repeat a configuration and seed found in another folder; "
                     "each (configuration, seed) is counted once (the first folder by path)")
    if ok.empty:
        notes.append("no finished run has a metric: there are no tables and no figures")
        empty = pd.DataFrame()
        return Analysis(agg, ok, row_labels(ok, baseline, option_defaults), empty, empty, empty, empty, empty,
                        curve, prov, {}, baseline, None, notes)
    cells = row_labels(ok, baseline, option_defaults)
    outcomes = functools.lru_cache(maxsize=512)(read_outcomes)  # a cell's runs, the baseline's
    stats = cell_stats(ok, cells, outcomes)
    if named and baseline not in set(ok.method):
        raise ConfigError(f"baseline {baseline!r} is not a row of this report; its rows: "
                          f"{', '.join(sorted(set(ok.method)))}")
    if baseline not in set(ok.method):
        notes.append(f"baseline {baseline!r} has no finished runs, so there are no paired "
                     f"comparisons; methods present: {', '.join(sorted(set(ok.method)))}")
        log.warning(notes[-1])
    paired = paired_stats(ok, cells, baseline, outcomes)
    primaries = primary_metrics(ok, agg.configs, primary, notes)
    accuracy = metric_order(ok.metric.unique(), "accuracy")
    compute_metric = "knn_top1" if "knn_top1" in accuracy else (accuracy or [None])[0]
    points = (compute_curves(ok, curve, compute_metric) if compute_metric is not None
              else pd.DataFrame(columns=POINT_COLUMNS))  # unlabelled data: no probe to match
    matched, gaps = compute_matched(points, ok, cells, compute_metric or "")
    if len(set(prov.devices) - {UNRECORDED}) > 1:
        notes.append("runs ran on several devices (see Provenance): wall times, samples/s and "
                     "the time axis of the compute view compare hardware as well as methods")
    rules = {d: str(c.get("weight_decay_rule") or "") for d, c in agg.configs.items()}
    return Analysis(agg, ok, cells, stats, paired, points, matched, gaps, curve, prov,
                    usual_settings(ok), baseline, compute_metric, notes, rules, primaries,
                    reference_stats(ok, cells, primaries, outcomes), outcomes,
                    read_tunings(dirs))


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


def _section(a: Analysis, dataset: str, encoder: str, first: bool) -> Section:
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


FILL_NOTE = (
    "Where each fill breaks down. recon loss d: the held-out reconstruction loss at hidden "
    "positions whose Chebyshev distance to the nearest visible token is d (for QB-Heat's "
    "block, the steps along the farther axis), under each method's own masking; like "
    "recon_loss, not comparable across methods, and a bin mixes distance with content (on "
    "centred objects the far positions are mostly blank border, which any fill predicts "
    "well). Final epoch; also in metrics.jsonl at --eval-every points.")


TUNING_NOTE = (
    "bench tune ran every row of the comparison at each recipe of its grid on trial seeds, "
    "fitting the probes on the training split minus a held-out validation part and scoring "
    "them there; each row then ran at its best recipe at the comparison's seeds. Trials are "
    "in tune/ and are no rows of the tables above.")


CONTRIBUTION_NOTE = (
    "The held-out reconstruction loss of each run's trained model with its own fill (test "
    "recon loss), then on the same inputs and the same masks with the fill replaced: by a "
    "constant (each sample's mean visible feature at every hidden position) and, for QB-Heat, "
    "by A = B = 0 (every hidden position a copy of its nearest block edge). Encoder and "
    "decoder stay as trained, so the gap is what the fill rule adds; a fill that is no better "
    "than the constant left the work to the decoder. Within a row only: across methods the "
    "tasks differ.")


def _make_figures(a: Analysis, out: Path) -> list[figures.Figure]:
    if a.ok.empty:
        return []
    accuracy = metric_order(a.ok.metric.unique(), "accuracy")
    run_cell = a.ok.drop_duplicates("run_dir")[["run_dir", *CELL]]
    over_epochs = [a.curve[a.curve.metric == m] for m in CURVE_METRICS if not a.curve.empty]
    names = [m for m in CURVE_METRICS if not a.curve.empty]
    if a.compute_metric is not None and not a.points.empty:
        over_epochs.append(a.points)
        names.append(a.compute_metric)
    series = {m: f[["run_dir", "epoch", "value"]].merge(run_cell, on="run_dir")
              for m, f in zip(names, over_epochs)}
    makers = [
        lambda: figures.metric_figure(a.ok, a.cells, accuracy, out),
        lambda: figures.curve_figure(series, a.cells, out),
        lambda: figures.compute_figure(a.points, a.ok, a.cells, a.compute_metric, out)
        if a.compute_metric else None,
        lambda: figures.mask_ratio_figure(a.ok, a.cells, accuracy, out),
        lambda: figures.reconstruction_figure(a.ok, a.cells, out, a.notes),
    ]
    made = [make() for make in progress.bar(makers, desc="figures", unit="figure", leave=False)]
    return [f for f in made if f is not None] + probe_figures(a.ok, a.cells, out)


def _count_table(counts: dict[str, dict[str, int]], title: str, what: str) -> Table:
    rows = [(key, value, n) for key, c in counts.items() for value, n in c.most_common()]
    return list_table(pd.DataFrame(rows, columns=[what, "value", "runs"]), title)


def _provenance_blocks(p: Provenance) -> list[Block]:
    blocks: list[Block] = [Heading("Configurations", 2, "configurations")]
    if p.varying:
        blocks += [
            Paragraph("Settings that differ between runs (they appear in brackets in row "
                      "labels, so runs that differ in anything but the seed are never pooled; "
                      "method options appear in row labels where a method has several):"),
            TableBlock(_count_table(p.varying, "Settings that differ between runs", "setting")),
        ]
    else:
        blocks.append(Paragraph("Apart from method, options, dataset, encoder and seed, every "
                                "run has the same settings."))
    shared = pd.DataFrame(list(p.constant.items()), columns=["setting", "value"])
    blocks += [TableBlock(list_table(shared, "Settings every run shares")),
               Heading("Provenance", 2, "provenance"),
               TableBlock(_count_table({"git sha": p.git_shas, "device": p.devices},
                                       "Code and hardware of the runs", "what")),
               TableBlock(_count_table(p.versions, "Package versions of the runs", "package"))]
    return blocks


def _export_table(a: Analysis) -> Table | None:
    """One `bench export` command per finished pretrained run (timm for images)."""
    runs = a.ok.drop_duplicates("run_dir")
    rows = [(r.run_id, r.method, r.seed, export_command(Path(r.run_dir), fmt))
            for r in runs.itertuples() if (fmt := export_format(a.agg.configs.get(r.run_dir, {})))]
    if not rows:
        return None
    return list_table(pd.DataFrame(rows, columns=["run_id", "method", "seed", "command"]),
                      f"Export commands: {len(rows)} runs",
                      "Writes the run's encoder as a safetensors file timm loads (text "
                      "encoders: their own state dict); the command prints how to load it.")


def _blocks(a: Analysis, dirs: Sequence[Path], section_of: dict[tuple[str, str], Section],
            figs: list[figures.Figure]) -> list[Block]:
    agg = a.agg
    n_ok = a.ok.run_dir.nunique()
    blocks: list[Block] = [
        Heading(TITLE, 1),
        Paragraph(f"{n_ok} finished runs in {len(a.cells)} rows from "
                  f"{', '.join(str(d) for d in dirs)}; {len(agg.failed)} failed; "
                  f"{len(agg.problems)} folders skipped. Generated "
                  f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC by maskbench "
                  f"{store.git_sha() or '(no git)'}."),
        Bullets((
            f"Cells: {CI_NOTE}. Values are always the final epoch's: no epoch, checkpoint or "
            "setting is ever chosen on test data.",
            f"Paired comparisons against the baseline {a.baseline!r}: per row, the mean "
            "difference on the seeds both rows have, its 95 % t CI and a paired t-test p-value "
            "(none when fewer than 3 seeds are shared).",
            "Reference rows: random-init (the same encoder, untrained) and raw-input (the "
            "same probes on the standardised input).",
            f"{', '.join(m for m, i in METRICS.items() if i.group == 'task')} are "
            f"{NOT_COMPARABLE}.",
        )),
    ]
    if section_of:
        blocks += [Heading("Verdict", 2, "verdict"), Paragraph(
            f"Per section, each row against the baseline {a.baseline!r}, paired by seed, first "
            "on the primary metric, then on the secondary ones. A row beats or trails the "
            "baseline where its Holm-adjusted p is below 0.05: Holm-Bonferroni over the "
            "section's family (its non-reference rows x metrics with at least 3 shared seeds), "
            "so the chance of any false claim in a section is at most 5 %. The smallest "
            "difference the primary comparisons could detect (80 % power) is stated beside "
            "them.")]
        blocks.append(Bullets(tuple(f"{dataset} · {encoder}: {line}"
                                    for (dataset, encoder), s in section_of.items()
                                    for line in s.verdict)))
    if a.notes:
        blocks += [Heading("Notes", 2, "notes"), Bullets(tuple(a.notes))]
    for i, ((dataset, encoder), section) in enumerate(section_of.items()):
        blocks.append(Heading(section_name(a, dataset, encoder), 2, f"section-{i}"))
        if section.warnings:
            blocks.append(Bullets(tuple(section.warnings)))
        blocks += [TableBlock(c) if isinstance(c, Table) else Paragraph(c)
                   for c in section.content]
    fills = [s.fill for s in section_of.values() if s.fill is not None]
    if fills:
        blocks += [Heading("The fill by distance", 2, "fill"), Paragraph(FILL_NOTE),
                   *(TableBlock(t) for t in fills)]
    if a.tunings.records:
        blocks += [Heading("Tuning", 2, "tuning"), Paragraph(TUNING_NOTE),
                   *(TableBlock(t) for t in tuning_tables(a.tunings))]
    contributions = [s.contribution for s in section_of.values() if s.contribution is not None]
    if contributions:
        blocks += [Heading("What the learned fill contributes", 2, "contribution"),
                   Paragraph(CONTRIBUTION_NOTE), *(TableBlock(t) for t in contributions)]
    for method in dict.fromkeys(m for s in section_of.values() for m in s.methods):
        card = method_cards().get(method)
        blocks += [Heading(card.diagnostics_title or f"{method}: diagnostics", 2,
                           f"method-{method}")]
        blocks += [Paragraph(card.diagnostics_note)] if card.diagnostics_note else []
        blocks += [TableBlock(s.methods[method]) for s in section_of.values()
                   if method in s.methods]
    if figs:
        blocks.append(Heading("Figures", 2, "figures"))
        blocks += [FigureBlock(f) for f in figs]
    if not agg.failed.empty:
        failed = agg.failed[["run_id", "method", "options", "seed", "error", "run_dir"]]
        blocks += [Heading("Failed runs", 2, "failed"),
                   TableBlock(list_table(failed, f"Failed runs: {len(failed)} (in no cell)"))]
    exports = _export_table(a)
    if exports is not None:
        blocks += [Heading("Export the encoders", 2, "export"), TableBlock(exports)]
    if agg.problems:
        problems = pd.DataFrame([(str(p.path), p.reason) for p in agg.problems],
                                columns=["folder", "reason"])
        blocks += [Heading("Skipped folders", 2, "skipped"),
                   TableBlock(list_table(problems, "Folders left out (unreadable or unusable)"))]
    blocks += _provenance_blocks(a.provenance)
    blocks.append(Paragraph(f"Report written with Python {platform.python_version()} on "
                            f"{platform.platform()}."))
    return blocks


def write_report(dirs: Sequence[Path], out: Path, *, baseline: str | None = None,
                 option_defaults: dict[str, dict[str, Any]] | None = None,
                 primary: str | None = None) -> Path:
    """Aggregate every run under `dirs`, write the report into `out`, return report.html
    (report.md beside it says the same). `baseline`, `option_defaults`: see `analyse`.

    Nothing is written when there is nothing to report. Every file is built in a temporary
    folder inside `out` and moved into place one by one (os.replace), report.html last: a
    reader, or another report written at the same time, never sees a torn file."""
    out = Path(out)
    dirs = [Path(d) for d in dirs]
    a = analyse(dirs, baseline, option_defaults, primary)
    if not a.agg.configs and not a.agg.problems:
        raise DataNotFoundError(
            f"no run folders (config.json or summary.json) under {', '.join(map(str, dirs))}")
    with _staged(out) as stage:
        _write_files(a, dirs, stage)
    return out / "report.html"


STAGE_PREFIX = ".report-"  # OUT/.report-*: a report being written (see `_staged`)
STAGE_LOCK = ".lock"  # inside a stage, flock()ed by the process writing it
STAGE_GRACE_S = 30.0  # an unlocked stage younger than this may be one being set up


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A fresh folder inside `out` to write into; on success its files replace `out`'s (the
    HTML page last), on error they are dropped, and so is `out` if this call created it.

    The writing process holds an flock on the stage's lock file; the kernel drops it when the
    process dies, so a stage whose lock is free was left by a killed report and is removed
    here, while another report writing into the same folder keeps its stage."""
    created = not out.exists()
    store.ensure_writable(out)
    _remove_abandoned_stages(out)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=STAGE_PREFIX))
    lock = os.open(stage / STAGE_LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield stage
        files = sorted((f for f in stage.iterdir() if f.name != STAGE_LOCK),
                       key=lambda f: (f.name == "report.html", f.name))
        for f in files:
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        os.close(lock)
        if created and not any(out.iterdir()):
            out.rmdir()


def _remove_abandoned_stages(out: Path) -> None:
    """Delete the staging folders of reports that were killed (see `_staged`)."""
    for stage in out.glob(STAGE_PREFIX + "*"):
        if stage.is_dir() and _abandoned(stage):
            shutil.rmtree(stage, ignore_errors=True)


def _abandoned(stage: Path) -> bool:
    """No live process holds the stage's lock, and it is not one just being set up (its lock,
    or without one the folder, is older than STAGE_GRACE_S: stages of reports that predate the
    lock have none)."""
    path = stage / STAGE_LOCK
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return _age_s(stage) > STAGE_GRACE_S
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: a report is writing there now
        return False
    finally:
        os.close(fd)
    return _age_s(path) > STAGE_GRACE_S


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _write_files(a: Analysis, dirs: Sequence[Path], out: Path) -> None:
    a.agg.to_csv(out / "runs.csv")
    stats_cols = ["dataset", "encoder", "label", "method", "options", "variant", "metric",
                  "mean", "std", "n", "ci_low", "ci_high", "test_var", "test_examples"]
    a.stats.reindex(columns=stats_cols).to_csv(out / "stats.csv", index=False)
    a.paired.to_csv(out / "paired.csv", index=False)
    a.references.to_csv(out / "references.csv", index=False)
    a.matched.to_csv(out / "compute_matched.csv", index=False)
    section_of = {sec: _section(a, *sec, first=i == 0) for i, sec in enumerate(sections(a.cells))}
    effects = [s.effects for s in section_of.values() if not s.effects.empty]
    if effects:
        pd.concat(effects, ignore_index=True).to_csv(out / "factorial.csv", index=False)
    tables = [t for s in section_of.values() for t in s.tables]
    tables += [s.fill for s in section_of.values() if s.fill is not None]
    tables += [s.contribution for s in section_of.values() if s.contribution is not None]
    tables += [t for s in section_of.values() for t in s.methods.values()]
    (out / "tables.tex").write_text(
        "% Maskbench tables; needs \\usepackage{booktabs}\n\n"
        + "\n\n".join(to_latex(t) for t in tables) + "\n")
    blocks = _blocks(a, dirs, section_of, _make_figures(a, out))
    (out / "report.md").write_text(render_markdown(blocks))
    (out / "report.html").write_text(render_html(blocks, TITLE))
