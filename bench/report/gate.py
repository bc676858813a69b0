"""The pretraining gate: before strategies are compared, did pretraining move the encoder at
all? Per section, each pretrained row against the untrained encoder (random-init) on the
primary metric, paired by seed, Holm-adjusted in the section's one family
(bench.report.family). The verdict's first line says how many rows it moved; where it moved
none, comparing strategies is comparing noise, and the line says so and how far the schedule
was from where pretraining separates (from the --eval-every curves where runs recorded them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.core.references import REFERENCE_ROWS
from bench.report.cells import cell_key
from bench.report.family import UNTRAINED, Family, detectable
from bench.report.metrics import CELL, metric_info
from bench.report.stats import ALPHA, MIN_PAIRED_FOR_TEST, holm, paired_difference

UNTRAINED_ROW = next(n for n, r in REFERENCE_ROWS.items() if r.features == UNTRAINED)


@dataclass(frozen=True)
class Schedule:
    """A section's pretraining schedule: epochs and optimiser steps per run (the most common
    epochs; steps: the median of samples seen / batch over its pretrained runs). None: not
    recorded."""

    epochs: int | None
    steps: int | None

    def words(self) -> str:
        epochs = "" if self.epochs is None else f"{self.epochs} epoch(s)"
        steps = "" if self.steps is None else f"about {self.steps} optimiser steps"
        both = [w for w in (epochs, steps) if w]
        return f"{both[0]} ({both[1]})" if len(both) == 2 else (both or ["(not recorded)"])[0]

    def steps_at(self, epoch: float) -> str:
        if self.steps is None or not self.epochs:
            return ""
        return f", about {round(self.steps * epoch / self.epochs)} steps"


def schedule(ok: pd.DataFrame, configs: dict[str, dict[str, Any]], dataset: str,
             encoder: str) -> Schedule:
    """The schedule of a section's pretrained runs (`ok`: the long table of finished runs)."""
    mine = ok[(ok.dataset == dataset) & (ok.encoder == encoder) & ~ok.method.isin(REFERENCE_ROWS)]
    runs = mine.drop_duplicates("run_dir")
    epochs = runs.epochs.dropna()
    wide = mine[mine.metric.isin(["compute.train_samples_per_s", "compute.train_s"])].pivot_table(
        index="run_dir", columns="metric", values="value", aggfunc="first")
    steps = None
    if {"compute.train_samples_per_s", "compute.train_s"} <= set(wide.columns):
        batch = pd.Series({d: configs.get(d, {}).get("batch_size") for d in wide.index},
                          dtype="float64")
        per_run = (wide["compute.train_samples_per_s"] * wide["compute.train_s"] / batch).dropna()
        steps = round(float(per_run.median())) if len(per_run) else None
    return Schedule(int(epochs.mode().iloc[0]) if len(epochs) else None, steps)


@dataclass(frozen=True)
class Separation:
    """Where a section's --eval-every curves (of `metric`) first put a pretrained row apart
    from the untrained encoder: each (row, evaluated epoch) paired by seed against its value,
    Holm over the `tests` points (exploratory: a family of its own, no verdict claim).
    `first`: (epoch, row, difference) of the earliest point above it, None if none;
    `best`: the point with the largest difference; `epochs`: every epoch evaluated."""

    metric: str
    epochs: tuple[float, ...]
    tests: int
    first: tuple[float, str, float] | None
    best: tuple[float, str, float]


def curve_separation(points: pd.DataFrame, ok: pd.DataFrame, cells: pd.DataFrame, metric: str,
                     dataset: str, encoder: str) -> Separation | None:
    """The section's Separation from `points` (`cells.compute_curves` of `metric`: each run's
    periodic evaluations and final value; the untrained encoder's at epoch 0), or None where no
    pretrained run was evaluated before its end or there is no untrained-encoder row."""
    section = cells[(cells.dataset == dataset) & (cells.encoder == encoder)]
    untrained = section[section.method.map(
        lambda m: m in REFERENCE_ROWS and REFERENCE_ROWS[m].features == UNTRAINED)]
    if points.empty or untrained.empty:
        return None
    runs = ok.drop_duplicates("run_dir").set_index("run_dir")[[*CELL, "seed"]]
    pts = points.join(runs, on="run_dir").set_index(list(CELL)).sort_index()
    reference = cell_key(next(untrained.itertuples(index=False)))
    if reference not in pts.index:
        return None
    at_reference = pts.loc[[reference]]  # a list: always a frame, even of one point
    base = dict(zip(at_reference.seed, at_reference.value))
    tests, periodic = [], False
    for row in section[~section.is_reference].itertuples(index=False):
        if cell_key(row) not in pts.index:
            continue
        mine = pts.loc[[cell_key(row)]]
        periodic |= bool((mine.groupby("run_dir").size() > 1).any())
        for epoch, at in mine.groupby("epoch"):
            tests.append((float(epoch), row.label,
                          paired_difference(dict(zip(at.seed, at.value)), base)))
    if not periodic:
        return None
    adjusted = holm([t[2].p_value for t in tests])
    apart = sorted((epoch, label, p.mean_diff) for (epoch, label, p), q in zip(tests, adjusted)
                   if q < ALPHA and p.mean_diff > 0)
    best = max(((e, label, p.mean_diff) for e, label, p in tests), key=lambda t: t[2])
    return Separation(metric, tuple(sorted({t[0] for t in tests})),
                      sum(not math.isnan(q) for q in adjusted), apart[0] if apart else None, best)


def _points(value: float, scale: float) -> str:
    return f"{value * scale:+.1f} points"


def _separation_words(sep: Separation | None, plan: Schedule) -> str:
    """How far the schedule was from where pretraining separates, in words."""
    if sep is None:
        return (f"the schedule, {plan.words()}, recorded no --eval-every curve, so where "
                "pretraining separates is unknown (rerun with --eval-every 1 and longer "
                "schedules to find it)")
    info = metric_info(sep.metric)
    title = info.title.removesuffix(" %")
    exploratory = (f"exploratory: Holm over the curves' {sep.tests} points, not in the "
                   "verdict's family")
    if sep.first is not None:
        epoch, label, diff = sep.first
        return (f"on the --eval-every {title} curves pretraining first separated from "
                f"{UNTRAINED_ROW} at epoch {epoch:g} of {plan.epochs}{plan.steps_at(epoch)} "
                f"({label} {_points(diff, info.scale)}; {exploratory})")
    epoch, label, diff = sep.best
    evaluated = ", ".join(f"{e:g}" for e in sep.epochs)
    return (f"no point of the --eval-every {title} curves (epochs {evaluated}) separated either "
            f"(largest gain {label} {_points(diff, info.scale)} at epoch {epoch:g}; "
            f"{exploratory}), so pretraining separates, if at all, beyond this schedule of "
            f"{plan.words()}")


def moved_nothing(family: Family, primary: str) -> bool:
    """Whether the section's gate was tested and moved no row: then no difference between
    strategies is worded as a finding (comparing them compares noise)."""
    rows = family.gate()
    tested = rows[(rows.metric == primary) & rows.p_adjusted.notna()]
    return not tested.empty and bool((tested.p_adjusted >= ALPHA).all())


def gate_line(family: Family, primary: str, plan: Schedule,
              separation: Separation | None = None) -> str:
    """The verdict's first line: how many pretrained rows differ from the untrained encoder on
    `primary` (Holm-adjusted in the section's `family`); where none, that the strategy
    comparison is uninformative and how far the schedule was from pretraining separating."""
    rows = family.gate()
    rows = rows[rows.metric == primary]
    info = metric_info(primary)
    title = info.title.removesuffix(" %")
    if rows.empty:
        return (f"⚠ Pretraining gate: no {UNTRAINED_ROW} row in this section, so whether "
                "pretraining moved the encoder at all is not measured and no comparison below "
                f"can be told apart from an untrained encoder (add the reference row "
                f"{UNTRAINED_ROW}).")
    tested = rows[rows.p_adjusted.notna()]
    if tested.empty:
        return (f"Pretraining gate: not tested: at most {int(rows.n.max())} seed(s) shared with "
                f"{UNTRAINED_ROW}, a test needs {MIN_PAIRED_FOR_TEST} (--seeds 0,1,2); whether "
                "pretraining moved the encoder is unknown.")
    size = family.size
    moved = tested[tested.p_adjusted < ALPHA]
    untested = len(rows) - len(tested)
    head = (f"pretraining moved {len(moved)} of {len(tested)} pretrained rows away from "
            f"{UNTRAINED_ROW} (the untrained encoder) on {title}"
            + (f" ({untested} more with fewer than {MIN_PAIRED_FOR_TEST} shared seeds: not "
               "tested)" if untested else ""))
    if len(moved):
        parts = [f"{r.label} {_points(r.mean_diff, info.scale)}, 95 % CI "
                 f"[{r.ci_low * info.scale:.1f}, {r.ci_high * info.scale:.1f}], Holm-adjusted "
                 f"p = {r.p_adjusted:.2g}" for r in moved.itertuples(index=False)]
        rest = len(tested) - len(moved)
        tail = (f"; the other {rest} are not distinguishable from it, and their comparisons "
                "below say nothing about what pretraining adds" if rest else "")
        return (f"Pretraining gate: {head} (Holm, in the section's family of {size}): "
                + "; ".join(parts) + tail + ".")
    best = tested.loc[tested.mean_diff.idxmax()]
    n = int(tested.n.max())
    needed = detectable(tested, size, n) * info.scale
    return (f"⚠ Pretraining gate: {head} (best {best.label} {_points(best.mean_diff, info.scale)}"
            f", 95 % CI [{best.ci_low * info.scale:.1f}, {best.ci_high * info.scale:.1f}]; Holm, "
            f"in the section's family of {size}), so the strategy comparison below is "
            f"uninformative at this scale: at {n} seeds the gate needed about {needed:.1f} "
            f"points (80 % power at 5 %/{size}); {_separation_words(separation, plan)}.")
