"""Aggregated run folders -> the `Analysis` every view of the report reads: cells over seeds,
paired comparisons with the baseline and the reference rows, the factorial's effects, all
adjusted in one Holm family per section, the primary metric per section, accuracy at equal
compute. Computed once per report; no file is written here."""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.core.errors import ConfigError
from bench.core.outcomes import read_outcomes
from bench.core.references import REFERENCE_ROWS
from bench.core.runfolder import MISMATCHED
from bench.report.aggregate import Aggregate, collect, curves
from bench.report.cells import (
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
    usual_settings,
)
from bench.report.factorial import Factorial, factorial_effects
from bench.report.family import Family, one_family
from bench.report.metrics import (
    DEFAULT_PRIMARY,
    check_primary,
    judged_metrics,
    metric_order,
)
from bench.report.provenance import UNRECORDED, Provenance, describe_runs
from bench.report.recipes import Tunings, is_trial, read_tunings

log = logging.getLogger(__name__)
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
    factorials: dict[tuple[str, str], Factorial] = field(default_factory=dict)  # per section
    # Every hypothesis the verdict words, one Holm family per section: `paired`, `references`
    # and the factorial effects, adjusted (bench.report.family).
    family: Family = field(default_factory=lambda: one_family(
        pd.DataFrame(columns=PAIRED_COLUMNS)))


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
        present = judged_metrics(group.metric.unique())
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
    factorials, effects = factorial_effects(ok, cells, primaries, outcomes)
    family = one_family(paired, reference_stats(ok, cells, primaries, outcomes), effects)
    return Analysis(agg, ok, cells, stats, family.paired, points, matched, gaps, curve, prov,
                    usual_settings(ok), baseline, compute_metric, notes, rules, primaries,
                    family.references, outcomes, read_tunings(dirs), factorials, family)
