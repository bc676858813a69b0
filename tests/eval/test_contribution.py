"""The fill's measured contribution: recon_loss again with the fill replaced by a constant
(the mean visible feature) and, for QB-Heat, by A = B = 0, on the same inputs and masks."""

from __future__ import annotations

import pytest
import torch

from bench.eval.contribution import fill_contribution
from bench.eval.pretext import pretext_metrics
from bench.models.build import build_model
from bench.ops.masking import block_visible, mean_visible_fill
from tests.helpers import tiny_config


def test_constant_fill_is_each_samples_mean_visible_feature():
    visible = block_visible(2, (4, 4), (2, 2), "quadrant", torch.Generator().manual_seed(0))
    latent = torch.randn(2, 4, 3)
    out = mean_visible_fill(latent, visible, (4, 4))
    mask = visible.mask(16)
    for b in range(2):
        assert torch.equal(out[b, mask[b]], latent[b])
        assert torch.allclose(out[b, ~mask[b]], latent[b].mean(0).expand(12, 3))


def _model(digits, method, **options):
    cfg = tiny_config(method=method, options=options, eval_test_limit=64)
    torch.manual_seed(0)
    return cfg, build_model(cfg, digits.spec)


def test_qbheat_copy_is_its_fill_at_zero_operators_on_the_same_masks(digits):
    """At initialisation A = B = 0: the copy ablation IS the learned fill, so its recon loss
    equals recon_loss exactly, which it could not if the masks or inputs differed. Moving A
    away from zero makes them differ, and the constant fill differs from both."""
    cfg, model = _model(digits, "qbheat")
    cpu = torch.device("cpu")
    learned = pretext_metrics(cfg, model, digits, cpu)["recon_loss"]
    got = fill_contribution(cfg, model, digits, cpu)
    assert set(got) == {"recon_loss_fill_const", "recon_loss_fill_copy"}
    assert got["recon_loss_fill_copy"] == learned
    assert got["recon_loss_fill_const"] != pytest.approx(learned, rel=1e-4)
    with torch.no_grad():
        model.method.A.weight.normal_(std=0.05)
    moved = pretext_metrics(cfg, model, digits, cpu)["recon_loss"]
    assert moved != learned
    assert fill_contribution(cfg, model, digits, cpu)["recon_loss_fill_copy"] == learned
    assert model.fill_rule is None  # the method's own fill again


def test_every_method_is_scored_with_a_constant_fill(digits):
    cfg, model = _model(digits, "mae")
    got = fill_contribution(cfg, model, digits, torch.device("cpu"))
    assert list(got) == ["recon_loss_fill_const"] and got["recon_loss_fill_const"] > 0
