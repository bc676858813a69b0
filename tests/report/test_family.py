"""One Holm family per report section (the pretraining gate, the baseline comparisons, the
claim that every strategy trails raw-input, the factorial's effects) and the pretraining gate
that opens the verdict: how many rows pretraining moved, and where none, that the strategy
comparison is uninformative and how far the schedule was from where pretraining separates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.core.references import REFERENCE_ROWS
from bench.report.build import write_report
from bench.report.stats import holm
from tests.helpers import write_run

SHAPES = {"random": 0.0, "block": -0.02}
FILLS = {"mae": 0.0, "interp": 0.004, "qbheat": 0.012}


def _options(method: str, shape: str) -> dict:
    if method == "qbheat":
        return {"mask_ratio": 0.75, "visible": shape, "position": "quadrant", "order": "xy"}
    return {"mask_ratio": 0.75, "visible": shape, "block_position": "quadrant"}


@pytest.fixture(scope="module")
def factorial_report(tmp_path_factory) -> Path:
    """A mask shape x fill section (4 seeds) far above random-init, below raw-input: the gate
    passes, every strategy trails the input, and the effects are small against the noise."""
    root = tmp_path_factory.mktemp("family")
    rng = np.random.default_rng(7)
    for seed in range(4):
        for shape, shift in SHAPES.items():
            for fill, gain in FILLS.items():
                top1 = 0.80 + shift + gain + rng.normal(0, 0.006)
                write_run(root / "runs", f"{fill}-{shape}-{seed}", fill, seed,
                          {"linear_top1": top1, "knn_top1": top1 - 0.05 + rng.normal(0, 0.01)},
                          options=_options(fill, shape), batch_size=100)
        write_run(root / "runs", f"ri-{seed}", "random-init", seed,
                  {"linear_top1": 0.60 + rng.normal(0, 0.01), "knn_top1": 0.5}, batch_size=100)
        write_run(root / "runs", f"raw-{seed}", "raw-input", seed,
                  {"linear_top1": 0.86 + rng.normal(0, 0.005), "knn_top1": 0.8}, batch_size=100)
    write_report([root / "runs"], root / "report")
    return root / "report"


def test_every_claim_of_a_section_is_adjusted_in_one_family(factorial_report):
    """The factorial's effects, the baseline comparisons, the gate and the raw-input claim are
    one Holm family: each adjusted p is Holm over all of them, not over its own table (before,
    the effects were adjusted over their 5 alone and the baseline comparisons over theirs)."""
    paired = pd.read_csv(factorial_report / "paired.csv")
    references = pd.read_csv(factorial_report / "references.csv")
    effects = pd.read_csv(factorial_report / "factorial.csv")
    strategies = paired[~paired.method.isin(REFERENCE_ROWS) & paired.p_value.notna()]
    gate = references[references.baseline_method == "random-init"]
    raw = references[references.baseline_method == "raw-input"]
    assert (raw.mean_diff < 0).all() and len(gate) == 6 and len(effects) == 5
    p = [*strategies.p_value, *gate.p_value, raw.p_value.max(), *effects.p_value]
    adjusted = holm(p)
    n = len(strategies)
    assert len(p) == 10 + 6 + 1 + 5  # 5 rows x 2 metrics, 6 rows, the input claim, 5 effects
    assert strategies.p_adjusted.tolist() == pytest.approx(adjusted[:n])
    assert gate.p_adjusted.tolist() == pytest.approx(adjusted[n:n + 6])
    assert effects.p_adjusted.tolist() == pytest.approx(adjusted[n + 7:])
    family = pd.read_csv(factorial_report / "family.csv")
    assert family.kind.value_counts().to_dict() == {"baseline": 10, "gate": 6, "factorial": 5,
                                                    "reference": 1}
    assert set(family.family) == {22}
    md = (factorial_report / "report.md").read_text()
    assert ("one Holm-Bonferroni family of 22 hypotheses for the section (6 "
            "pretraining-gate comparisons, 10 baseline comparisons (5 row(s) x 2 metric(s)), "
            "1 reference claim, 5 factorial effects)") in md
    assert "at 5 %/22, the first Holm step" in md


def test_the_factorial_is_worded_in_the_verdict_only_inside_the_family(factorial_report):
    md = (factorial_report / "report.md").read_text()
    verdict = md.split("## Verdict")[1].split("\n## ")[0]
    effects = pd.read_csv(factorial_report / "factorial.csv")
    line = next(x for x in verdict.splitlines() if "mask shape x fill, linear top-1" in x)
    clear = effects[effects.p_adjusted < 0.05]
    if clear.empty:
        assert "no effect passes Holm in the section's family (5 effects tested)" in line
    for e in clear.itertuples():
        assert f"{e.effect} {e.estimate * 100:+.1f} points" in line
    assert "Every strategy trails raw-input (the input itself)" in verdict


def _gated_section(root: Path, mae: list[float], ri: list[float], curve=None,
                   periodic: bool = False) -> list[str]:
    """A section of mae, qbheat (mae + 1 point, nearly constant) and random-init; returns the
    verdict's lines of it."""
    for s, (m, r) in enumerate(zip(mae, ri)):
        for method, value in (("mae", m), ("qbheat", m + 0.01 + 0.0005 * (-1) ** s)):
            knn = (curve or {}).get((method, s), {})
            write_run(root / "runs", f"{method}{s}", method, s,
                      {"linear_top1": value, "knn_top1": knn.get(3, 0.5)}, periodic=periodic,
                      curve=knn or None, batch_size=100)
        write_run(root / "runs", f"ri{s}", "random-init", s,
                  {"linear_top1": r, "knn_top1": (curve or {}).get(("ri", s), 0.5)},
                  batch_size=100)
    write_report([root / "runs"], root / "report")
    md = (root / "report" / "report.md").read_text()
    section = md.split("## Verdict")[1].split("\n## ")[0]
    return [x.removeprefix("- fashion-mnist · vit-micro: ") for x in section.splitlines()
            if x.startswith("- ")]


NOISY_MAE = [0.70, 0.76, 0.66, 0.73]
NOISY_RI = [0.73, 0.68, 0.71, 0.69]  # row - random-init: about +1 point, seed spread 5 points


def test_a_gate_that_moved_no_row_makes_the_comparison_uninformative(tmp_path):
    """qbheat is a nearly constant 1 point above mae (a Holm p far below 0.05), but neither
    differs from random-init: the verdict's first line says so, how far the schedule was from
    separating (no --eval-every curve here), and the difference is named as no finding.
    (Before, the verdict opened with the family and claimed qbheat beats mae.)"""
    lines = _gated_section(tmp_path, NOISY_MAE, NOISY_RI)
    assert lines[0].startswith(
        "⚠ Pretraining gate: pretraining moved 0 of 2 pretrained rows away from random-init "
        "(the untrained encoder) on linear top-1 (best qbheat +2.0 points, 95 % CI [")
    assert ("so the strategy comparison below is uninformative at this scale: at 4 seeds the "
            "gate needed about ") in lines[0]
    assert lines[0].endswith("the schedule, 3 epoch(s) (about 60 optimiser steps), recorded no "
                             "--eval-every curve, so where pretraining separates is unknown "
                             "(rerun with --eval-every 1 and longer schedules to find it).")
    primary = next(x for x in lines if "(primary)" in x)
    assert primary.startswith(
        "linear top-1 (primary): no claim: the pretraining gate moved no row (the first line), "
        "so differences between strategies are not findings at this scale (smallest "
        "Holm-adjusted p ")
    assert "qbheat +1.0 points against mae; not a finding)" in primary
    assert not any(" beats " in x or " trails " in x for x in lines)


def test_the_gate_counts_the_rows_pretraining_moved_and_claims_stand(tmp_path):
    lines = _gated_section(tmp_path, NOISY_MAE, [0.50, 0.51, 0.49, 0.50])
    assert lines[0].startswith(
        "Pretraining gate: pretraining moved 2 of 2 pretrained rows away from random-init (the "
        "untrained encoder) on linear top-1 (Holm, in the section's family of 3): mae +21.2 "
        "points, 95 % CI [")
    assert any(x.startswith("linear top-1 (primary): qbheat beats mae by 1.0 points")
               for x in lines)


def _curves(knn_of) -> dict:
    """kNN by (row, seed) and epoch: random-init 40 %, the rows `knn_of(method, seed, epoch)`."""
    out = {("ri", s): 0.40 for s in range(4)}
    out |= {(m, s): {e: knn_of(m, s, e) for e in (1, 2, 3)} for m in ("mae", "qbheat")
            for s in range(4)}
    return out


def test_the_gate_finds_where_the_eval_every_curves_separated(tmp_path):
    """kNN at --eval-every points: level with random-init at epoch 1, 5 points above from
    epoch 2: the first line names epoch 2 of 3 (about 40 of 60 steps) as exploratory."""
    jitter = (0.004, -0.003, 0.002, -0.001)

    def knn(method, seed, epoch):
        return 0.40 + jitter[seed] * (1 if epoch == 1 else 0.1) + (0.05 if epoch >= 2 else 0)

    first = _gated_section(tmp_path, NOISY_MAE, NOISY_RI, _curves(knn), periodic=True)[0]
    assert "pretraining moved 0 of 2 pretrained rows" in first
    assert ("on the --eval-every kNN top-1 curves pretraining first separated from random-init "
            "at epoch 2 of 3, about 40 steps (mae +5.0 points; exploratory: Holm over the "
            "curves' 6 points, not in the verdict's family).") in first


def test_the_gate_says_when_no_curve_point_separated(tmp_path):
    """kNN 3 points above or below random-init by seed (mean gain 0.2-0.9 points): no point
    separates, the largest gain is named, and the schedule is said to end before."""

    def knn(method, seed, epoch):
        return 0.40 + 0.03 * (-1) ** seed + (0.003 if method == "qbheat" else 0.002) * epoch

    first = _gated_section(tmp_path, NOISY_MAE, NOISY_RI, _curves(knn), periodic=True)[0]
    assert ("no point of the --eval-every kNN top-1 curves (epochs 1, 2, 3) separated either "
            "(largest gain qbheat +0.9 points at epoch 3; exploratory") in first
    assert first.endswith("so pretraining separates, if at all, beyond this schedule of 3 "
                          "epoch(s) (about 60 optimiser steps).")


def test_a_section_without_random_init_says_the_gate_is_not_measured(tmp_path):
    for s, m in enumerate(NOISY_MAE):
        write_run(tmp_path / "runs", f"mae{s}", "mae", s, {"linear_top1": m})
        write_run(tmp_path / "runs", f"qb{s}", "qbheat", s, {"linear_top1": m + 0.01})
    write_report([tmp_path / "runs"], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert ("fashion-mnist · vit-micro: ⚠ Pretraining gate: no random-init row in this section, "
            "so whether pretraining moved the encoder at all is not measured") in md
