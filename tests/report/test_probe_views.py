"""The report's views of the new protocols: Kendall tau and its permutation p, the protocols'
agreement statement with the caveat of n, the dense / few-shot / per-layer / linear
predictability tables per section, and the R²-by-distance and accuracy-by-depth figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.core.references import REFERENCE_ROWS
from bench.report.agreement import kendall_tau, permutation_p, ranked_metrics
from bench.report.build import write_report
from bench.report.metrics import metric_info, metric_order


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


def write_run(root: Path, method: str, seed: int, metrics: dict) -> None:
    """A finished run folder: config.json and summary.json (what the report reads)."""
    run_dir = root / f"{method}-{seed}"
    run_dir.mkdir(parents=True)
    ref = method in REFERENCE_ROWS
    config = {"method": method, "options": {}, "dataset": "fashion-mosaic",
              "encoder": "vit-micro", "seed": seed, "epochs": 0 if ref else 3}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "summary.json").write_text(json.dumps({
        "run_id": run_dir.name, "method": method, "dataset": "fashion-mosaic",
        "encoder": "vit-micro", "seed": seed, "status": "ok", "metrics": metrics,
        "compute": {"wall_s": 1.0}}))


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


def test_report_shows_each_new_view_and_whether_protocols_agree(tmp_path):
    for rank, method in enumerate(["mae", "interp", "qbheat"]):
        for seed in (0, 1):
            write_run(tmp_path / "runs", method, seed, metrics_of(rank, seed))
    write_run(tmp_path / "runs", "raw-input", 0, metrics_of(0, 0))
    write_report([tmp_path / "runs"], tmp_path / "report")
    report = (tmp_path / "report" / "report.md").read_text()
    for title in ("dense probe", "few-shot probes", "linear probe by layer",
                  "linear predictability of neighbouring features",
                  "agreement between protocols"):
        assert f"**fashion-mosaic · vit-micro: {title}**" in report, title
    assert "| qbheat · linpred R² | 0.82 ± 0.00 (n=2) |" in report  # d=1: 0.9 - 0.1 + 0.02
    assert "| raw-input · identity R² |" in report  # reference rows are shown, not ranked
    # dense ranks as the linear probe does; kNN in reverse
    assert ("Ranking of the strategies by dense mIoU % against linear top-1 %: τ = +1.00 "
            "(the same order; n = 3 strategies, chance agreement at least this good p = 0.17)"
            ) in report
    assert "| linear top-1 % vs kNN top-1 % | -1.00 | 1 | 3 |" in report
    # 9 ranking protocols, 36 pairs; the 8 pairs with kNN disagree
    assert ("Do the protocols agree? 28 of 36 protocol pairs rank the 3 strategies in the same "
            "order (τ = 1); 0 mostly alike (0 < τ < 1), 8 not (τ ≤ 0)") in report
    assert "probability 1/6" in report
    assert (tmp_path / "report" / "linpred.png").is_file()
    assert (tmp_path / "report" / "layers.png").is_file()
    assert "best layer is chosen on a validation split" in report
