"""Tables built from the cell statistics (bench/report/cells.py), rendered once as Markdown, LaTeX
(booktabs) or HTML: bold only where a row's CI does not overlap the runner-up's."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.report.cells import COMPUTE_AXES, summary_of
from bench.report.metrics import judged_metrics, metric_info
from bench.report.stats import CONFIDENCE, Summary, cis_overlap


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


def format_range(r: Any, scale: float) -> str:
    """A machine figure (throughput, seconds: `MetricInfo.machine`): 'median [min–max] (n=k)',
    the spread the machine and its load gave, not a confidence interval."""
    if r.n == 0 or math.isnan(r.median):
        return "–"
    low, mid, high = (v * scale for v in (r.min, r.median, r.max))
    d = _digits(max(abs(low), abs(high)))
    if r.n == 1:
        return f"{mid:.{d}f} (n=1)"
    return f"{mid:.{d}f} [{low:.{d}f}–{high:.{d}f}] (n={r.n})"


def format_cell(r: Any, metric: str) -> str:
    """One cell of a stat table (`r`: a row of `cells.cell_stats`): mean ± CI, a machine
    figure's median and range, or '–' for a pretraining figure of a reference row."""
    info = metric_info(metric)
    if r is None or (info.pretraining and r.is_reference):
        return "–"
    if info.machine:
        return format_range(r, info.scale)
    return format_summary(summary_of(r), info.scale)


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
            row.append(Cell(format_cell(by_key.get((label, m)), m), label in bold[m]))
        rows.append(row)
    return Table(title, ["row", *(metric_info(m).title for m in metrics)], rows, note, anchor)


def series_table(stats: pd.DataFrame, cells: pd.DataFrame, measures: dict[str, dict[str, str]],
                 columns: list[str], title: str, note: str = "") -> Table:
    """A row per (cell, measure) with a value: `measures` maps a measure's name to its metric
    in each of `columns` (e.g. R² of the fitted map at distance 1..4)."""
    by_key = {(r.label, r.metric): r for r in stats.itertuples(index=False)}
    rows = []
    for label in cells.label:
        for measure, metric_of in measures.items():
            found = [by_key.get((label, metric_of.get(c))) for c in columns]
            if any(r is not None for r in found):
                rows.append([Cell(f"{label} · {measure}"), *(
                    Cell("–" if r is None else format_cell(r, r.metric)) for r in found)])
    return Table(title, ["row · measure", *columns], rows, note)


def format_paired(r: Any, scale: float) -> str:
    diff = Summary(r.mean_diff, math.nan, int(r.n), r.ci_low, r.ci_high)
    if r.n == 0:
        return "– (no shared seeds)"
    text = format_summary(diff, scale, signed=True)
    if r.too_few:
        return f"{text}, n < 3: no test"
    if math.isnan(r.p_value):
        return f"{text}, p undefined"
    holm = getattr(r, "p_adjusted", math.nan)
    return f"{text}, p = {r.p_value:.2g}" + ("" if math.isnan(holm) else f", Holm p = {holm:.2g}")


def paired_table(paired: pd.DataFrame, title: str, note: str) -> Table:
    metrics = judged_metrics(paired.metric.unique())
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


# A cell that holds a number (a value, "39.1 ± 2.3 (n=3)", "–"): kept on one line in HTML,
# while text cells (labels, settings, commands, paths) wrap, so no table is wider than the page.
NUMBER_CELL = re.compile(r"^[-−+–]?(\d|\.\d|–$|$)")


def to_html(table: Table) -> str:
    escape = html.escape
    anchor = f' id="{escape(table.anchor)}"' if table.anchor else ""

    def cell(c: Cell, tag: str) -> str:
        text = escape(c.text)
        kind = ' class="n"' if tag == "td" and NUMBER_CELL.match(c.text) else ""
        return f"<{tag}{kind}>{'<strong>' + text + '</strong>' if c.bold else text}</{tag}>"

    head = "".join(cell(Cell(c), "th") for c in table.columns)
    body = "".join("<tr>" + "".join(cell(c, "td") for c in row) + "</tr>" for row in table.rows)
    return (f"<table{anchor}><caption>{escape(table.title)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


CI_NOTE = (f"mean ± half-width of the {CONFIDENCE * 100:.0f} % Student-t confidence interval over seeds "
           "(t with n - 1 degrees of freedom; std in stats.csv), n = seeds per cell; final-epoch "
           "values only")
