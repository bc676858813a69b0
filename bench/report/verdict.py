"""What a reader wants first: who wins (the verdict, from the paired comparisons) and whether
the comparison was fair (the setup every row ran with, and a warning where compared rows
differ). Both per (dataset, encoder) section.

The verdict cannot cry wolf: it speaks first of one declared primary metric, corrects every
claim it words for the section's family of comparisons (Holm-Bonferroni), states the smallest
difference it could have detected, and says plainly when no strategy beats a reference row."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from bench.core.references import REFERENCE_ROWS
from bench.report.cells import summary_of
from bench.report.metrics import judged_metrics, metric_info
from bench.report.stats import ALPHA, MIN_PAIRED_FOR_TEST, ExampleVariance, detectable_difference
from bench.report.tables import Cell, Table, format_summary

# Setup that must be equal for a comparison to be fair, and what differs by the strategy
# itself (its own parameters and its fill's cost): both shown, warned about differently.
SETUP_FAIR = ("setup.visible_tokens", "setup.scored_positions", "setup.encoder_params",
              "setup.decoder_params", "setup.decoder_flops", "setup.epochs", "setup.batch_size")
SETUP_BY_DESIGN = ("setup.method_params", "compute.pretrain_flops_per_sample")
RULE_COLUMN = "weight-decay rule"


def verdict(paired: pd.DataFrame, baseline: str, primary: str,
            references: pd.DataFrame | None = None) -> list[str]:
    """What a section's comparisons say, in words: the family and how its claims are
    corrected, the primary metric's claims (or that no row is distinguishable, and the
    smallest difference that could have been seen), one line per secondary metric, and a
    line when no strategy beats a reference row (`references`: `reference_lines`'s input).

    A row "beats" / "trails" the baseline where its Holm-adjusted p (over the section's
    family: non-reference rows x accuracy metrics with at least MIN_PAIRED_FOR_TEST shared
    seeds, `cells.adjust_families`) is below ALPHA. Reference rows are not judged (they are
    not strategies)."""
    rows = paired[~paired.method.isin(REFERENCE_ROWS)]
    if rows.empty:
        return [f"no verdict: no strategy besides the baseline {baseline} in this section "
                "(reference rows are not judged)"]
    metrics = judged_metrics(rows.metric.unique())
    lines = [family_line(rows, primary, metrics)]
    for metric in sorted(metrics, key=lambda m: m != primary):  # the primary first
        lines.append(_metric_line(rows[rows.metric == metric], baseline, metric,
                                  secondary=metric != primary,
                                  family=max(int(rows.family.max()), 1)))
    if references is not None:
        lines += reference_lines(references, primary)
    return lines


def family_line(rows: pd.DataFrame, primary: str, metrics: list[str]) -> str:
    """Which metric is primary, how many comparisons the claims are corrected over and which
    variance the intervals hold."""
    title = _title(primary)
    secondary = [_title(m) for m in metrics if m != primary]
    said = (f"primary metric: {title}" + (f" (secondary: {', '.join(secondary)})"
                                          if secondary else ""))
    if primary not in metrics:
        said = (f"primary metric {title}: not reported in this section"
                + (f" (secondary: {', '.join(secondary)})" if secondary else ""))
    family = int(rows.family.max()) if len(rows) else 0
    judged = rows[rows.family > 0]
    if family:
        n_rows, n_metrics = judged.label.nunique(), judged.metric.nunique()
        said += (f"; claims corrected by Holm-Bonferroni over a family of {family} comparisons "
                 f"({n_rows} row(s) x {n_metrics} metric(s)), family-wise error 5 %")
    else:
        said += f"; no comparison has {MIN_PAIRED_FOR_TEST} shared seeds, so no claim is tested"
    return said + "; " + variance_words(rows) + "."


def variance_words(rows: pd.DataFrame) -> str:
    """Which chance the intervals hold: seeds only, or seeds and the test set."""
    with_test = rows.test_examples > 0
    if with_test.all():
        n = int(rows.test_examples.max())
        return ("intervals hold seed and test-set variance (paired per-example differences on "
                f"the {n} test examples both runs scored)")
    if with_test.any():
        return ("intervals hold seed and test-set variance where both runs recorded per-example "
                "outcomes, seed variance alone elsewhere")
    return ("intervals hold seed variance only (no per-example outcomes recorded: the test "
            "set's own sampling error is not in them)")


def _title(metric: str) -> str:
    return metric_info(metric).title.removesuffix(" %")


def _metric_line(group: pd.DataFrame, baseline: str, metric: str, secondary: bool,
                 family: int) -> str:
    info = metric_info(metric)
    title = _title(metric)
    head = f"secondary, {title}: " if secondary else f"{title} (primary): "
    tested = group[(group.n >= MIN_PAIRED_FOR_TEST) & group.p_adjusted.notna()]
    clear = [r for r in tested.itertuples(index=False) if r.p_adjusted < ALPHA]
    scale = info.scale
    if clear:
        parts = [f"{r.label} {'beats' if r.mean_diff > 0 else 'trails'} {baseline} by "
                 f"{abs(r.mean_diff) * scale:.1f} points, 95 % CI [{r.ci_low * scale:.1f}, "
                 f"{r.ci_high * scale:.1f}], Holm-adjusted p = {r.p_adjusted:.2g}, {r.n} seeds"
                 for r in clear]
        others = len(group) - len(clear)
        rest = f"; {others} other row(s) not distinguishable from {baseline}" if others else ""
        line = head + "; ".join(parts) + rest + "."
    elif tested.empty:
        n = int(group.n.max()) if len(group) else 0
        line = (head + f"no verdict: at most {n} seed(s) shared with {baseline}, a test needs "
                f"{MIN_PAIRED_FOR_TEST} (--seeds 0,1,2).")
    else:
        seeds = ", ".join(sorted({str(n) for n in tested.n}))
        line = (head + f"no row is distinguishable from {baseline} ({seeds} seeds; no "
                "Holm-adjusted p below 0.05).")
    if secondary:
        return line
    return line.removesuffix(".") + "; " + power_words(group, family, scale) + "."


def power_words(group: pd.DataFrame, family: int, scale: float) -> str:
    """The smallest difference the primary comparisons could detect with 80 % power at the
    first Holm step (alpha / family), from the rows' pooled per-seed spread and test-set
    variance: at the seeds run, and at 8 (or twice as many)."""
    spread = group[group.n >= 2]
    n = int(group.n.max()) if len(group) else 0
    if spread.empty or spread.seed_sd.isna().all():
        return (f"at {n} seed(s) nothing can be told apart: the spread over seeds is unknown "
                "(run at least 3 seeds: --seeds 0,1,2)")
    std = math.sqrt(float((spread.seed_sd ** 2).mean()))
    tested = spread[spread.test_examples > 0]
    test = (ExampleVariance(float(tested.test_var.mean()), int(tested.test_examples.min()))
            if len(tested) == len(spread) else None)
    n = int(spread.n.max())
    more = 8 if n < 8 else 2 * n
    now = detectable_difference(std, max(n, MIN_PAIRED_FOR_TEST), test, family) * scale
    then = detectable_difference(std, more, test, family) * scale
    where = (f"at {n} seeds a difference under {now:.1f} points cannot be told apart"
             if n >= MIN_PAIRED_FOR_TEST else
             f"at {n} seeds no test is made; with the spread seen, {MIN_PAIRED_FOR_TEST} seeds "
             f"would show {now:.1f} points")
    return (f"{where} (80 % power at 5 %/{family}, the first Holm step); {more} seeds would "
            f"show {then:.1f} points")


# What a reference row's features are, in the verdict's words (ReferenceRow.features).
FEATURE_WORDS = {"input": "the input itself", "untrained-encoder": "the untrained encoder"}


def reference_lines(references: pd.DataFrame, primary: str) -> list[str]:
    """One line when every strategy trails a reference row that reads the input itself
    (raw-input), or none beats one that reads an untrained encoder (random-init), on the
    primary metric. `references`: each strategy row minus each reference row on the primary
    metric (`cells.paired_rows`; `baseline` names the reference row). "Trails" with at least
    MIN_PAIRED_FOR_TEST seeds: every strategy's 95 % CI lies below 0 (an intersection-union
    test: the claim that ALL trail is false only if one of its k tests is, so each at 5 %
    keeps it at 5 % without a correction); with fewer seeds, every mean lies below and the
    line says it was not tested."""
    refs = references[references.metric == primary]
    if refs.empty:
        return []
    scale = metric_info(primary).scale
    parts = []
    order = list(FEATURE_WORDS)  # the stronger statement (below the input) first
    grouped = sorted(((REFERENCE_ROWS[method], ref, group) for (method, ref), group
                      in refs.groupby(["baseline_method", "baseline"], sort=False)
                      if method in REFERENCE_ROWS), key=lambda g: order.index(g[0].features))
    for row, ref, group in grouped:
        best = group.loc[group.mean_diff.idxmax()]
        tested = bool((group.n >= MIN_PAIRED_FOR_TEST).all())
        where = (f"best {best.label} {best.mean_diff * scale:+.1f} points, 95 % CI "
                 f"[{best.ci_low * scale:.1f}, {best.ci_high * scale:.1f}]" if tested else
                 f"best {best.label} {best.mean_diff * scale:+.1f} points; "
                 f"{int(group.n.min())} seed(s): not tested")
        words = FEATURE_WORDS[row.features]
        if row.features == "input":
            if (tested and (group.ci_high < 0).all()) or (not tested and (group.mean_diff < 0).all()):
                verb = "trails" if tested else "scores below"
                parts.append(f"every strategy {verb} {ref} ({words}) on {_title(primary)} "
                             f"({where})")
        elif (tested and not (group.ci_low > 0).any()) or (not tested and (group.mean_diff <= 0).all()):
            verb = "is shown to beat" if tested else "scores above"
            parts.append(f"no strategy {verb} {ref} ({words}) on {_title(primary)} ({where})")
    if not parts:
        return []
    text = "; ".join(parts)
    return [f"⚠ {text[0].upper()}{text[1:]}."]


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
