"""One Holm family per report section: every hypothesis the report words a claim on.

A section's claims come from four kinds of test, and all of them are corrected together
(Holm-Bonferroni over the section's family), so the chance of any false claim in a section is
at most ALPHA whatever the tests and their dependence:
- gate: each pretrained row against the untrained encoder (random-init) on the primary metric:
  did pretraining move it at all (bench.report.gate);
- baseline: each strategy row against the baseline on every judged metric;
- reference: every strategy trails a reference row that reads the input itself (raw-input):
  an intersection-union test, whose p is the largest of the strategies' (1 unless every
  strategy's mean lies below);
- factorial: the mask shape x fill effects on the primary metric.
Nothing outside a section's family is worded as a finding: other tables are descriptive and
say so where they could read as one (orderings, bold cells, linear predictability)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from bench.core.references import REFERENCE_ROWS
from bench.report.cells import PAIRED_COLUMNS
from bench.report.factorial import EFFECT_COLUMNS
from bench.report.metrics import SECTION
from bench.report.stats import ExampleVariance, detectable_difference, holm

KINDS = {"gate": "pretraining-gate comparison", "baseline": "baseline comparison",
         "reference": "reference claim", "factorial": "factorial effect"}
FAMILY_COLUMNS = [*SECTION, "kind", "claim", "metric", "estimate", "ci_low", "ci_high", "n",
                  "p_value", "p_adjusted", "family"]
UNTRAINED, INPUT = "untrained-encoder", "input"  # ReferenceRow.features of the gate's and IUT's


def features(references: pd.DataFrame) -> pd.Series:
    """Per row of `references` (`cells.paired_rows` against reference rows), what its reference
    row's probes read (ReferenceRow.features)."""
    return references.baseline_method.map(
        lambda m: REFERENCE_ROWS[m].features if m in REFERENCE_ROWS else "")


def _tested(frame: pd.DataFrame) -> pd.Series:
    return ~frame.too_few.astype(bool) & frame.p_value.notna()


@dataclass
class Family:
    """The comparisons of a report (or of one section), adjusted in their sections' families:
    `paired` (against the baseline), `references` (each strategy against each reference row
    on the primary metric; the gate's rows adjusted), `effects` (factorial) with `p_adjusted`
    and `family` (the section's family size; 0 where a row is no hypothesis), and
    `hypotheses` (FAMILY_COLUMNS: every hypothesis, family.csv)."""

    paired: pd.DataFrame
    references: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PAIRED_COLUMNS))
    effects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EFFECT_COLUMNS))
    hypotheses: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FAMILY_COLUMNS))

    def section(self, dataset: str, encoder: str) -> Family:
        def where(f: pd.DataFrame) -> pd.DataFrame:
            return f[(f.dataset == dataset) & (f.encoder == encoder)]

        return Family(where(self.paired), where(self.references), where(self.effects),
                      where(self.hypotheses))

    @property
    def size(self) -> int:
        """The family's size (of a one-section Family); 0 when nothing is tested."""
        return int(self.hypotheses.family.max()) if len(self.hypotheses) else 0

    def gate(self) -> pd.DataFrame:
        """The references' rows against an untrained-encoder reference row: the gate."""
        return self.references[features(self.references) == UNTRAINED]

    def counts(self) -> dict[str, int]:
        """How many hypotheses of each kind, in KINDS order, those present."""
        found = self.hypotheses.kind.value_counts()
        return {k: int(found[k]) for k in KINDS if k in found}


def one_family(paired: pd.DataFrame, references: pd.DataFrame | None = None,
               effects: pd.DataFrame | None = None) -> Family:
    """Every tested hypothesis of `paired` (strategy rows against the baseline), `references`
    (the gate: against an untrained encoder; the reference claim: every strategy below a row
    that reads the input) and `effects`, Holm-adjusted per section; see the module's doc."""
    references = (pd.DataFrame(columns=PAIRED_COLUMNS) if references is None else references)
    effects = pd.DataFrame(columns=EFFECT_COLUMNS) if effects is None else effects
    rows: list[tuple] = []  # FAMILY_COLUMNS less the adjustment, + (source, index)

    def add(frame: pd.DataFrame, source: str, kind: str, claim) -> None:
        for i, r in frame.iterrows():
            rows.append((r.dataset, r.encoder, kind, claim(r), r.metric, *_estimate(r),
                         int(r.n), float(r.p_value), source, i))

    add(paired[~paired.method.isin(REFERENCE_ROWS) & _tested(paired)], "paired", "baseline",
        lambda r: f"{r.label} − {r.baseline}")
    kinds = features(references)
    add(references[(kinds == UNTRAINED) & _tested(references)], "references", "gate",
        lambda r: f"{r.label} − {r.baseline}")
    for (dataset, encoder, ref), group in references[kinds == INPUT].groupby(
            [*SECTION, "baseline"], sort=False):
        if _tested(group).all():
            best = group.loc[group.mean_diff.idxmax()]
            p = float(group.p_value.max()) if (group.mean_diff < 0).all() else 1.0
            rows.append((dataset, encoder, "reference", f"every strategy − {ref} < 0",
                         best.metric, *_estimate(best), int(group.n.min()), p, "", -1))
    add(effects[effects.p_value.notna()], "effects", "factorial", lambda r: r.effect)
    found = pd.DataFrame(rows, columns=[*FAMILY_COLUMNS[:-2], "source", "index"])
    found["p_adjusted"], found["family"] = math.nan, 0
    for _, index in found.groupby(list(SECTION), sort=False).groups.items():
        found.loc[index, "p_adjusted"] = holm(found.loc[index, "p_value"].tolist())
        found.loc[index, "family"] = len(index)
    adjusted = {}
    for name, frame in (("paired", paired), ("references", references), ("effects", effects)):
        mine = found[found.source == name]
        out = frame.assign(p_adjusted=math.nan, family=0)
        out.loc[mine["index"].to_numpy(), "p_adjusted"] = mine.p_adjusted.to_numpy()
        out.loc[mine["index"].to_numpy(), "family"] = mine.family.to_numpy()
        adjusted[name] = out
    return Family(adjusted["paired"], adjusted["references"], adjusted["effects"],
                  found[FAMILY_COLUMNS].reset_index(drop=True))


def _estimate(r) -> tuple[float, float, float]:
    estimate = r.mean_diff if "mean_diff" in r.index else r.estimate
    return float(estimate), float(r.ci_low), float(r.ci_high)


def detectable(group: pd.DataFrame, family: int, seeds: int) -> float:
    """The smallest difference comparisons like `group`'s (paired rows: seed_sd, test_var,
    test_examples) detect with 80 % power at the first Holm step of a family of `family`, at
    `seeds` seeds: from their pooled per-seed spread and, where every one recorded per-example
    outcomes, the test set's variance. NaN where no spread is known."""
    spread = group[(group.n >= 2) & group.seed_sd.notna()]
    if spread.empty:
        return math.nan
    std = math.sqrt(float((spread.seed_sd ** 2).mean()))
    tested = spread[spread.test_examples > 0]
    test = (ExampleVariance(float(tested.test_var.mean()), int(tested.test_examples.min()))
            if len(tested) == len(spread) else None)
    return detectable_difference(std, seeds, test, max(family, 1))
