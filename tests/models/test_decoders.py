"""The shared decoders: decoder=conv is local (FINOLA's three 3x3 convolutions, 1-D on text),
every method pretrains through it, and it is part of the run id only off its default and of
the fairness record (parameters and FLOPs)."""

from __future__ import annotations

import pytest
import torch

from bench.core.config import RunConfig
from bench.core.errors import ConfigError
from bench.core.spec import DataSpec
from bench.models.decoders import ConvDecoder, Decoder, build_decoder
from bench.models.encoders import build_encoder
from bench.models.pretrainer import MaskedPretrainer
from bench.run.records import setup_record
from methods.base import build_method

IMAGE = DataSpec("image", (8, 8), patch_size=4, in_chans=1)
TEXT = DataSpec("text", (16,), vocab_size=50)


def test_conv_decoder_sees_three_positions_around_each_position():
    """Three kernel-3 layers: a position's prediction changes with the filled features up to 3
    positions away (Chebyshev) and never with farther ones. The transformer's sees them all."""
    torch.manual_seed(0)
    decoder = build_decoder("conv", IMAGE, 16, 2, 2)
    assert isinstance(decoder, ConvDecoder)
    filled = torch.randn(1, 64, 16)
    base = decoder(filled)[0, 0]  # the prediction at (0, 0)
    for r, c, seen in ((3, 3, True), (0, 3, True), (4, 0, False), (7, 7, False)):
        moved = filled.clone()
        moved[0, r * 8 + c] += 5
        assert (not torch.equal(decoder(moved)[0, 0], base)) == seen, (r, c)
    attention = build_decoder("transformer", IMAGE, 16, 1, 2)
    assert isinstance(attention, Decoder)
    far = filled.clone()
    far[0, 63] += 5
    assert not torch.equal(attention(far)[0, 0], attention(filled)[0, 0])


def test_text_conv_decoder_is_one_dimensional():
    decoder = build_decoder("conv", TEXT, 8, 2, 2)
    assert all(isinstance(m, torch.nn.Conv1d) for m in decoder.convs if hasattr(m, "weight"))
    filled = torch.randn(2, 16, 8)
    out = decoder(filled)
    assert out.shape == (2, 16, 50)
    moved = filled.clone()
    moved[:, 4] += 5
    changed = (decoder(moved) != out).any(-1)[0]
    assert changed.nonzero().flatten().tolist() == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("method, options, encoder", [
    ("mae", {}, "vit-micro"), ("interp", {}, "vit-micro"), ("qbheat", {}, "vit-micro"),
    ("mae", {}, "cnn-resnet-micro"), ("qbheat", {"at": "decoder"}, "cnn-resnet-micro"),
])
def test_every_method_pretrains_through_the_conv_decoder(method, options, encoder):
    torch.manual_seed(0)
    enc = build_encoder(encoder, IMAGE)
    fill = build_method(method, options, 16, "image", enc.kinds, encoder_dim=enc.dim)
    model = MaskedPretrainer(IMAGE, enc, fill, 16, 2, 2, decoder="conv")
    out = model(torch.randn(4, 1, 32, 32), torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_decoder_is_in_the_run_id_off_its_default_only():
    base = RunConfig()
    assert "decoder" not in base.identity()
    assert RunConfig(decoder="transformer").run_id == base.run_id
    assert RunConfig(decoder="conv").run_id != base.run_id
    with pytest.raises(ConfigError, match="decoder=conv is FINOLA's three 3x3"):
        RunConfig(decoder="conv", decoder_depth=4)
    with pytest.raises(ConfigError, match="must be one of transformer, conv"):
        RunConfig(decoder="mlp")


def test_the_fairness_record_has_the_decoders_parameters_and_flops():
    """Conv: 3 x (9 d^2 + d) parameters before the norm and head; its FLOPs are per sample on
    the full grid, and differ from the transformer's."""
    records = {}
    for kind in ("transformer", "conv"):
        torch.manual_seed(0)
        enc = build_encoder("vit-micro", IMAGE)
        fill = build_method("mae", {}, 32, "image", enc.kinds)
        model = MaskedPretrainer(IMAGE, enc, fill, 32, 2, 4, decoder=kind)
        records[kind] = setup_record(RunConfig(decoder=kind), IMAGE, enc, model)
    conv, attention = records["conv"], records["transformer"]
    d = 32
    head = d * 16 + 16
    assert conv["decoder_params"] == (128 * d + d) + 3 * (9 * d * d + d) + 2 * d + head
    # Three 3x3 convolutions over 64 positions, the projection and the head (2 per multiply-add).
    assert conv["decoder_flops"] == 2 * 64 * (128 * d + 3 * 9 * d * d + d * 16)
    assert attention["decoder_flops"] > 0 and attention["decoder_flops"] != conv["decoder_flops"]
