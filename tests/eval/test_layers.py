"""probe_layers=all: one pooled feature set per layer (embedding + each block), the probe per
layer, and the best layer chosen on a validation split of the training data only."""

from __future__ import annotations

import torch

from bench.eval.layers import best_layer, has_layers, layer_features, layer_metrics
from bench.eval.probes import ProbeRecipe
from bench.models.cnn import CNNEncoder, TimmTrunk
from bench.models.parts import mean_pool
from bench.models.vit import TransformerEncoder
from tests.helpers import tiny_config

CPU = torch.device("cpu")


def test_one_feature_set_per_layer_and_the_last_is_the_encoder_before_its_norm(digits):
    torch.manual_seed(0)
    encoder = TransformerEncoder(digits.spec, 32, 3, 2).eval()
    split = digits.eval_split("test", 8)
    per_layer = layer_features(encoder, digits, split, 4, CPU, "t")
    assert len(per_layer) == 4 and all(f.shape == (8, 32) for f in per_layer)
    x = digits.eval_batch(split.x)
    with torch.no_grad():
        tokens = encoder.tokens(x)
        torch.testing.assert_close(per_layer[0], mean_pool(tokens))
        torch.testing.assert_close(per_layer[-1], mean_pool(encoder.blocks(tokens)))
    assert not has_layers(None)
    trunk = TimmTrunk("resnet18", (("stem_width", 16), ("channels", (16, 32, 64, 128))))
    assert not has_layers(CNNEncoder(digits.spec, trunk, 32)) and has_layers(encoder)


def test_best_layer_is_chosen_on_validation_never_on_test():
    """Layer 1 separates the classes on the training split, layer 0 is noise: layer 1 is
    chosen whatever the test data say (best_layer is never given them)."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(100) % 2
    noise = torch.randn(100, 4, generator=gen)
    signal = torch.nn.functional.one_hot(y, 2).float() * 5 + 0.1 * torch.randn(100, 2,
                                                                              generator=gen)
    assert best_layer([noise, signal], y, 0, ProbeRecipe(steps=30)) == 1
    assert best_layer([signal, signal], y, 0, ProbeRecipe(steps=30)) == 0  # ties: shallower


def test_layer_metrics_name_every_layer_and_the_validated_best(digits):
    torch.manual_seed(0)
    encoder = TransformerEncoder(digits.spec, 32, 2, 2)
    cfg = tiny_config(probe_steps=20)
    train, test = digits.eval_split("train", 80), digits.eval_split("test", 40)
    out = layer_metrics(cfg, digits, encoder, train, test, CPU)
    assert set(out) == {"linear_layer0_top1", "linear_layer1_top1", "linear_layer2_top1",
                        "linear_layer_best", "linear_layer_best_top1"}
    best = int(out["linear_layer_best"])
    assert out["linear_layer_best_top1"] == out[f"linear_layer{best}_top1"]
