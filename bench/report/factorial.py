"""The mask shape x fill factorial (sweeps/factorial.toml): where a section's rows cross what the
encoder sees (a random subset, or one block) with how the rest is filled (a mask token, heat
propagation, interpolation), the report shows the cross as a table and the effects one factor
at a time: each main effect and each interaction, with CIs, paired by seed. Any encoder, any
fills: the factors are read from each row's method and options."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.core.references import REFERENCE_ROWS
from bench.report.cells import (
    Outcomes,
    cell_key,
    contrast_variance,
    seed_runs,
    seed_values,
    summary_of,
)
from bench.report.metrics import metric_info
from bench.report.stats import contrast_test
from bench.report.tables import Cell, Table, format_summary

SHAPE_KEYS = ("visible", "block_position", "position")  # the options that say the mask shape
REFERENCE_FILL = "mae"  # fill effects are stated against it where it is present


def mask_shape(method: str, options: dict[str, Any]) -> str:
    """'random subset' or 'block (PLACEMENT)' from a row's options: `visible` where the method
    has it (a method with only a block `position`, as QB-Heat before it had `visible`, shows
    a block), the placement from `block_position` or `position`."""
    visible = options.get("visible", "block" if "position" in options else "random")
    if visible == "random":
        return "random subset"
    placement = options.get("block_position", options.get("position", "?"))
    return f"block ({placement})"


@dataclass
class Factorial:
    """A section's factorial: `cells[(shape, fill)]` -> the cell row (of `row_labels`)."""

    shapes: list[str]
    fills: list[str]
    cells: dict[tuple[str, str], Any]


def find_factorial(cells: pd.DataFrame) -> Factorial | None:
    """The factorial among a section's rows, if it has one: non-reference cells of one variant
    whose options, per method, differ only in the mask shape, covering at least two shapes
    for each of two fills. Where several variants qualify, the one with the most cells."""
    best: Factorial | None = None
    strategies = cells[~cells.method.isin(REFERENCE_ROWS)]
    for _, group in strategies.groupby("variant", sort=False):
        found: dict[tuple[str, str], Any] = {}
        rest: dict[str, set[str]] = {}
        for row in group.itertuples(index=False):
            options = json.loads(row.options)
            shape = mask_shape(row.method, options)
            if (shape, row.method) in found:
                break  # two option sets of one method with one shape: not a clean factorial
            found[(shape, row.method)] = row
            others = {k: v for k, v in options.items() if k not in SHAPE_KEYS}
            rest.setdefault(row.method, set()).add(json.dumps(others, sort_keys=True))
        else:
            if any(len(v) > 1 for v in rest.values()):
                continue
            shapes = sorted({s for s, _ in found}, key=lambda s: (s != "random subset", s))
            fills = sorted({f for _, f in found}, key=lambda f: (f != REFERENCE_FILL, f))
            crossed = [f for f in fills if all((s, f) in found for s in shapes)]
            if len(shapes) >= 2 and len(crossed) >= 2 and (
                    best is None or len(found) > len(best.cells)):
                best = Factorial(shapes, fills, found)
    return best


@dataclass(frozen=True)
class Effect:
    name: str
    terms: tuple[tuple[float, tuple[str, str]], ...]  # (coefficient, (shape, fill))


def effects(f: Factorial) -> list[Effect]:
    """Main effects and interactions as contrasts of cell means (each averaged over the
    levels of the other factor where both cells exist): the last shape minus the first
    (block minus random subset), each fill minus the reference fill, and each fill's shape
    effect minus the reference fill's."""
    first, last = f.shapes[0], f.shapes[-1]
    both = [fill for fill in f.fills if (first, fill) in f.cells and (last, fill) in f.cells]
    out = []
    if both:
        out.append(Effect(f"mask shape: {last} − {first} (mean over {', '.join(both)})",
                          tuple(t for fill in both for t in ((1 / len(both), (last, fill)),
                                                             (-1 / len(both), (first, fill))))))
    ref = f.fills[0]
    for fill in f.fills[1:]:
        shared = [s for s in f.shapes if (s, fill) in f.cells and (s, ref) in f.cells]
        if shared:
            out.append(Effect(f"fill: {fill} − {ref} (mean over {', '.join(shared)})",
                              tuple(t for s in shared for t in ((1 / len(shared), (s, fill)),
                                                                (-1 / len(shared), (s, ref))))))
    for fill in f.fills[1:]:
        if fill in both and ref in both:
            out.append(Effect(f"interaction: ({last} − {first}) under {fill} − under {ref}",
                              ((1.0, (last, fill)), (-1.0, (first, fill)),
                               (-1.0, (last, ref)), (1.0, (first, ref)))))
    return out


EFFECT_COLUMNS = ["dataset", "encoder", "effect", "metric", "estimate", "ci_low", "ci_high", "n",
                  "p_value", "p_adjusted", "family", "test_examples"]


def effect_stats(ok: pd.DataFrame, f: Factorial, metric: str, outcomes: Outcomes
                 ) -> pd.DataFrame:
    """Each effect's per-seed contrast on the seeds every cell in it has: mean, t CI (with the
    test set's variance where every run recorded per-example outcomes) and p (EFFECT_COLUMNS;
    p_adjusted and family: bench.report.family, in the section's one family)."""
    by_seed, runs = seed_values(ok), seed_runs(ok)
    rows = []
    for effect in effects(f):
        keys = [(c, cell_key(f.cells[level])) for c, level in effect.terms]
        values = [by_seed.get((key, metric), {}) for _, key in keys]
        seeds = tuple(sorted(set.intersection(*(set(v) for v in values))))
        per_seed = [sum(c * v[s] for (c, _), v in zip(keys, values)) for s in seeds]
        test = contrast_variance([(c, [runs[key][s] for s in seeds]) for c, key in keys],
                                 metric, outcomes) if seeds else None
        p = contrast_test(per_seed, seeds, test=test)
        any_cell = f.cells[effect.terms[0][1]]
        rows.append((any_cell.dataset, any_cell.encoder, effect.name, metric, p.mean_diff,
                     p.ci_low, p.ci_high, p.n, p.p_value, math.nan, 0,
                     0 if test is None else test.examples))
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def factorial_tables(stats: pd.DataFrame, f: Factorial, found: pd.DataFrame, metric: str,
                     title: str) -> list[Table]:
    """The 2 x F table of cell means (rows: mask shapes; columns: fills) and the effects."""
    info = metric_info(metric)
    by_label = {r.label: r for r in stats[stats.metric == metric].itertuples(index=False)}
    rows = []
    for shape in f.shapes:
        row = [Cell(shape)]
        for fill in f.fills:
            cell = f.cells.get((shape, fill))
            r = by_label.get(cell.label) if cell is not None else None
            row.append(Cell("–" if r is None else _summary(r, info.scale)))
        rows.append(row)
    grid = Table(f"{title}: mask shape x fill, {info.title}", ["mask shape", *f.fills], rows,
                 "'–': not run. The fill is the method; the shape is what its encoder sees, "
                 "at equal visible counts.")
    effect_rows = [[Cell(e.effect), Cell(_signed(e, info.scale)),
                    Cell("–" if e.p_value is None or pd.isna(e.p_value) else f"{e.p_value:.2g}"),
                    Cell("–" if pd.isna(e.p_adjusted) else f"{e.p_adjusted:.2g}")]
                   for e in found.itertuples(index=False)]
    return [grid, Table(f"{title}: effects of mask shape and fill, {info.title}",
                        ["effect", "estimate (points)", "p", "Holm p"], effect_rows,
                        "Per-seed contrasts of the cell values on the seeds all their cells "
                        "have; main effects average over the other factor's levels; an "
                        "interaction is the difference of the shape effect between two fills. "
                        "Holm p: adjusted in the section's one family (the verdict's), beside "
                        "its pretraining gate and baseline comparisons. With per-example "
                        "outcomes the CIs also hold the test set's variance.")]


def _summary(r: Any, scale: float) -> str:
    return format_summary(summary_of(r), scale)


def _signed(e: Any, scale: float) -> str:
    if e.n == 0:
        return "– (no shared seeds)"
    half = (e.ci_high - e.ci_low) / 2 * scale
    if math.isnan(half):
        return f"{e.estimate * scale:+.2f} (n={e.n})"
    return f"{e.estimate * scale:+.2f} ± {half:.2f} (n={e.n})"


def factorial_effects(ok: pd.DataFrame, cells: pd.DataFrame, primary: dict[tuple[str, str], str],
                      outcomes: Outcomes) -> tuple[dict[tuple[str, str], Factorial], pd.DataFrame]:
    """Per section, its factorial (if its rows cross mask shape and fill) and the effects on
    the section's primary metric (EFFECT_COLUMNS, not yet adjusted)."""
    found: dict[tuple[str, str], Factorial] = {}
    frames = []
    for section, group in cells.groupby(["dataset", "encoder"], sort=False):
        f = find_factorial(group)
        if f is not None and section in primary:
            found[section] = f
            frames.append(effect_stats(ok, f, primary[section], outcomes))
    return found, (pd.concat(frames, ignore_index=True) if frames
                   else pd.DataFrame(columns=EFFECT_COLUMNS))
