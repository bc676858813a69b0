import math

import torch

from bench.core.config import RunConfig
from bench.core.spec import DataSpec
from bench.models.build import build_model
from bench.ops.masking import random_visible
from bench.ops.patches import normalized_patches, patchify, unpatchify
from bench.ops.posembed import sincos_1d, sincos_2d

SPEC = DataSpec("image", (8, 8), patch_size=4, in_chans=1)


def test_patchify_round_trip_and_layout():
    x = torch.randn(2, 3, 32, 16)
    t = patchify(x, 4)
    assert t.shape == (2, 8 * 4, 4 * 4 * 3)
    assert torch.equal(unpatchify(t, 4, (8, 4), 3), x)
    # token 5 is row 1, column 1 of the 8x4 grid; its first value is pixel (4, 4) channel 0
    assert t[0, 5, 0] == x[0, 0, 4, 4]


def test_sincos_tables_exact():
    t = sincos_1d(torch.arange(3), 4)
    # frequencies 1 and 1/100 for dim 4
    expected = torch.tensor([[math.sin(p), math.sin(p / 100), math.cos(p), math.cos(p / 100)] for p in range(3)])
    assert torch.allclose(t, expected, atol=1e-6)
    t2 = sincos_2d(2, 3, 8)
    assert t2.shape == (6, 8)
    assert torch.allclose(t2[4, :4], sincos_1d(torch.tensor([1]), 4)[0])  # row 1
    assert torch.allclose(t2[4, 4:], sincos_1d(torch.tensor([1]), 4)[0])  # column 1


def test_normalized_patches_have_zero_mean_unit_var():
    t = normalized_patches(torch.rand(2, 1, 32, 32), 4)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 64), atol=1e-5)
    assert torch.allclose(t.var(-1), torch.ones(2, 64), atol=1e-3)


def _model():
    return build_model(RunConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2), SPEC)


def test_loss_only_on_hidden_positions():
    model = _model()
    x = torch.randn(2, 1, 32, 32)
    visible = random_visible(2, 64, 16, torch.Generator().manual_seed(0))
    pred = torch.randn(2, 64, 16)
    altered = pred.clone()
    mask = visible.mask(64)
    altered[mask] += 100.0  # change predictions at visible positions only
    assert torch.equal(model.loss(x, pred, visible), model.loss(x, altered, visible))
    target = normalized_patches(x, 4)
    expected = (pred - target).pow(2).mean(-1)[~mask].mean()
    assert torch.allclose(model.loss(x, pred, visible), expected)


def test_encoder_sees_only_visible_tokens():
    model = _model().eval()
    x = torch.randn(1, 1, 32, 32)
    visible = random_visible(1, 64, 16, torch.Generator().manual_seed(1))
    hidden = (~visible.mask(64))[0].nonzero()[0].item()
    y = x.clone()
    r, c = divmod(hidden, 8)
    y[..., r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] += 5.0  # change one hidden patch
    with torch.no_grad():
        assert torch.equal(model.encoder.forward_visible(x, visible), model.encoder.forward_visible(y, visible))


def test_every_attention_is_fused_sdpa():
    """Encoder and decoder attention go through F.scaled_dot_product_attention (flash /
    memory-efficient kernels on CUDA), for every method."""
    for method in ("mae", "qbheat", "interp"):
        model = build_model(RunConfig(method=method, encoder="vit-tiny"), SPEC)
        flags = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
        assert len(flags) == 12 + 2 and all(flags), (method, flags)


def test_presets_take_overrides_and_refuse_unknown_settings():
    """A named preset is a factory: settings replaced per call, the preset itself unchanged."""
    import pytest

    from bench.core.errors import ConfigError
    from bench.models.encoders import build_encoder
    from bench.models.presets import ENCODERS

    plain = build_encoder("vit-micro", SPEC)
    deeper = build_encoder("vit-micro", SPEC, depth=2, dim=64)
    assert (len(plain.blocks), plain.dim) == (4, 128)
    assert (len(deeper.blocks), deeper.dim) == (2, 64)
    assert dict(ENCODERS.get("vit-micro").settings) == {"dim": 128, "depth": 4, "heads": 4}
    narrow = build_encoder("cnn-resnet-micro", SPEC, dim=32)
    assert narrow.dim == 32 and narrow.proj.out_features == 32
    with pytest.raises(ConfigError, match="no setting widht; its settings: depth, dim, heads"):
        build_encoder("vit-micro", SPEC, widht=3)


def test_heads_own_target_and_loss_under_the_old_parameter_names():
    """The pixel and token heads: their target and per-position loss by hand, and the
    checkpoint names the plain Linear head had (decoder.head.weight / .bias)."""
    import torch.nn.functional as F

    from bench.models.heads import PixelHead, TokenHead

    pixels = PixelHead(SPEC, 8)
    x = torch.randn(2, 1, 32, 32)
    pred = torch.randn(2, 64, 16)
    assert torch.equal(pixels.construct_target(x), normalized_patches(x, 4))
    torch.testing.assert_close(pixels.position_loss(x, pred),
                               ((pred - normalized_patches(x, 4)) ** 2).mean(-1))
    assert pixels.real(x) is None and set(pixels.state_dict()) == {"weight", "bias"}
    text = DataSpec("text", (5,), vocab_size=7, pad_id=0)
    tokens = TokenHead(text, 8)
    ids = torch.tensor([[3, 4, 0, 6, 0]])
    logits = torch.randn(1, 5, 7)
    want = -F.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(tokens.position_loss(ids, logits), want)
    assert tokens.real(ids).tolist() == [[True, True, False, True, False]]
    model = build_model(RunConfig(decoder_dim=32, decoder_depth=1, decoder_heads=2), SPEC)
    assert {"decoder.head.weight", "decoder.head.bias"} <= set(model.state_dict())
