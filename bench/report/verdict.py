"""What a reader wants first: who wins (the verdict, from the paired comparisons) and whether
the comparison was fair (the setup every row ran with, and a warning where compared rows
differ). Both per (dataset, encoder) section."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from bench.core.references import REFERENCE_ROWS
from bench.report.cells import summary_of
from bench.report.metrics import metric_info, metric_order
from bench.report.stats import MIN_PAIRED_FOR_TEST
from bench.report.tables import Cell, Table, format_summary

# Setup that must be equal for a comparison to be fair, and what differs by the strategy
# itself (its own parameters and its fill's cost): both shown, warned about differently.
SETUP_FAIR = ("setup.visible_tokens", "setup.scored_positions", "setup.encoder_params",
              "setup.decoder_params", "setup.decoder_flops", "setup.epochs", "setup.batch_size")
SETUP_BY_DESIGN = ("setup.method_params", "compute.pretrain_flops_per_sample")
RULE_COLUMN = "weight-decay rule"


def verdict(paired: pd.DataFrame, baseline: str) -> list[str]:
    """One sentence per protocol of a section: the rows whose paired difference to the
    baseline excludes 0 on at least MIN_PAIRED_FOR_TEST seeds, in words, or that nothing is
    distinguishable at this n. Reference rows are not judged (they are not strategies)."""
    rows = paired[~paired.method.isin(REFERENCE_ROWS)]
    if rows.empty:
        return [f"no verdict: no strategy besides the baseline {baseline} in this section "
                "(reference rows are not judged)"]
    lines = []
    for metric in metric_order(rows.metric.unique(), "accuracy"):
        info = metric_info(metric)
        group = rows[rows.metric == metric]
        tested = group[group.n >= MIN_PAIRED_FOR_TEST]
        clear = [r for r in tested.itertuples(index=False)
                 if r.ci_low > 0 or r.ci_high < 0]
        if clear:
            parts = []
            for r in clear:
                word = "beats" if r.mean_diff > 0 else "trails"
                scale = info.scale
                parts.append(
                    f"{r.label} {word} {baseline} on {info.title.removesuffix(' %')} by "
                    f"{abs(r.mean_diff) * scale:.1f} points, 95 % CI [{r.ci_low * scale:.1f}, "
                    f"{r.ci_high * scale:.1f}], {r.n} seeds")
            others = len(group) - len(clear)
            rest = (f"; {others} other row(s) not distinguishable from {baseline}" if others
                    else "")
            lines.append("; ".join(parts) + rest + ".")
        elif tested.empty:
            n = int(group.n.max()) if len(group) else 0
            lines.append(f"{info.title.removesuffix(' %')}: no verdict: at most {n} seed(s) "
                         f"shared with {baseline}, a test needs {MIN_PAIRED_FOR_TEST} "
                         "(--seeds 0,1,2).")
        else:
            lines.append(f"{info.title.removesuffix(' %')}: no row is distinguishable from "
                         f"{baseline} at this n ({', '.join(sorted({str(n) for n in tested.n}))}"
                         " seeds; 95 % CIs of the paired differences include 0).")
    return lines


def fairness(stats: pd.DataFrame, cells: pd.DataFrame, rules: Mapping[str, str],
             title: str) -> tuple[Table, list[str]]:
    """The setup of every row (visible tokens, scored positions, trainable parameters by part,
    pretraining FLOPs/sample, epochs, batch, weight-decay rule) and the warnings: where
    compared (non-reference) rows differ in a setting that should be equal, and, stated apart,
    where they differ by design."""
    by_key = {(r.label, r.metric): r for r in stats.itertuples(index=False)}
    columns = [m for m in (*SETUP_FAIR, *SETUP_BY_DESIGN)
               if any((label, m) in by_key for label in cells.label)]
    recorded = [rule for rule in dict.fromkeys(rules.values()) if rule]
    rule_ids = {rule: f"R{i + 1}" for i, rule in enumerate(recorded)}
    rows = []
    for label in cells.label:
        row = [Cell(label)]
        for m in columns:
            r = by_key.get((label, m))
            row.append(Cell("–" if r is None else _plain(summary_of(r), metric_info(m).scale)))
        row.append(Cell(rule_ids.get(rules.get(label, ""), "(not recorded)")))
        rows.append(row)
    compared = [label for label, ref in zip(cells.label, cells.is_reference) if not ref]
    warnings = []
    for m in columns:
        values = {label: by_key[(label, m)].mean for label in compared if (label, m) in by_key}
        if len({round(v, 6) for v in values.values() if not math.isnan(v)}) > 1:
            shown = ", ".join(f"{k} {_plain_value(v, metric_info(m).scale)}"
                              for k, v in values.items())
            kind = ("by design (the strategy's own parameters / fill cost)"
                    if m in SETUP_BY_DESIGN else "in setup: the comparison is not like for like")
            warnings.append(f"⚠ compared rows differ in {metric_info(m).title} {kind}: {shown}")
    used = {rules.get(label) for label in compared}
    if len(used) > 1:
        warnings.append(f"⚠ compared rows differ in {RULE_COLUMN}: "
                        + ", ".join(f"{label} {rule_ids.get(rules.get(label, ''), '?')}"
                                    for label in compared))
    legend = "".join(f" {rid}: {rule}." for rule, rid in rule_ids.items())
    note = ("Per sample: tokens the encoder sees and positions the loss scores; trainable "
            "parameters by part; the mean over a row's seeds." + legend)
    titles = [metric_info(m).title for m in columns]
    return Table(title, ["row", *titles, RULE_COLUMN], rows, note), warnings


def _plain_value(value: float, scale: float) -> str:
    v = value * scale
    return f"{v:.0f}" if float(v).is_integer() and abs(v) >= 1 else f"{v:.3g}"


def _plain(summary, scale: float) -> str:
    """A setup value: constant over seeds, so no interval (a spread would say so)."""
    if summary.n > 1 and summary.std > 0:
        return format_summary(summary, scale)
    return _plain_value(summary.mean, scale)
