"""The method contract, checked for every registered method and each modality it supports."""

import pytest
import torch

import methods
from bench.config import RunConfig
from bench.models.encoders import TransformerEncoder
from bench.models.pretrainer import MaskedPretrainer
from bench.spec import DataSpec
from methods.base import build_method
from tests.conftest import assert_compiles_as_one_graph

SPECS = {
    "image": DataSpec("image", (8, 8), patch_size=4, in_chans=1),
    "text": DataSpec("text", (32,), vocab_size=50),
}
CASES = [
    (name, modality)
    for name in methods.METHODS.names()
    for modality in sorted(methods.METHODS.get(name).modalities)
]
D = 16


def make(name, modality, seed=0):
    torch.manual_seed(seed)
    return build_method(name, {}, D, modality, "token")


def inputs(modality, batch=3):
    if modality == "image":
        return torch.randn(batch, 1, 32, 32)
    return torch.randint(4, 50, (batch, 32))


@pytest.mark.parametrize("name,modality", CASES)
def test_fill_shapes_and_visible_pass_through(name, modality):
    method = make(name, modality)
    grid = SPECS[modality].grid
    visible = method.choose_visible(3, grid, torch.Generator().manual_seed(0))
    n = SPECS[modality].num_tokens
    assert visible.index.shape[0] == 3 and visible.index.max() < n
    assert (visible.index.diff(dim=1) > 0).all()
    latent = torch.randn(3, visible.count, D)
    filled = method.fill(latent, visible, grid)
    assert filled.shape == (3, n, D)
    picked = filled.gather(1, visible.index.unsqueeze(-1).expand(-1, -1, D))
    assert torch.equal(picked, latent)
    assert torch.isfinite(filled).all()


@pytest.mark.parametrize("name,modality", CASES)
def test_same_seed_same_mask(name, modality):
    method = make(name, modality)
    grid = SPECS[modality].grid
    a = method.choose_visible(4, grid, torch.Generator().manual_seed(7))
    b = method.choose_visible(4, grid, torch.Generator().manual_seed(7))
    c = method.choose_visible(4, grid, torch.Generator().manual_seed(8))
    assert torch.equal(a.index, b.index)
    assert not torch.equal(a.index, c.index)


@pytest.mark.parametrize("name,modality", CASES)
def test_gradients_reach_encoder_and_decoder(name, modality):
    spec = SPECS[modality]
    torch.manual_seed(0)
    encoder = TransformerEncoder(spec, 32, 1, 2)
    model = MaskedPretrainer(spec, encoder, make(name, modality), D, 1, 2)
    out = model(inputs(modality), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for part in (model.encoder.blocks[0].attn.qkv, model.decoder.blocks[0].mlp.fc1, model.decoder.head):
        assert part.weight.grad is not None and part.weight.grad.abs().sum() > 0


def test_every_method_registered():
    assert {"mae", "qbheat", "interp"} <= set(methods.METHODS.names())
    cfg = RunConfig()
    assert cfg.method in methods.METHODS


@pytest.mark.parametrize("name,modality", CASES)
def test_pretraining_step_compiles_as_one_graph(name, modality):
    """On CUDA the step is torch.compile'd by default: every method's forward traces as one
    graph, without recompiling on new masks, matching eager (see assert_compiles_as_one_graph)."""
    spec = SPECS[modality]
    torch.manual_seed(0)
    model = MaskedPretrainer(spec, TransformerEncoder(spec, 32, 1, 2), make(name, modality), D, 1, 2)
    assert_compiles_as_one_graph(model, inputs(modality, batch=4))
