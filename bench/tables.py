"""Seed statistics per cell, paired comparisons against a baseline, accuracy at equal compute,
and the tables built from them, rendered once as Markdown, LaTeX (booktabs) or HTML.

A cell is one (dataset, encoder, method, option set, variant) over its seeds; the variant holds
the other settings that differ between runs (bench/provenance.py, canonical JSON), so runs that
differ in anything but the seed are never pooled. Values are the final epoch's, always.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.catalog import REFERENCES as CATALOG_REFERENCES
from bench.stats import CONFIDENCE, Summary, cis_overlap, paired_difference, summarize

SECTION = ("dataset", "encoder")
CELL = (*SECTION, "method", "options", "variant")
REFERENCES = tuple(CATALOG_REFERENCES)  # in table order
NOT_COMPARABLE = "not comparable across methods: each method solves a different task"


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is titled and scaled, whether higher is better (None: no best), and which
    table it belongs to: accuracy (main), compute, or task (the pretext task's own numbers)."""

    title: str
    scale: float = 1.0
    higher_is_better: bool | None = None
    group: str = "task"


METRICS: dict[str, MetricInfo] = {
    "linear_top1": MetricInfo("linear top-1 %", 100.0, True, "accuracy"),
    "knn_top1": MetricInfo("kNN top-1 %", 100.0, True, "accuracy"),
    "tran1_top1": MetricInfo("tran1 top-1 %", 100.0, True, "accuracy"),
    "finetune_top1": MetricInfo("fine-tune top-1 %", 100.0, True, "accuracy"),
    "next_sentence_top1": MetricInfo("next-sentence top-1 %", 100.0, True, "accuracy"),
    "compute.pretrain_flops_per_sample": MetricInfo("GFLOPs/sample", 1e-9, False, "compute"),
    "compute.train_samples_per_s": MetricInfo("samples/s", 1.0, True, "compute"),
    "compute.train_s": MetricInfo("pretrain s", 1.0, False, "compute"),
    "compute.wall_s": MetricInfo("wall s", 1.0, False, "compute"),
    "compute.peak_mem_bytes": MetricInfo("peak mem GiB", 2.0**-30, False, "compute"),
    "compute.processes": MetricInfo("processes", 1.0, None, "compute"),
    "compute.load_avg": MetricInfo("load avg (1 min)", 1.0, None, "compute"),
    "setup.visible_tokens": MetricInfo("visible tokens", 1.0, None, "setup"),
    "setup.scored_positions": MetricInfo("scored positions", 1.0, None, "setup"),
    "setup.encoder_params": MetricInfo("encoder params M", 1e-6, None, "setup"),
    "setup.decoder_params": MetricInfo("decoder params M", 1e-6, None, "setup"),
    "setup.method_params": MetricInfo("method params M", 1e-6, None, "setup"),
    "setup.epochs": MetricInfo("epochs", 1.0, None, "setup"),
    "setup.batch_size": MetricInfo("batch", 1.0, None, "setup"),
    "recon_loss": MetricInfo("test recon loss"),
    "pretrain_loss": MetricInfo("final pretrain loss"),
    "masked_token_acc": MetricInfo("masked-token acc %", 100.0),
    "perplexity": MetricInfo("perplexity"),
    "masked_bow_recall": MetricInfo("masked-sentence word recall %", 100.0),
    # Fill diagnostics (bench/diagnostics.py, QB-Heat's operator_diagnostics): the report's
    # QB-Heat section. Distance d: Chebyshev distance in tokens to the nearest visible position.
    "recon_loss_d1": MetricInfo("recon loss d=1", group="fill"),
    "recon_loss_d2": MetricInfo("recon loss d=2", group="fill"),
    "recon_loss_d3plus": MetricInfo("recon loss d≥3", group="fill"),
    "heat_commutator": MetricInfo("‖AB−BA‖/(‖A‖‖B‖)", group="fill"),
    "heat_radius_right": MetricInfo("ρ(I+A)", group="fill"),
    "heat_radius_left": MetricInfo("ρ(I−A)", group="fill"),
    "heat_radius_down": MetricInfo("ρ(I+B)", group="fill"),
    "heat_radius_up": MetricInfo("ρ(I−B)", group="fill"),
    "heat_norm_A": MetricInfo("‖A‖_F", group="fill"),
    "heat_norm_B": MetricInfo("‖B‖_F", group="fill"),
}
MAIN_COMPUTE = ("compute.pretrain_flops_per_sample", "compute.train_samples_per_s")


PREFIX_GROUPS = {"compute.": "compute", "setup.": "setup"}  # summary.json records by prefix


def metric_info(metric: str) -> MetricInfo:
    """Catalogue entry; a metric the catalogue does not know is shown as is, never ranked, in
    the table of its summary.json record (compute., setup.), else with the task metrics."""
    if metric in METRICS:
        return METRICS[metric]
    group = next((g for p, g in PREFIX_GROUPS.items() if metric.startswith(p)), "task")
    return MetricInfo(metric, group=group)


def metric_order(metrics: Sequence[str], group: str) -> list[str]:
    """The metrics of `group` present in `metrics`: catalogue order, then unknown ones sorted."""
    present = set(metrics)
    known = [m for m, info in METRICS.items() if info.group == group and m in present]
    unknown = sorted(m for m in present if m not in METRICS and metric_info(m).group == group)
    return known + unknown


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


def row_labels(ok: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per cell: CELL columns, `label` (method, then the options that differ between
    its option sets in the section, then in brackets the settings that depart from the
    section's usual ones), `is_reference`, in table order: baseline, other methods, reference
    rows."""
    cells = ok[list(CELL)].drop_duplicates().reset_index(drop=True)
    parsed = {o: json.loads(o) for o in cells.options.unique()}
    usual = usual_settings(ok)
    labels, keys = [], []
    for row in cells.itertuples(index=False):
        same = cells[(cells.dataset == row.dataset) & (cells.encoder == row.encoder)
                     & (cells.method == row.method)]
        opts = parsed[row.options]
        differing = sorted(
            k for k in opts
            if len({json.dumps(parsed[o].get(k), sort_keys=True) for o in same.options}) > 1
        )
        parts = [row.method, *(f"{k}={opts[k]}" for k in differing)]
        common = usual[(row.dataset, row.encoder)]
        departs = [f"{k}={v}" for k, v in json.loads(row.variant).items()
                   if k in common and common[k] != v]
        if departs:
            parts.append(f"[{' '.join(departs)}]")
        labels.append(" ".join(parts))
        rank = 0 if row.method == baseline else 2 if row.method in REFERENCES else 1
        ref_rank = REFERENCES.index(row.method) if rank == 2 else 0
        keys.append((rank, ref_rank, row.method, _options_sort_key(opts), row.variant))
    cells["label"] = labels
    cells["is_reference"] = cells.method.isin(REFERENCES)
    order = sorted(range(len(cells)), key=lambda i: (cells.dataset[i], cells.encoder[i], keys[i]))
    return cells.iloc[order].reset_index(drop=True)


def sections(cells: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(cells.dataset, cells.encoder)))


# ---------------------------------------------------------------------------------------------
# Statistics


def summary_of(row: Any) -> Summary:
    return Summary(row.mean, row.std, int(row.n), row.ci_low, row.ci_high)


def cell_stats(ok: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, n and Student-t CI of every cell x metric: CELL + label + is_reference +
    metric, mean, std, n, ci_low, ci_high (unscaled units)."""
    rows = []
    for key, group in ok.groupby([*CELL, "metric"], sort=False):
        s = summarize(group.value.to_numpy())
        rows.append((*key, s.mean, s.std, s.n, s.ci_low, s.ci_high))
    stats = pd.DataFrame(rows, columns=[*CELL, "metric", "mean", "std", "n", "ci_low", "ci_high"])
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


def paired_stats(ok: pd.DataFrame, cells: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Every non-baseline cell minus its section's baseline cell, per accuracy metric, on the
    seeds both have: mean difference, its t CI, paired t-test p (None when n < 3)."""
    base = baseline_cells(cells, ok, baseline)
    by_seed: dict[tuple, dict[int, float]] = {}  # (cell, metric) -> {seed: value}
    for *cell, metric, seed, value in zip(*(ok[k] for k in (*CELL, "metric", "seed", "value"))):
        by_seed.setdefault((tuple(cell), metric), {})[seed] = value
    rows = []
    for row in cells.itertuples(index=False):
        b = base.get((row.dataset, row.encoder))
        if b is None or b == row:
            continue
        mine, theirs = tuple(getattr(row, k) for k in CELL), tuple(getattr(b, k) for k in CELL)
        for metric in metric_order([m for c, m in by_seed if c == mine], "accuracy"):
            p = paired_difference(by_seed[mine, metric], by_seed.get((theirs, metric), {}))
            rows.append((*(getattr(row, k) for k in CELL), row.label, b.label, metric,
                         p.mean_diff, p.ci_low, p.ci_high, p.n, p.p_value, p.too_few,
                         " ".join(map(str, p.seeds))))
    columns = [*CELL, "label", "baseline", "metric", "mean_diff", "ci_low", "ci_high", "n",
               "p_value", "too_few", "seeds"]
    return pd.DataFrame(rows, columns=columns)


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

    def budget_text(self, budget: float) -> str:
        """A budget in the column's units, e.g. 'at 2.1 GFLOP of pretraining'."""
        return f"at {self.text(budget * self.factor)} of pretraining"


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
    pts = points[~points.run_dir.map(run_cell.method).isin(REFERENCES)]
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


# ---------------------------------------------------------------------------------------------
# Tables and their three renderings


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    """A rendered-format-free table: header, rows of cells (first column: the row label)."""

    title: str
    columns: list[str]
    rows: list[list[Cell]]
    note: str = ""
    anchor: str = ""  # HTML id


def _digits(x: float) -> int:
    a = abs(x)
    return 0 if a >= 1000 else 1 if a >= 10 else 2 if a >= 0.1 or a == 0 else 4


def format_summary(s: Summary, scale: float, signed: bool = False) -> str:
    """'mean ± CI half-width (n=k)'; n=1 has no interval."""
    if s.n == 0 or math.isnan(s.mean):
        return "–"
    mean = s.mean * scale
    d = _digits(max(abs(mean), s.half_width * abs(scale) if s.n > 1 else 0.0))
    sign = "+" if signed else ""
    if s.n == 1 or math.isnan(s.ci_low):
        return f"{mean:{sign}.{d}f} (n={s.n})"
    return f"{mean:{sign}.{d}f} ± {s.half_width * abs(scale):.{d}f} (n={s.n})"


def best_rows(stats: pd.DataFrame, metric: str) -> set[str]:
    """Labels to bold in `metric`'s column: the best non-reference cell, when its CI does not
    overlap the runner-up's. Metrics without a direction are never bolded."""
    info = metric_info(metric)
    direction = info.higher_is_better
    rows = stats[(stats.metric == metric) & ~stats.is_reference & stats["mean"].notna()]
    if direction is None or info.group != "accuracy" or len(rows) < 2:
        return set()
    ranked = rows.sort_values("mean", ascending=not direction).itertuples(index=False)
    best, runner_up = next(ranked), next(ranked)
    if best.mean == runner_up.mean or cis_overlap(summary_of(best), summary_of(runner_up)):
        return set()
    return {best.label}


def stat_table(stats: pd.DataFrame, cells: pd.DataFrame, metrics: list[str], title: str,
               note: str = "", anchor: str = "") -> Table:
    """Rows = cells of one section (in `cells` order) with a value in `metrics`, columns =
    `metrics`."""
    bold = {m: best_rows(stats, m) for m in metrics}
    by_key = {(r.label, r.metric): r for r in stats.itertuples(index=False)}
    rows = []
    for label in cells.label:
        if not any((label, m) in by_key for m in metrics):
            continue
        row = [Cell(label)]
        for m in metrics:
            r = by_key.get((label, m))
            text = "–" if r is None else format_summary(summary_of(r), metric_info(m).scale)
            row.append(Cell(text, label in bold[m]))
        rows.append(row)
    return Table(title, ["row", *(metric_info(m).title for m in metrics)], rows, note, anchor)


def format_paired(r: Any, scale: float) -> str:
    diff = Summary(r.mean_diff, math.nan, int(r.n), r.ci_low, r.ci_high)
    if r.n == 0:
        return "– (no shared seeds)"
    text = format_summary(diff, scale, signed=True)
    if r.too_few:
        return f"{text}, n < 3: no test"
    return f"{text}, p = {r.p_value:.2g}" if not math.isnan(r.p_value) else f"{text}, p undefined"


def paired_table(paired: pd.DataFrame, title: str, note: str) -> Table:
    metrics = metric_order(paired.metric.unique(), "accuracy")
    labels = list(dict.fromkeys(paired.label))
    by_key = {(r.label, r.metric): r for r in paired.itertuples(index=False)}
    rows = [
        [Cell(label), *(Cell(format_paired(by_key[(label, m)], metric_info(m).scale))
                        if (label, m) in by_key else Cell("–") for m in metrics)]
        for label in labels
    ]
    titles = [f"Δ {metric_info(m).title}" for m in metrics]
    return Table(title, ["row", *titles], rows, note)


def matched_table(matched: pd.DataFrame, title: str, note: str) -> Table:
    scale = metric_info(matched.metric.iloc[0]).scale
    columns, cols = ["row"], []
    for axis in COMPUTE_AXES:
        sub = matched[matched.axis == axis.name]
        if not sub.empty:
            columns.append(axis.budget_text(sub.budget.iloc[0]))
            cols.append({r.label: r for r in sub.itertuples(index=False)})
    rows = []
    for label in dict.fromkeys(matched.label):
        row = [Cell(label)]
        for sub in cols:
            r = sub.get(label)
            row.append(Cell("–" if r is None else format_summary(summary_of(r), scale)))
        rows.append(row)
    return Table(title, columns, rows, note)


def with_column(table: Table, title: str, by_label: dict[str, str]) -> Table:
    """`table` with one more column: each row's value in `by_label` (by row label), else '–'."""
    rows = [[*row, Cell(by_label.get(row[0].text, "–"))] for row in table.rows]
    return Table(table.title, [*table.columns, title], rows, table.note, table.anchor)


def list_table(frame: pd.DataFrame, title: str, note: str = "") -> Table:
    """Any frame as a plain table (failed runs, skipped folders, settings)."""
    rows = [[Cell(str(v)) for v in r] for r in frame.itertuples(index=False)]
    return Table(title, [str(c) for c in frame.columns], rows, note)


def to_markdown(table: Table) -> str:
    def cell(c: Cell) -> str:
        text = c.text.replace("|", "\\|")
        return f"**{text}**" if c.bold else text

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                  "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "\\": r"\textbackslash{}", "±": r"$\pm$", "–": "--", "Δ": r"$\Delta$",
                  "<": r"$<$", ">": r"$>$", "·": r"$\cdot$", "≥": r"$\geq$", "ρ": r"$\rho$",
                  "‖": r"$\|$", "−": "-"}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group()], text)


def to_latex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}) with the title as a comment."""
    def cell(c: Cell) -> str:
        text = latex_escape(c.text)
        return rf"\textbf{{{text}}}" if c.bold else text

    lines = [f"% {table.title}", r"\begin{tabular}{l" + "r" * (len(table.columns) - 1) + "}",
             r"\toprule", " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def to_html(table: Table) -> str:
    escape = html.escape
    anchor = f' id="{escape(table.anchor)}"' if table.anchor else ""

    def cell(c: Cell, tag: str) -> str:
        text = escape(c.text)
        return f"<{tag}>{'<strong>' + text + '</strong>' if c.bold else text}</{tag}>"

    head = "".join(cell(Cell(c), "th") for c in table.columns)
    body = "".join("<tr>" + "".join(cell(c, "td") for c in row) + "</tr>" for row in table.rows)
    return (f"<table{anchor}><caption>{escape(table.title)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


CI_NOTE = (f"mean ± half-width of the {CONFIDENCE * 100:.0f} % Student-t confidence interval over seeds "
           "(t with n - 1 degrees of freedom; std in stats.csv), n = seeds per cell; final-epoch "
           "values only")
