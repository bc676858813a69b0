"""What linear predictability says about the seed's hypothesis: one linear map M with
z(x + d) = M^d z(x). Per row, on the pairs bench/eval/linpred.py fitted: the gain of the fitted
map's R² over the content baseline (the position's one-hot and the input's mean token, no
neighbour at all: what is predictable without any neighbour), and whether the d = 1 map
composed d times (M₁^d) predicts z(x + d) as well as the map fitted at d; then one sentence on
the hypothesis. Exploratory: nothing here is in the verdict's family, and it says so."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.core.references import REFERENCE_ROWS
from bench.report.cells import cell_key, seed_values
from bench.report.stats import Paired, Summary, paired_difference
from bench.report.tables import Cell, Table, format_summary

# Composition "holds" at d where the 95 % CI of (M₁^d's R² - the fitted map's) lies above
# -COMPOSITION_MARGIN, an equivalence margin in R²; it "fails" where the CI lies below it.
COMPOSITION_MARGIN = 0.05
HYPOTHESIS = "one linear map M with z(x + d) = M^d z(x)"
NOTE = (f"Per seed, paired: the fitted map's R² minus the content baseline's (what a neighbour "
        f"adds over position and the input's mean token), and M₁^d's R² minus the fitted "
        f"map's at d (what composing the d = 1 map d times loses). One map: holds where, at "
        f"every d, the 95 % CI of that loss lies above -{COMPOSITION_MARGIN} R² (an "
        f"equivalence margin); fails where it lies below it at some d. Exploratory: "
        f"descriptive, not in the verdict's family.")


def _by_distance(metrics: list[str], kind: str) -> dict[int, str]:
    found = (re.fullmatch(rf"linpred_{kind}_d(\d+)", m) for m in metrics)
    return dict(sorted((int(f[1]), f[0]) for f in found if f))


@dataclass(frozen=True)
class RowEvidence:
    """One row's gains over the content baseline and composition test, by distance."""

    row: Any  # a row of cells.row_labels
    gain: dict[int, Paired]
    loss: dict[int, Paired]  # M₁^d R² - fitted R², d >= 2

    @property
    def adds(self) -> bool | None:
        """Whether the neighbour adds R² over content at the smallest distance (CI above 0);
        None where there is no content baseline."""
        if not self.gain:
            return None
        first = self.gain[min(self.gain)]
        return first.n >= 2 and first.ci_low > 0

    @property
    def one_map(self) -> str:
        """'holds to d=D', 'fails at d=D', 'unclear' (a CI across the margin, or one seed), or
        '–' (not measured)."""
        tested = {d: p for d, p in self.loss.items() if p.n > 0}
        if not tested:
            return "–"
        fails = [d for d, p in tested.items() if p.ci_high < -COMPOSITION_MARGIN]
        if fails:
            return f"fails at d={min(fails)}"
        if all(p.ci_low > -COMPOSITION_MARGIN for p in tested.values()):
            return f"holds to d={max(tested)}"
        return "unclear"


def _text(p: Paired) -> str:
    if p.n == 0:
        return "–"
    return format_summary(Summary(p.mean_diff, math.nan, p.n, p.ci_low, p.ci_high), 1.0,
                          signed=True)


def hypothesis_views(ok: pd.DataFrame, cells: pd.DataFrame, linpred: list[str], name: str
                     ) -> list[Table | str]:
    """The table of gains over content and composition per row, and the sentence; nothing
    where the runs recorded neither the content baseline nor the composed map."""
    r2 = _by_distance(linpred, "r2")
    content, composed = _by_distance(linpred, "content_r2"), _by_distance(linpred, "composed_r2")
    gains = {d: (r2[d], content[d]) for d in r2 if d in content}
    losses = {d: (composed[d], r2[d]) for d in r2 if d in composed and d >= 2}
    if not gains and not losses:
        return []
    values = seed_values(ok)
    evidence = []
    for row in cells.itertuples(index=False):
        key = cell_key(row)
        gain, loss = ({d: paired_difference(values.get((key, a), {}), values.get((key, b), {}))
                       for d, (a, b) in pairs.items()} for pairs in (gains, losses))
        found = RowEvidence(row, gain, loss)
        if any(p.n for p in (*found.gain.values(), *found.loss.values())):
            evidence.append(found)
    if not any(not e.row.is_reference for e in evidence):
        return []
    rows = [[Cell(e.row.label), *(Cell(_text(p)) for p in e.gain.values()),
             *(Cell(_text(p)) for p in e.loss.values()), Cell(e.one_map)] for e in evidence]
    columns = ["row", *(f"gain over content d={d}" for d in gains),
               *(f"M₁^d − fitted d={d}" for d in losses), "one map"]
    table = Table(f"{name}: linear predictability beyond content, and one map composed",
                  columns, rows, NOTE)
    return [table, hypothesis_sentence(evidence)]


def hypothesis_sentence(evidence: list[RowEvidence]) -> str:
    """One sentence: whether the rows' evidence supports the seed's hypothesis, and whether
    the untrained encoder already shows it (then it is the architecture's, not pretraining's)."""
    pretrained = [e for e in evidence if not e.row.is_reference]
    untrained = [e for e in evidence if e.row.is_reference
                 and REFERENCE_ROWS[e.row.method].features == "untrained-encoder"]
    n = len(pretrained)
    measured_gain = any(e.adds is not None for e in pretrained)
    adds = [e for e in pretrained if e.adds]
    holds = [e for e in pretrained if e.one_map.startswith("holds")]
    measured_map = any(e.one_map != "–" for e in pretrained)
    if measured_gain and not adds:
        said = ("does not support it: a neighbour adds nothing measurable over position and "
                "content, so the predictability is of the image, not of a neighbour map")
    elif not measured_map:
        said = "is silent on it: one map composed was not measured"
    elif len(holds) == n:
        said = "supports it"
    elif holds:
        said = f"supports it for {len(holds)} of {n} pretrained rows only"
    else:
        said = ("does not support one map: maps fitted at each distance predict, but the d = 1 "
                "map composed does not reach d")
    parts = []
    if measured_gain:
        gains = [e.gain[min(e.gain)].mean_diff for e in pretrained if e.gain]
        parts.append(f"the neighbour adds R² over content at d = {min(evidence[0].gain)} in "
                     f"{len(adds)} of {n} pretrained rows ({min(gains):+.2f} to "
                     f"{max(gains):+.2f})")
    if measured_map:
        parts.append(f"M₁^d holds in {len(holds)} of {n}")
    for e in untrained:
        same = bool(e.adds) == bool(adds) and e.one_map.startswith("holds") == bool(holds)
        parts.append(f"{e.row.label} (the untrained encoder) "
                     + ("shows the same, so this is the architecture's, not pretraining's"
                        if same and (adds or holds) else f"differs (one map {e.one_map})"))
    return (f"What this says about the seed's hypothesis ({HYPOTHESIS}): the evidence {said}; "
            + "; ".join(parts) + " (exploratory: not in the verdict's family).")
