"""CNN (dense) encoders: grid-aligned output, per-sample block crops, locality."""

from __future__ import annotations

import pytest
import torch

from bench.core.errors import IncompatibleError
from bench.core.spec import DataSpec
from bench.models.cnn import CNNEncoder, crop_blocks
from bench.models.encoders import build_encoder
from bench.models.presets import ENCODERS
from bench.ops.masking import Visible, block_visible

SPEC = DataSpec("image", (8, 8), patch_size=4, in_chans=1)
PRESETS = ["cnn-resnet-micro", "cnn-convnext-micro", "cnn-resnet18", "cnn-convnext-atto",
           "cnn-mobilenetv3"]


def _block(batch: int, seed: int = 0) -> Visible:
    return block_visible(batch, SPEC.grid, (4, 4), "random", torch.Generator().manual_seed(seed))


def test_presets_are_dense_image_encoders():
    for name in PRESETS:
        preset = ENCODERS.get(name)
        assert preset.kind == "dense" and preset.modalities == frozenset({"image"})


def test_crop_blocks_takes_each_samples_window():
    x = torch.randn(3, 2, 12, 10)
    origin = torch.tensor([[0, 0], [4, 6], [8, 2]])
    crops = crop_blocks(x, origin, (4, 4))
    for i, (r, c) in enumerate(origin.tolist()):
        assert torch.equal(crops[i], x[i, :, r : r + 4, c : c + 4])


@pytest.mark.parametrize("name", PRESETS)
def test_shapes_and_locality(name):
    torch.manual_seed(0)
    encoder = build_encoder(name, SPEC)  # train mode: BatchNorm statistics see crops only
    assert isinstance(encoder, CNNEncoder) and encoder.kind == "dense"
    visible = _block(3)
    x = torch.randn(3, 1, 32, 32)
    out = encoder.forward_visible(x, visible)
    assert out.shape == (3, 16, encoder.dim)
    assert encoder.forward_tokens(x).shape == (3, 64, encoder.dim)
    # Pixels outside each sample's block do not reach its features.
    outside = torch.ones_like(x, dtype=torch.bool)
    for i, (r, c) in enumerate((visible.origin * 4).tolist()):
        outside[i, :, r : r + 16, c : c + 16] = False
    changed = torch.where(outside, torch.randn_like(x) * 10, x)
    assert torch.equal(encoder.forward_visible(changed, visible), out)


def test_block_features_are_in_visible_index_order():
    """Row-major block order: features equal those of the crop at the same position."""
    torch.manual_seed(0)
    encoder = build_encoder("cnn-resnet-micro", SPEC).eval()  # BatchNorm: batch-independent
    x = torch.randn(2, 1, 32, 32)
    visible = _block(2, seed=4)
    out = encoder.forward_visible(x, visible)
    for i, (r, c) in enumerate((visible.origin * 4).tolist()):
        alone = encoder.forward_tokens(x[i : i + 1, :, r : r + 16, c : c + 16])
        torch.testing.assert_close(out[i : i + 1], alone)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_strides_are_the_trunks(name):
    """Planning reads a preset's strides (the patch sizes it can be cut at) without timm: they
    must be the timm stages' output strides."""
    import timm

    preset = ENCODERS.get(name)
    model = timm.create_model(preset.settings["arch"], pretrained=False, num_classes=0,
                              **preset.settings["arch_overrides"])
    assert preset.strides == tuple(f["reduction"] for f in model.feature_info)


def test_patch_size_without_a_matching_stage():
    spec = DataSpec("image", (32, 32), patch_size=1, in_chans=1)
    with pytest.raises(IncompatibleError, match="no stage at stride 1"):
        build_encoder("cnn-convnext-micro", spec)


def test_text_is_refused():
    with pytest.raises(IncompatibleError, match="does not take text"):
        build_encoder("cnn-resnet-micro", DataSpec("text", (16,), vocab_size=10))


def test_gradient_reaches_the_pixels_of_the_block_only():
    encoder = build_encoder("cnn-resnet-micro", SPEC)
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    visible = _block(2, seed=1)
    encoder.forward_visible(x, visible).square().sum().backward()
    outside = x.grad.clone()
    for i, (r, c) in enumerate((visible.origin * 4).tolist()):
        assert x.grad[i, :, r : r + 16, c : c + 16].abs().sum() > 0
        outside[i, :, r : r + 16, c : c + 16] = 0
    assert not outside.any()


def test_resnet18_cut_at_stride_4_is_stem_and_layer1():
    """What the name hides: at 4-px patches the trunk is conv1 + bn1 + layer1 (two basic blocks
    of two 3x3 convs at 64 channels), 151,232 parameters, not ResNet-18's 11.7M."""
    trunk = build_encoder("cnn-resnet18", SPEC).trunk
    stem = 7 * 7 * 1 * 64 + 2 * 64
    layer1 = 2 * 2 * (3 * 3 * 64 * 64 + 2 * 64)
    assert sum(p.numel() for p in trunk.parameters()) == stem + layer1 == 151_232
    assert all(len(getattr(trunk, f"layer{i}")) == 0 for i in (2, 3, 4))  # pruned, empty


@pytest.mark.parametrize("patch, channels", [(4, 24), (16, 112)])
def test_mobilenetv3_cut_keeps_no_later_stage(patch, channels):
    """Cut at stride = patch size, the trunk ends at that stage's width and every parameter it
    keeps gets a gradient: no unused later stage (timm's features_only keeps them all)."""
    spec = DataSpec("image", (2, 2), patch_size=patch, in_chans=3)
    encoder = build_encoder("cnn-mobilenetv3", spec)
    assert encoder.proj.in_features == channels
    encoder.forward_tokens(torch.randn(2, 3, 2 * patch, 2 * patch)).square().sum().backward()
    assert all(p.grad is not None for p in encoder.trunk.parameters())
