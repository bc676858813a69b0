"""The dense probe: patch labels by majority, mIoU and pixel accuracy from a confusion matrix,
and the probe itself on ViT, CNN and raw-input features of a tiny mosaic."""

from __future__ import annotations

import pytest
import torch

from bench.eval.dense import confusion, dense_metrics, patch_labels, scores
from bench.models.cnn import CNNEncoder, TimmTrunk
from bench.models.vit import TransformerEncoder
from tests.helpers import tiny_config, tiny_mosaic

CPU = torch.device("cpu")


def test_patch_label_is_the_majority_and_ties_go_to_the_lower_label():
    masks = torch.full((1, 4, 4), 3)
    masks[0, :2, :2] = torch.tensor([[1, 1], [1, 3]])  # patch (0, 0): three 1s, one 3
    masks[0, :2, 2:] = torch.tensor([[2, 2], [3, 3]])  # patch (0, 1): a tie of 2 and 3
    assert patch_labels(masks, 2, 4).tolist() == [[1, 2, 3, 3]]


def test_scores_from_the_confusion_matrix():
    truth = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    conf = confusion(pred, truth, 4)  # label 3 in neither: left out of the mean
    assert conf.sum() == 6 and conf[0, 1] == 1
    s = scores(conf)
    assert s["dense_pixel_acc"] == pytest.approx(4 / 6)
    # IoU: label 0: 1 / 3, label 1: 2 / 3, label 2: 1 / 2
    assert s["dense_miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert scores(confusion(truth, truth, 4)) == {"dense_miou": 1.0, "dense_pixel_acc": 1.0}


@pytest.fixture(scope="module")
def mosaic():
    return tiny_mosaic()


def test_dense_probe_on_vit_cnn_and_raw_input(mosaic):
    cfg = tiny_config(eval_train_limit=64, eval_test_limit=32, probe_steps=30)
    torch.manual_seed(0)
    vit = TransformerEncoder(mosaic.spec, 32, 1, 2)
    trunk = TimmTrunk("resnet18", (("stem_width", 16), ("channels", (16, 32, 64, 128))))
    cnn = CNNEncoder(mosaic.spec, trunk, 32)
    test_masks = mosaic.test_masks[:32].long()
    all_background = scores(confusion(torch.full_like(test_masks, 3), test_masks, 4))
    results = {}
    for name, encoder in (("vit", vit), ("cnn", cnn), ("raw", None)):
        results[name] = dense_metrics(cfg, mosaic, encoder, CPU)
        assert set(results[name]) == {"dense_miou", "dense_pixel_acc"}
        assert 0.0 <= results[name]["dense_miou"] <= results[name]["dense_pixel_acc"] <= 1.0
    # patch pixels tell a stroke from the blank background: above the all-background guess
    assert results["raw"]["dense_pixel_acc"] > all_background["dense_pixel_acc"] + 0.02
    assert results["raw"]["dense_miou"] > all_background["dense_miou"] + 0.1
    assert dense_metrics(cfg, mosaic, None, CPU) == results["raw"]  # seeded: repeatable
