"""Masked convolution (bench.models.sparse): a CNN encodes a scattered subset without leakage,
hidden positions stay zero through the trunk, batch statistics come from visible positions
only, and on a block it gives what the crop gives."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.core.errors import IncompatibleError
from bench.core.spec import DataSpec
from bench.models.cnn import build_cnn
from bench.models.encoders import build_encoder
from bench.models.presets import ENCODERS
from bench.ops.masking import Visible, block_visible, random_visible

SPEC = DataSpec("image", (8, 8), patch_size=4, in_chans=1)
MASKED = ["cnn-resnet-micro", "cnn-convnext-micro"]


def _hidden_pixels(visible: Visible, batch: int) -> torch.Tensor:
    keep = torch.zeros(batch, 64, dtype=torch.bool).scatter_(1, visible.index, True)
    return ~keep.view(batch, 1, 8, 8).repeat_interleave(4, 2).repeat_interleave(4, 3)


@pytest.mark.parametrize("name", MASKED)
def test_visible_features_do_not_see_hidden_pixels(name):
    """Training mode (batch statistics): hidden pixels changed by a lot, visible features
    bit-identical; and the gradient never reaches a hidden pixel."""
    torch.manual_seed(0)
    encoder = build_encoder(name, SPEC)
    assert "masked" in encoder.kinds
    visible = random_visible(3, 64, 16, torch.Generator().manual_seed(0))
    x = torch.randn(3, 1, 32, 32, requires_grad=True)
    out = encoder.forward_visible(x, visible)
    assert out.shape == (3, 16, encoder.dim)
    hidden = _hidden_pixels(visible, 3)
    changed = torch.where(hidden, torch.randn_like(x) * 10, x.detach())
    assert torch.equal(encoder.forward_visible(changed, visible), out)
    out.square().sum().backward()
    assert not x.grad[hidden].any() and x.grad[~hidden].abs().sum() > 0


@pytest.mark.parametrize("name", MASKED)
def test_hidden_positions_stay_zero_through_the_trunk(name):
    """Every feature map the trunk's stages and their blocks hand on is zero at hidden
    positions."""
    torch.manual_seed(0)
    encoder = build_encoder(name, SPEC)
    maps = []
    parts = [m for child in encoder.trunk.children() for m in (child, *child.children())]
    hooks = [m.register_forward_hook(lambda mod, i, o: maps.append(o)) for m in parts]
    visible = random_visible(2, 64, 16, torch.Generator().manual_seed(1))
    encoder.forward_visible(torch.randn(2, 1, 32, 32), visible)
    for h in hooks:
        h.remove()
    hidden = _hidden_pixels(visible, 2)
    checked = 0
    for fmap in maps:
        if isinstance(fmap, torch.Tensor) and fmap.dim() == 4 and fmap.shape[-1] >= 8:
            f = 32 // fmap.shape[-1]
            at = hidden[:, :, ::f, ::f].expand_as(fmap)
            assert not fmap[at].any()
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("name", MASKED)
def test_a_block_by_masked_convolution_is_the_crop(name):
    """Zero outside the block = the crop's zero padding, visible-only statistics = the crop's
    statistics: features and running statistics agree with the crop path."""
    torch.manual_seed(0)
    crop_enc = build_encoder(name, SPEC)
    torch.manual_seed(0)
    masked_enc = build_encoder(name, SPEC)
    block = block_visible(3, (8, 8), (4, 4), "random", torch.Generator().manual_seed(1))
    x = torch.randn(3, 1, 32, 32)
    crop = crop_enc.forward_visible(x, block)
    scattered = masked_enc.forward_visible(x, Visible(block.index))  # no geometry: masked path
    torch.testing.assert_close(scattered, crop, atol=1e-5, rtol=1e-5)
    for a, b in zip(crop_enc.modules(), masked_enc.modules()):
        if isinstance(a, nn.BatchNorm2d):
            torch.testing.assert_close(b.running_mean, a.running_mean)
            torch.testing.assert_close(b.running_var, a.running_var)


def test_batch_norm_statistics_are_of_visible_positions():
    """The first batch norm's running mean moves to the mean of its input over visible
    positions, not over the whole (mostly zero) map."""
    torch.manual_seed(0)
    encoder = build_encoder("cnn-resnet-micro", SPEC)
    bn = encoder.trunk.bn1
    seen = []
    bn.register_forward_hook(lambda mod, i, o: seen.append(i[0].detach()))
    visible = random_visible(4, 64, 16, torch.Generator().manual_seed(2))
    encoder.forward_visible(torch.randn(4, 1, 32, 32) + 3, visible)
    keep = ~_hidden_pixels(visible, 4)[:, :, ::2, ::2]  # bn1 works at stride 2
    x = seen[0]
    visible_mean = (x * keep).sum((0, 2, 3)) / keep.sum()
    torch.testing.assert_close(bn.running_mean, bn.momentum * visible_mean, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(bn.running_mean, bn.momentum * x.mean((0, 2, 3)), atol=1e-3)


def test_whole_images_are_unchanged_by_masking():
    """Outside a masked forward (evaluation, probes) the trunk is timm's: the masked and the
    plain encoder give the same features."""
    torch.manual_seed(0)
    masked = build_cnn(SPEC, arch="resnet18", dim=16, masked=True).eval()
    torch.manual_seed(0)
    plain = build_cnn(SPEC, arch="resnet18", dim=16).eval()
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(masked.forward_tokens(x), plain.forward_tokens(x))


def test_a_trunk_that_pools_over_positions_is_refused():
    """MobileNetV3 at 16-px patches has squeeze-excitation: masking cannot confine its mean."""
    spec = DataSpec("image", (2, 2), patch_size=16, in_chans=3)
    with pytest.raises(IncompatibleError, match="SqueezeExcite.*visible=block"):
        build_cnn(spec, arch="mobilenetv3_large_100", dim=16, masked=True)
    assert "masked" not in ENCODERS.get("cnn-mobilenetv3").offers


def test_unmasked_cnn_refuses_a_scattered_subset():
    encoder = build_cnn(SPEC, arch="resnet18", dim=16)
    visible = random_visible(2, 64, 16, torch.Generator().manual_seed(0))
    with pytest.raises(IncompatibleError, match="one contiguous 2-D block"):
        encoder.forward_visible(torch.randn(2, 1, 32, 32), visible)
