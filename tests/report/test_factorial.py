"""The report of the mask shape x fill factorial (sweeps/factorial.toml): the 2 x 3 table, the
main effects and the interaction with CIs; and the test set's variance in a report's CIs where
runs recorded per-example outcomes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.core.outcomes import Outcome, write_outcomes
from bench.plan.sweep import load_spec
from bench.report.build import write_report
from bench.report.factorial import find_factorial, mask_shape
from tests.helpers import ROOT

MEANS = {("random", "mae"): 0.80, ("random", "qbheat"): 0.78, ("random", "interp"): 0.79,
         ("block", "mae"): 0.74, ("block", "qbheat"): 0.77, ("block", "interp"): 0.72}
JITTER = (0.0, 0.004, -0.003)


def _options(method: str, shape: str) -> dict:
    if method == "qbheat":
        return {"mask_ratio": 0.75, "visible": shape, "position": "quadrant", "order": "xy"}
    return {"mask_ratio": 0.75, "visible": shape, "block_position": "quadrant",
            **({"rule": "linear"} if method == "interp" else {})}


def write(root: Path, name: str, method: str, seed: int, metrics: dict, options: dict,
          encoder: str = "vit-micro") -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "method": method, "options": options, "dataset": "fashion-mnist", "encoder": encoder,
        "seed": seed, "epochs": 0 if method in ("raw-input", "random-init") else 3}))
    (run / "summary.json").write_text(json.dumps({
        "run_id": name, "method": method, "dataset": "fashion-mnist", "encoder": encoder,
        "seed": seed, "status": "ok", "metrics": metrics, "compute": {}}))
    return run


def value(shape: str, method: str, seed: int) -> float:
    k = list(MEANS).index((shape, method))
    return MEANS[shape, method] + 0.01 * seed + JITTER[(seed + k) % 3]


@pytest.fixture(scope="module")
def factorial(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("factorial")
    for encoder in ("vit-micro", "cnn-resnet-micro"):  # any encoder: one factorial per section
        for (shape, method) in MEANS:
            for seed in range(3):
                write(root / "runs", f"{encoder}-{method}-{shape}-{seed}", method, seed,
                      {"linear_top1": value(shape, method, seed)}, _options(method, shape),
                      encoder)
    write_report([root / "runs"], root / "report")
    return root / "report"


def test_the_factorial_table_and_its_effects(factorial):
    md = (factorial / "report.md").read_text()
    assert "fashion-mnist · vit-micro: mask shape x fill, linear top-1 %" in md
    assert "| mask shape | mae | interp | qbheat |" in md
    assert md.count("| random subset | ") == 2 and md.count("| block (quadrant) | ") == 2
    effects = pd.read_csv(factorial / "factorial.csv")
    mine = effects[effects.encoder == "vit-micro"].set_index("effect")
    per_seed = {key: np.array([value(*key, s) for s in range(3)]) for key in MEANS}
    shape = np.mean([per_seed["block", f] - per_seed["random", f]
                     for f in ("mae", "interp", "qbheat")], 0)
    fill = np.mean([per_seed[s, "qbheat"] - per_seed[s, "mae"] for s in ("random", "block")], 0)
    inter = (per_seed["block", "qbheat"] - per_seed["random", "qbheat"]
             - per_seed["block", "mae"] + per_seed["random", "mae"])
    expected = {
        "mask shape: block (quadrant) − random subset (mean over mae, interp, qbheat)": shape,
        "fill: qbheat − mae (mean over random subset, block (quadrant))": fill,
        "interaction: (block (quadrant) − random subset) under qbheat − under mae": inter,
    }
    for name, x in expected.items():
        row = mine.loc[name]
        half = 4.302652729749464 * x.std(ddof=1) / math.sqrt(3)
        assert row.estimate == pytest.approx(x.mean())
        assert row.ci_low == pytest.approx(x.mean() - half) and row.n == 3
    assert len(mine) == 5  # 1 shape effect, 2 fill effects, 2 interactions
    assert (mine.p_adjusted >= mine.p_value).all()
    assert "effects of mask shape and fill" in md


def test_no_factorial_without_two_shapes_of_two_fills(tmp_path):
    for method in ("mae", "qbheat", "interp"):
        for seed in range(2):
            write(tmp_path / "runs", f"{method}{seed}", method, seed, {"linear_top1": 0.8},
                  _options(method, "block" if method == "qbheat" else "random"))
    write_report([tmp_path / "runs"], tmp_path / "report")
    assert ": mask shape x fill" not in (tmp_path / "report" / "report.md").read_text()
    assert not (tmp_path / "report" / "factorial.csv").exists()


def test_the_sweep_crosses_shape_and_fill_at_equal_visible_counts():
    runs = load_spec(ROOT / "sweeps" / "factorial.toml").runs()
    cells = {(r.method, mask_shape(r.method, r.options)) for r in runs}
    assert len(runs) == 18 and len(cells) == 6
    assert {shape for _, shape in cells} == {"random subset", "block (quadrant)"}
    assert {r.options["mask_ratio"] for r in runs} == {0.75}
    frame = pd.DataFrame([{"method": r.method, "options": json.dumps(r.options, sort_keys=True),
                           "variant": "{}", "label": r.method} for r in runs if r.seed == 0])
    found = find_factorial(frame)
    assert found is not None and found.fills == ["mae", "interp", "qbheat"]


def test_test_set_variance_widens_cells_and_pairs_where_outcomes_are_recorded(tmp_path):
    """Runs with outcomes.npz (5,000 examples at ~80 %): the cell CI holds the test set's
    p(1 - p) / N besides the seeds' spread, and the paired comparison its per-example part."""
    rng = np.random.default_rng(0)
    truth = rng.random(2000) < 0.8
    for method, flip in (("mae", 0.05), ("qbheat", 0.08)):
        for seed in range(3):
            right = np.where(rng.random(2000) < flip, ~truth, truth)
            run = write(tmp_path / "runs", f"{method}{seed}", method, seed,
                        {"linear_top1": float(right.mean())}, {"mask_ratio": 0.75})
            write_outcomes(run, {"linear_top1": Outcome(right.astype(float), "same")})
    write_report([tmp_path / "runs"], tmp_path / "report")
    stats = pd.read_csv(tmp_path / "report" / "stats.csv").set_index("label")
    mae = stats.loc["mae"]
    seed_only = 4.302652729749464 * mae["std"] / math.sqrt(3)
    assert mae.test_examples == 2000 and mae.test_var > 0
    assert (mae.ci_high - mae.ci_low) / 2 > seed_only
    paired = pd.read_csv(tmp_path / "report" / "paired.csv").iloc[0]
    assert paired.test_examples == 2000 and paired.test_var > 0
    verdict = (tmp_path / "report" / "report.md").read_text().split("## Verdict")[1]
    assert "intervals hold seed and test-set variance (paired per-example differences on " \
           "the 2000 test examples both runs scored)" in verdict
