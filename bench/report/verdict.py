"""What a reader wants first: who wins (the verdict, from the paired comparisons) and whether
the comparison was fair (the setup every row ran with, and a warning where compared rows
differ). Both per (dataset, encoder) section.

The verdict cannot cry wolf: it first says whether pretraining moved the encoder at all (the
pretraining gate, bench.report.gate), then speaks of one declared primary metric, makes every
claim inside the section's one Holm family (bench.report.family: gate, baseline comparisons,
the reference claim, factorial effects), states the smallest difference it could have
detected (exact power, the noncentral t), and says plainly when every strategy trails the
input itself."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from bench.core.references import REFERENCE_ROWS
from bench.report.cells import summary_of
from bench.report.family import KINDS, Family, detectable, features
from bench.report.gate import Schedule, Separation, gate_line, moved_nothing
from bench.report.metrics import judged_metrics, metric_info
from bench.report.stats import ALPHA, MIN_PAIRED_FOR_TEST
from bench.report.tables import Cell, Table, format_summary

# Setup that must be equal for a comparison to be fair, and what differs by the strategy
# itself (its own parameters and its fill's cost): both shown, warned about differently.
SETUP_FAIR = ("setup.visible_tokens", "setup.scored_positions", "setup.encoder_params",
              "setup.decoder_params", "setup.decoder_flops", "setup.epochs", "setup.batch_size")
SETUP_BY_DESIGN = ("setup.method_params", "compute.pretrain_flops_per_sample")
RULE_COLUMN = "weight-decay rule"


def verdict(family: Family, baseline: str, primary: str, plan: Schedule | None = None,
            separation: Separation | None = None) -> list[str]:
    """What a section's comparisons (`family`: `family.one_family` of one section) say, in
    words: first the pretraining gate (how many rows pretraining moved; `plan` and
    `separation`: how far the schedule was from where it separates), then the family and
    which variance its intervals hold, the primary metric's claims (or that no row is
    distinguishable, and the smallest difference that could have been seen), one line per
    secondary metric, the factorial's effects, and a line when every strategy trails a
    reference row that reads the input.

    A row "beats" / "trails" the baseline where its Holm-adjusted p in the section's family is
    below ALPHA. Reference rows are not judged (they are not strategies)."""
    rows = family.paired[~family.paired.method.isin(REFERENCE_ROWS)]
    lines = [gate_line(family, primary, plan or Schedule(None, None), separation)]
    if rows.empty:
        return lines + [f"no verdict: no strategy besides the baseline {baseline} in this "
                        "section (reference rows are not judged)"]
    metrics = judged_metrics(rows.metric.unique())
    lines.append(family_line(family, rows, primary, metrics))
    gated = moved_nothing(family, primary)
    for metric in sorted(metrics, key=lambda m: m != primary):  # the primary first
        lines.append(_metric_line(rows[rows.metric == metric], baseline, metric,
                                  secondary=metric != primary, family=family.size, gated=gated))
    lines += factorial_lines(family.effects, primary, gated)
    lines += reference_lines(family, primary)
    return lines


GATED = ("no claim: the pretraining gate moved no row (the first line), so differences between "
         "strategies are not findings at this scale")


def family_line(family: Family, rows: pd.DataFrame, primary: str, metrics: list[str]) -> str:
    """Which metric is primary, which hypotheses the section's one Holm family holds (every
    claim the verdict words is one of them) and which variance the intervals hold."""
    title = _title(primary)
    secondary = [_title(m) for m in metrics if m != primary]
    said = (f"primary metric: {title}" + (f" (secondary: {', '.join(secondary)})"
                                          if secondary else ""))
    if primary not in metrics:
        said = (f"primary metric {title}: not reported in this section"
                + (f" (secondary: {', '.join(secondary)})" if secondary else ""))
    if family.size:
        judged = rows[rows.family > 0]
        kinds = []
        for kind, n in family.counts().items():
            what = (f" ({judged.label.nunique()} row(s) x {judged.metric.nunique()} metric(s))"
                    if kind == "baseline" else "")
            kinds.append(f"{n} {KINDS[kind]}{'s' if n > 1 else ''}{what}")
        said += (f"; one Holm-Bonferroni family of {family.size} hypotheses for the section "
                 f"({', '.join(kinds)}), family-wise error 5 %: every claim of this verdict is "
                 "one of them, and nothing else in the report is worded as a finding")
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
                 family: int, gated: bool = False) -> str:
    """One metric's line: the rows that beat or trail the baseline (Holm-adjusted p below
    ALPHA), or that none does; `gated` (the pretraining gate moved no row): no claim, the
    smallest adjusted p named as no finding."""
    info = metric_info(metric)
    title = _title(metric)
    head = f"secondary, {title}: " if secondary else f"{title} (primary): "
    tested = group[(group.n >= MIN_PAIRED_FOR_TEST) & group.p_adjusted.notna()]
    clear = [r for r in tested.itertuples(index=False) if r.p_adjusted < ALPHA]
    scale = info.scale
    if clear and gated:
        r = min(clear, key=lambda r: r.p_adjusted)
        line = (head + f"{GATED} (smallest Holm-adjusted p {r.p_adjusted:.2g}: {r.label} "
                f"{r.mean_diff * scale:+.1f} points against {baseline}; not a finding).")
    elif clear:
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
    """The smallest difference the primary comparisons could detect with 80 % power (exact:
    the noncentral t) at the first Holm step of the section's family (alpha / family), from
    the rows' pooled per-seed spread and test-set variance: at the seeds run, and at 8 (or
    twice as many)."""
    n = int(group.n.max()) if len(group) else 0
    spread = group[group.n >= 2]
    if spread.empty or spread.seed_sd.isna().all():
        return (f"at {n} seed(s) nothing can be told apart: the spread over seeds is unknown "
                "(run at least 3 seeds: --seeds 0,1,2)")
    n = int(spread.n.max())
    more = 8 if n < 8 else 2 * n
    now = detectable(spread, family, max(n, MIN_PAIRED_FOR_TEST)) * scale
    then = detectable(spread, family, more) * scale
    where = (f"at {n} seeds a difference under {now:.1f} points cannot be told apart"
             if n >= MIN_PAIRED_FOR_TEST else
             f"at {n} seeds no test is made; with the spread seen, {MIN_PAIRED_FOR_TEST} seeds "
             f"would show {now:.1f} points")
    return (f"{where} (80 % power at 5 %/{max(family, 1)}, the first Holm step); {more} seeds "
            f"would show {then:.1f} points")


def factorial_lines(effects: pd.DataFrame, primary: str, gated: bool = False) -> list[str]:
    """The mask shape x fill effects on the primary metric, in the section's family: those
    whose Holm-adjusted p is below ALPHA, or that none is; `gated`: no claim (see
    `_metric_line`)."""
    tested = effects[(effects.metric == primary) & effects.p_adjusted.notna()]
    if tested.empty:
        return []
    scale = metric_info(primary).scale
    head = f"mask shape x fill, {_title(primary)}: "
    clear = tested[tested.p_adjusted < ALPHA]
    if clear.empty:
        return [head + f"no effect passes Holm in the section's family ({len(tested)} effects "
                "tested)."]
    if gated:
        e = clear.loc[clear.p_adjusted.idxmin()]
        return [head + f"{GATED} (smallest Holm-adjusted p {e.p_adjusted:.2g}: {e.effect} "
                f"{e.estimate * scale:+.1f} points; not a finding)."]
    return [head + "; ".join(
        f"{e.effect} {e.estimate * scale:+.1f} points, 95 % CI [{e.ci_low * scale:.1f}, "
        f"{e.ci_high * scale:.1f}], Holm-adjusted p = {e.p_adjusted:.2g}"
        for e in clear.itertuples(index=False)) + "."]


# What a reference row's features are, in the verdict's words (ReferenceRow.features).
FEATURE_WORDS = {"input": "the input itself", "untrained-encoder": "the untrained encoder"}


def reference_lines(family: Family, primary: str) -> list[str]:
    """One line when every strategy trails a reference row that reads the input itself
    (raw-input) on the primary metric: with at least MIN_PAIRED_FOR_TEST seeds, where the
    section's family holds that claim (an intersection-union test, `family.one_family`) and
    its Holm-adjusted p is below ALPHA; with fewer, where every mean lies below, saying it was
    not tested. (Against the untrained encoder: the pretraining gate, the verdict's first
    line.)"""
    refs = family.references[(family.references.metric == primary)
                             & (features(family.references) == "input")]
    claims = family.hypotheses[family.hypotheses.kind == "reference"]
    scale = metric_info(primary).scale
    parts = []
    for ref, group in refs.groupby("baseline", sort=False):
        best = group.loc[group.mean_diff.idxmax()]
        words = FEATURE_WORDS[REFERENCE_ROWS[best.baseline_method].features]
        claim = claims[claims.claim.str.endswith(f"− {ref} < 0")]
        if len(claim) and claim.p_adjusted.iloc[0] < ALPHA:
            parts.append(f"every strategy trails {ref} ({words}) on {_title(primary)} (best "
                         f"{best.label} {best.mean_diff * scale:+.1f} points, 95 % CI "
                         f"[{best.ci_low * scale:.1f}, {best.ci_high * scale:.1f}]; Holm-adjusted "
                         f"p = {claim.p_adjusted.iloc[0]:.2g} in the section's family)")
        elif claim.empty and (group.n < MIN_PAIRED_FOR_TEST).any() and (group.mean_diff < 0).all():
            parts.append(f"every strategy scores below {ref} ({words}) on {_title(primary)} "
                         f"(best {best.label} {best.mean_diff * scale:+.1f} points; "
                         f"{int(group.n.min())} seed(s): not tested)")
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
            none = r is None or (metric_info(m).pretraining and r.is_reference)
            row.append(Cell("–" if none else _plain(summary_of(r), metric_info(m).scale)))
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
