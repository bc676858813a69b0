"""The report's views of the new protocols: Kendall tau and its permutation p, the protocols'
agreement statement with the caveat of n, the dense / few-shot / per-layer / linear
predictability tables per section, and the R²-by-distance and accuracy-by-depth figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.core.outcomes import Outcome, write_outcomes
from bench.report.agreement import kendall_tau, permutation_p, ranked_metrics
from bench.report.build import write_report
from bench.report.metrics import metric_info, metric_order
from tests.helpers import write_run as write_run_folder


def test_kendall_tau_and_its_permutation_p():
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau([1, 2, 3], [30, 20, 10]) == -1.0
    assert kendall_tau([1, 2, 3], [20, 10, 30]) == pytest.approx(1 / 3)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))  # no ordering to compare
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(5 * 6))  # tau-b
    assert permutation_p([1, 2, 3], [10, 20, 30]) == pytest.approx(1 / 6)  # 1 order in 3!
    assert permutation_p([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 24)
    assert math.isnan(permutation_p(list(range(9)), list(range(9))))  # too many to enumerate


def test_what_counts_as_a_ranking_protocol():
    metrics = ["linear_top1", "knn_top1", "dense_miou", "linear_1pct_top1", "knn_5shot_top1",
               "linear_layer2_top1", "linear_layer_best", "linear_layer_best_top1",
               "linpred_r2_d1", "recon_loss", "compute.wall_s"]
    assert ranked_metrics(metrics) == ["linear_top1", "knn_top1", "dense_miou",
                                       "linear_1pct_top1", "knn_5shot_top1",
                                       "linear_layer_best_top1"]
    assert metric_info("linear_12shot_top1").title == "linear 12-shot top-1 %"
    assert metric_order(["linear_layer10_top1", "linear_layer2_top1"], "layers") == [
        "linear_layer2_top1", "linear_layer10_top1"]


def write_run(root: Path, method: str, seed: int, metrics: dict, options: dict | None = None,
              name: str | None = None) -> None:
    """A finished fashion-mosaic run folder NAME-SEED (tests.helpers.write_run)."""
    write_run_folder(root, f"{name or method}-{seed}", method, seed, metrics, options=options,
                     dataset="fashion-mosaic")


def metrics_of(rank: int, seed: int) -> dict[str, float]:
    """Every new metric, ordered by `rank` (0 worst); the kNN ranking reversed."""
    jitter = 0.001 * seed
    out = {"linear_top1": 0.5 + 0.1 * rank + jitter, "knn_top1": 0.8 - 0.1 * rank + jitter,
           "dense_miou": 0.3 + 0.1 * rank + jitter, "dense_pixel_acc": 0.8 + 0.01 * rank,
           "linear_1pct_top1": 0.4 + 0.1 * rank, "linear_10pct_top1": 0.45 + 0.1 * rank,
           "linear_5shot_top1": 0.3 + 0.1 * rank, "knn_5shot_top1": 0.3 + 0.1 * rank,
           "linear_layer0_top1": 0.3, "linear_layer1_top1": 0.4 + 0.1 * rank,
           "linear_layer_best": 1.0, "linear_layer_best_top1": 0.4 + 0.1 * rank}
    for d in (1, 2, 3, 4):
        out |= {f"linpred_r2_d{d}": 0.9 - 0.1 * d + 0.01 * rank,
                f"linpred_identity_r2_d{d}": 0.5 - 0.3 * d,
                f"linpred_mean_r2_d{d}": 0.4}
    return out


# Five strategies (the fewest an ordering is shown for), ranked 0 (worst) to 4.
STRATEGIES = (("mae", {}), ("interp", {}), ("qbheat", {}), ("mae", {"mask_ratio": 0.5}),
              ("interp", {"rule": "axes"}))


def write_strategies(root: Path, strategies, seeds) -> None:
    for rank, (method, options) in enumerate(strategies):
        for seed in seeds:
            write_run(root, method, seed, metrics_of(rank, seed), options, f"{method}{rank}")


def test_report_shows_each_new_view_and_whether_protocols_agree(tmp_path):
    write_strategies(tmp_path / "runs", STRATEGIES, range(3))
    write_run(tmp_path / "runs", "raw-input", 0, metrics_of(0, 0))
    write_report([tmp_path / "runs"], tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    for title in ("dense probe", "few-shot probes", "linear probe by layer",
                  "linear predictability of neighbouring features",
                  "agreement between protocols"):
        assert f"**fashion-mosaic · vit-micro: {title}**" in report, title
    assert "| qbheat · linpred R² | 0.82 ± 0.00 (n=3) |" in report  # d=1: 0.9 - 0.1 + 0.02
    assert "| raw-input · identity R² |" in report  # reference rows are shown, not ranked
    # dense ranks as the linear probe does; kNN in reverse
    assert ("Exploratory: the ranking of the strategies by dense mIoU % against linear top-1 "
            "%: τ = +1.00 (the same order; n = 5 strategies, chance agreement at least this "
            "good p = 0.0083)") in report
    assert "| linear top-1 % vs kNN top-1 % | -1.00 | 1 | 5 |" in report
    # 9 ranking protocols, 36 pairs; the 8 pairs with kNN disagree
    assert ("Exploratory: do the protocols agree? 28 of 36 protocol pairs rank the 5 "
            "strategies in the same order (τ = 1); 0 mostly alike (0 < τ < 1), 8 not (τ ≤ 0)"
            ) in report
    assert "probability 1/120" in report
    assert (tmp_path / "report" / "linpred.png").is_file()
    assert (tmp_path / "report" / "layers.png").is_file()
    assert "best layer is chosen on a validation split" in report


@pytest.mark.parametrize("strategies, seeds, found", [(STRATEGIES[:4], range(3), 4),
                                                      (STRATEGIES, range(2), 0)])
def test_no_agreement_from_too_few_strategies_or_seeds(tmp_path, strategies, seeds, found):
    """Four strategies (identical orders by chance 1 time in 24), or five at two seeds: no
    tau, no agreement table, the rule stated instead."""
    write_strategies(tmp_path / "runs", strategies, seeds)
    write_report([tmp_path / "runs"], tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    assert "agreement between protocols**" not in report and "τ =" not in report
    assert (f"Agreement between protocols is not shown (at most {found} strategies have 3 "
            "seeds in two protocols): protocol agreement is shown only for at least 5 "
            "strategies with at least 3 seeds each (with 4, identical orders already arise by "
            "chance 1 time in 24), and it is exploratory") in report


def _dense_run(root: Path, method: str, seed: int, rank: int, scores: np.ndarray) -> None:
    """A fashion-mosaic run with the dense probe's figures: its chosen L2, foreground mIoU,
    each label's IoU, and per-canvas linearised mIoU outcomes (outside [0, 1], as a
    linearised ratio is)."""
    iou = {f"dense_iou_{k}": 0.1 + 0.05 * k + 0.01 * rank for k in range(3)}
    metrics = {"linear_top1": 0.5 + 0.1 * rank + 0.001 * seed, "linear_l2": 1e-4,
               "dense_miou": float(scores.mean()), "dense_miou_fg": 0.1 + 0.02 * rank,
               "dense_pixel_acc": 0.8, "dense_l2": 1e-3 if seed else 1e-2, **iou}
    write_run(root, method, seed, metrics, name=f"{method}{rank}")
    write_outcomes(root / f"{method}{rank}-{seed}",
                   {"dense_miou": Outcome(scores, "canvases"),
                    "linear_top1": Outcome((np.arange(50) % 2).astype(float), "labels")})


@pytest.fixture(scope="module")
def dense_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dense")
    rng = np.random.default_rng(0)
    canvases = rng.normal(0, 0.6, 400)  # each canvas's own difficulty, the same in every run
    for rank, method in enumerate(("mae", "qbheat", "random-init")):
        for seed in range(3):
            _dense_run(root / "runs", method, seed, rank, 0.17 + 0.01 * rank + canvases
                       + rng.normal(0, 0.05, 400))
    write_report([root / "runs"], root / "report")
    return root / "report"


def test_the_dense_probe_shows_its_l2_foreground_miou_and_each_label(dense_report):
    """dense_l2 per row beside linear_l2; foreground mIoU beside mIoU (and judged); one IoU
    column per label, named 'class k' where the card names none; linearised per-canvas
    outcomes (scores far outside [0, 1]) add the test set's variance to the mIoU CI."""
    md = (dense_report / "report.md").read_text()
    assert "| row | dense mIoU % | dense foreground mIoU % | dense pixel acc % |" in md
    assert "| row | linear probe L2 (seeds) | dense probe L2 (seeds) |" in md
    assert "| mae | 1e-04 (3 seeds) | 1e-03 (2 seeds), 1e-02 (1 seed) |" in md
    assert "| row | class 0 | class 1 | class 2 |" in md
    assert "| qbheat | 11.0 ± 0.0 (n=3) | 16.0 ± 0.0 (n=3) | 21.0 ± 0.0 (n=3) |" in md
    paired = pd.read_csv(dense_report / "paired.csv")
    assert "dense_miou_fg" in set(paired.metric)  # judged: in the family
    stats = pd.read_csv(dense_report / "stats.csv").set_index(["label", "metric"])
    miou = stats.loc[("mae", "dense_miou")]
    assert miou.test_examples == 400 and miou.test_var > 0.5 ** 2 / 400
    assert miou.ci_high - miou["mean"] > 1.96 * math.sqrt(miou.test_var)


def test_label_names_come_from_the_runs_record_else_the_dataset_card(tmp_path, monkeypatch):
    """summary.json's data.dense_classes (what bench.run.records writes) names the columns;
    runs without it (older ones) fall back to a list in the dataset card."""
    import bench.report.spatial as spatial

    monkeypatch.setattr(spatial, "load_card",
                        lambda name: {"dense_class_names": ["T-shirt/top", "Trouser", "Bag"]})
    for seed in range(2):
        _dense_run(tmp_path / "runs", "mae", seed, 0, np.full(10, 0.2))
    write_report([tmp_path / "runs"], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| row | T-shirt/top | Trouser | Bag |" in md
    for summary in (tmp_path / "runs").glob("*/summary.json"):
        record = json.loads(summary.read_text())
        summary.write_text(json.dumps({**record, "data": {"dense_classes": ["a", "b", "bg"]}}))
    write_report([tmp_path / "runs"], tmp_path / "report2")
    assert "| row | a | b | bg |" in (tmp_path / "report2" / "report.md").read_text()


def _linpred_run(root: Path, method: str, seed: int, gain: float, loss: float) -> None:
    """Linear predictability with its content baseline `gain` below the fitted map's and the
    composed d = 1 map `loss` below it at d >= 2 (per d), a little seed noise."""
    noise = 0.002 * (seed - 1)
    metrics = {"linear_top1": 0.6 + noise}
    for d in (1, 2, 3):
        r2 = 0.8 - 0.1 * d + noise
        metrics |= {f"linpred_r2_d{d}": r2, f"linpred_content_r2_d{d}": r2 - gain - noise,
                    **({f"linpred_composed_r2_d{d}": r2 - loss * (d - 1) + noise}
                       if d >= 2 else {})}
    write_run(root, method, seed, metrics)


def test_linear_predictability_beyond_content_and_one_map_composed(tmp_path):
    """Per row: the gain over the content baseline, M₁^d's loss against the fitted map and
    whether one map holds (within 0.05 R²); then one sentence on the seed's hypothesis."""
    for seed in range(3):
        _linpred_run(tmp_path / "runs", "mae", seed, gain=0.10, loss=0.01)
        _linpred_run(tmp_path / "runs", "qbheat", seed, gain=0.12, loss=0.20)
        _linpred_run(tmp_path / "runs", "random-init", seed, gain=0.10, loss=0.01)
    write_report([tmp_path / "runs"], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert ("| row | gain over content d=1 | gain over content d=2 | gain over content d=3 | "
            "M₁^d − fitted d=2 | M₁^d − fitted d=3 | one map |") in md
    assert ("| mae | +0.1000 ± 0.0050 (n=3) | +0.1000 ± 0.0050 (n=3) | +0.1000 ± 0.0050 (n=3) "
            "| -0.0100 ± 0.0050 (n=3) | -0.0200 ± 0.0050 (n=3) | holds to d=3 |") in md
    assert "| qbheat | +0.12" in md and "| fails at d=2 |" in md
    assert ("What this says about the seed's hypothesis (one linear map M with z(x + d) = "
            "M^d z(x)): the evidence supports it for 1 of 2 pretrained rows only; the "
            "neighbour adds R² over content at d = 1 in 2 of 2 pretrained rows (+0.10 to "
            "+0.12); M₁^d holds in 1 of 2; random-init (the untrained encoder) shows the same, "
            "so this is the architecture's, not pretraining's (exploratory: not in the "
            "verdict's family).") in md


def test_the_step_maps_negative_r2_is_explained_once(tmp_path):
    for seed in range(2):
        write_run(tmp_path / "runs", "qbheat", seed, {
            "linear_top1": 0.6, "linpred_r2_d1": 0.8, "linpred_heat_r2_d1": -6.8,
            "linpred_heat_r2_d2": -139.0 + seed})
    write_report([tmp_path / "runs"], tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert md.count("The (I+A)^d R² lies far below 0 (here -6.8 to -138) because training "
                    "never asks (I+A)^d to reproduce the encoder's features at x + d") == 1
