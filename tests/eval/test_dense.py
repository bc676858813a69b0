"""The dense probe: patch labels by majority; mIoU, foreground mIoU, per-label IoU and pixel
accuracy from per-image counts; per-image linearised scores whose mean is the metric and whose
variance / n matches a bootstrap; the probe's own penalty, chosen on held-out training images
(never the test split, never the linear probe's); and the probe on ViT, CNN and raw-input
features of a tiny mosaic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.core.outcomes import Outcome, read_outcomes, write_outcomes
from bench.eval import dense
from bench.eval.dense import LabelCounts, dense_metrics, linearised_mean_ratio, patch_labels, scores
from bench.eval.probes import L2_GRID, ProbeRecipe, choose_l2, validation_rows
from bench.eval.protocols import evaluate_encoder
from bench.models.cnn import CNNEncoder, TimmTrunk
from bench.models.vit import TransformerEncoder
from tests.helpers import tiny_config, tiny_mosaic

CPU = torch.device("cpu")


def test_patch_label_is_the_majority_and_ties_go_to_the_lower_label():
    masks = torch.full((1, 4, 4), 3)
    masks[0, :2, :2] = torch.tensor([[1, 1], [1, 3]])  # patch (0, 0): three 1s, one 3
    masks[0, :2, 2:] = torch.tensor([[2, 2], [3, 3]])  # patch (0, 1): a tie of 2 and 3
    assert patch_labels(masks, 2, 4).tolist() == [[1, 2, 3, 3]]


def test_scores_from_per_image_counts():
    truth = torch.tensor([[0, 0, 1, 1, 3, 3], [1, 1, 3, 3, 3, 3]])  # label 3: the background
    pred = torch.tensor([[0, 1, 1, 1, 3, 0], [1, 3, 3, 3, 3, 3]])  # label 2 in neither
    counts = LabelCounts.of(pred, truth, 4)
    assert counts.both.tolist() == [[1, 2, 0, 1], [0, 1, 0, 4]]
    metrics, per_image = scores(counts)
    # IoU over both images: label 0: 1 / 3, label 1: 3 / 5, label 3 (background): 5 / 7
    assert metrics["dense_pixel_acc"] == pytest.approx(9 / 12)
    assert metrics["dense_miou"] == pytest.approx((1 / 3 + 3 / 5 + 5 / 7) / 3)
    assert metrics["dense_miou_fg"] == pytest.approx((1 / 3 + 3 / 5) / 2)
    assert {k: v for k, v in metrics.items() if k.startswith("dense_iou_")} == pytest.approx(
        {"dense_iou_0": 1 / 3, "dense_iou_1": 3 / 5, "dense_iou_3": 5 / 7})
    # images of equal size: the pixel accuracy's per-image scores are the images' accuracies
    assert per_image["dense_pixel_acc"].tolist() == pytest.approx([4 / 6, 5 / 6])
    assert scores(LabelCounts.of(truth, truth, 4))[0]["dense_miou"] == 1.0


def _segmentations(n: int, seed: int) -> LabelCounts:
    """`n` random 16x16 images of 4 labels (one a large background) and a noisy prediction
    of each: per-image counts that vary as a real test set's do."""
    g = torch.Generator().manual_seed(seed)
    share = torch.rand(n, 3, generator=g) * 0.4
    u = torch.rand(n, 16, 16, generator=g)
    edges = share.cumsum(1)[:, :, None, None]
    truth = (u[:, None] > edges).sum(1)  # 0..3, label 3 where u is above every edge
    flip = torch.rand(n, 16, 16, generator=g) < 0.1 + 0.3 * torch.rand(n, 1, 1, generator=g)
    pred = torch.where(flip, torch.randint(0, 4, (n, 16, 16), generator=g), truth)
    return LabelCounts.of(pred, truth, 4)


def test_linearised_scores_average_to_the_metric_and_give_the_bootstrap_variance():
    counts = _segmentations(300, 0)
    _, per_image = scores(counts)
    metrics, _ = scores(counts)
    rng = np.random.default_rng(0)
    draws = torch.from_numpy(rng.integers(0, 300, size=(2000, 300)))
    for name in ("dense_miou", "dense_miou_fg", "dense_pixel_acc"):
        s = per_image[name]
        assert s.mean().item() == pytest.approx(metrics[name], rel=0, abs=1e-12)
        delta = s.var().item() / len(s)
        boot = [scores(LabelCounts(counts.truth[i], counts.pred[i], counts.both[i]))[0][name]
                for i in draws]
        assert delta == pytest.approx(np.var(boot, ddof=1), rel=0.15)


def test_linearised_scores_round_trip_through_outcomes_exactly(tmp_path):
    metrics, per_image = scores(_segmentations(50, 1))
    # one image holds a label (right), nine others each show it wrongly in one pixel: that
    # image's score leaves [0, 1] (r = 10 / 19; s = r + 10 (10 - 10 r) / 19 = 3.02)
    metrics["rare"], per_image["rare"] = linearised_mean_ratio(
        torch.tensor([[10.0]] + [[0.0]] * 9), torch.tensor([[10.0]] + [[1.0]] * 9))
    assert per_image["rare"].max() > 3 and metrics["rare"] == pytest.approx(10 / 19)
    write_outcomes(tmp_path, {n: Outcome(s.numpy(), "k") for n, s in per_image.items()})
    back = read_outcomes(tmp_path)
    for name, s in per_image.items():
        assert np.array_equal(back[name].scores, s.numpy())  # float64: no precision lost
        assert back[name].scores.mean() == pytest.approx(metrics[name], rel=0, abs=1e-12)


def test_linearised_mean_ratio_without_any_present_column_is_nan():
    value, s = linearised_mean_ratio(torch.zeros(3, 2), torch.zeros(3, 2))
    assert np.isnan(value) and torch.isnan(s).all()


@pytest.fixture(scope="module")
def mosaic():
    return tiny_mosaic()


def test_dense_probe_chooses_its_own_penalty_on_held_out_training_images(mosaic, monkeypatch):
    """The penalty is the grid's best token mIoU on a seeded share of whole training images
    (fitted on the other images' tokens); it is recorded as dense_l2; it does not follow the
    linear probe's, and the test images never enter the choice."""
    cfg = tiny_config(eval_train_limit=64, eval_test_limit=32, probe_steps=30)
    alone = dense_metrics(cfg, mosaic, None, CPU)
    assert alone["dense_l2"] in L2_GRID
    # the same choice, made by hand on the drawn tokens
    from bench.eval.positions import PositionFeatures

    train = mosaic.dense_split("train", 64)
    feats, ys, image = dense._train_tokens(PositionFeatures.of(None, mosaic), train.x,
                                           train.masks, 4, 256, CPU, cfg.seed)
    held = torch.zeros(64, dtype=torch.bool)
    held[validation_rows(64, 0.2, cfg.seed)[1]] = True
    l2, by_penalty = choose_l2(feats, ys, 4, cfg.seed, ProbeRecipe(steps=30), held[image],
                               dense.token_miou)
    assert alone["dense_l2"] == l2 and len(set(by_penalty.values())) > 1
    # beside the linear probe, in a run's evaluation: the same dense figures
    both = evaluate_encoder(cfg, mosaic, None, CPU, ("linear", "dense"))
    assert {k: both[k] for k in alone} == alone
    # other test canvases: other scores, the same penalty
    shuffled = tiny_mosaic(seed=1)
    shuffled.train_x, shuffled.train_masks = mosaic.train_x, mosaic.train_masks
    assert dense_metrics(cfg, shuffled, None, CPU)["dense_l2"] == alone["dense_l2"]


def test_dense_probe_on_vit_cnn_and_raw_input(mosaic):
    cfg = tiny_config(eval_train_limit=64, eval_test_limit=32, probe_steps=30)
    torch.manual_seed(0)
    vit = TransformerEncoder(mosaic.spec, 32, 1, 2)
    trunk = TimmTrunk("resnet18", (("stem_width", 16), ("channels", (16, 32, 64, 128))))
    cnn = CNNEncoder(mosaic.spec, trunk, 32)
    test_masks = mosaic.test_masks[:32].long()
    all_background = scores(LabelCounts.of(torch.full_like(test_masks, 3), test_masks, 4))[0]
    results = {}
    for name, encoder in (("vit", vit), ("cnn", cnn), ("raw", None)):
        outcomes = {}
        results[name] = dense_metrics(cfg, mosaic, encoder, CPU, outcomes)
        r = results[name]
        assert {"dense_miou", "dense_miou_fg", "dense_pixel_acc", "dense_l2"} <= set(r)
        assert set(r) - {"dense_miou", "dense_miou_fg", "dense_pixel_acc", "dense_l2"} <= {
            f"dense_iou_{k}" for k in range(4)}
        assert 0.0 <= r["dense_miou"] <= r["dense_pixel_acc"] <= 1.0
        assert set(outcomes) == {"dense_miou", "dense_miou_fg", "dense_pixel_acc"}
        for metric, o in outcomes.items():
            assert len(o.scores) == 32 and o.scores.mean() == pytest.approx(r[metric], abs=1e-12)
    # patch pixels tell a stroke from the blank background: above the all-background guess
    assert results["raw"]["dense_pixel_acc"] > all_background["dense_pixel_acc"] + 0.02
    assert results["raw"]["dense_miou"] > all_background["dense_miou"] + 0.1
    assert dense_metrics(cfg, mosaic, None, CPU) == results["raw"]  # seeded: repeatable


def test_a_run_records_the_dense_figures_names_and_per_image_outcomes(mosaic, tmp_path):
    from bench.plan.sweep import resolve_run
    from bench.run.train import train_run

    cfg = resolve_run(tiny_config(method="random-init", dataset="fashion-mosaic",
                                  protocols="linear,dense", eval_train_limit=64,
                                  eval_test_limit=32, probe_steps=10))
    summary = train_run(cfg, tmp_path, progress=False, data=mosaic)
    assert summary["data"]["dense_classes"] == ["0", "1", "2", "background"]
    metrics, outcomes = summary["metrics"], read_outcomes(tmp_path)
    assert {"dense_l2", "dense_miou_fg", "linear_l2"} <= set(metrics)
    for name in ("dense_miou", "dense_miou_fg", "dense_pixel_acc"):
        assert outcomes[name].scores.mean() == pytest.approx(metrics[name], rel=0, abs=1e-12)
